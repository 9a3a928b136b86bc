"""The Cassandra audit store: a layout check, then the write and the read path over one session.

:class:`CassandraStore` reads the keyspace's layout (``schema_info``) when it starts, refuses
a keyspace it cannot use with a one-line :class:`~sqla_audit.errors.ConfigurationError`, takes
the views and buckets the keyspace records, and prepares the statements of
:mod:`~consumer.sinks.cassandra.writes` and :mod:`~consumer.sinks.cassandra.reads`.
:func:`wait_for_cassandra` connects with capped exponential backoff (a worker may start
before Cassandra does).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, cast

from consumer.config import (
    ActorBucket,
    CassandraConfig,
    CassandraSchemaConfig,
    TimeBucket,
    TimelineBucket,
)
from consumer.sinks.cassandra.connection import connect, store_error
from consumer.sinks.cassandra.layout import KeyspaceLayout, layout_problem, read_layout
from consumer.sinks.cassandra.reads import CassandraReads
from consumer.sinks.cassandra.schema import CassandraSchema
from consumer.sinks.cassandra.window import Window
from consumer.sinks.cassandra.writes import CassandraWrites
from consumer.sinks.views import check_views, format_views
from sqla_audit.errors import ConfigurationError, StoreError


class CassandraStore(CassandraWrites, CassandraReads):
    """An :class:`~consumer.sinks.base.AuditStore` over an existing keyspace.

    The write path is :class:`~consumer.sinks.cassandra.writes.CassandraWrites`, the read
    path :class:`~consumer.sinks.cassandra.reads.CassandraReads`; this class checks the
    keyspace's layout and prepares both. Build it with :meth:`connect` (owns the cluster) or
    from a session you manage. At start the store reads the keyspace's layout
    (``schema_info``): a keyspace without audit tables, of layout 1 or of a newer layout stops
    it with a :class:`ConfigurationError` naming what to run. The views, the time bucket,
    the timeline settings and the by-actor bucketing come from ``schema_info``;
    ``schema.views``, when set (the consumer's ``--views``), must match the recorded views.
    ``layout`` skips reading it (tests, and ``schema migrate`` writing into the tables it
    just created).
    """

    def __init__(
        self,
        session: Any,
        schema: CassandraSchemaConfig,
        *,
        max_in_flight: int = 64,
        request_timeout: float = 10.0,
        cluster: Any = None,
        layout: KeyspaceLayout | None = None,
    ) -> None:
        self._session = session
        self._cluster = cluster
        self._timeout = request_timeout
        self._slots = Window(max_in_flight)
        self._closed = False
        protocol = getattr(getattr(session, "cluster", None), "protocol_version", None)
        if isinstance(protocol, int) and protocol < 4:
            raise ConfigurationError(
                f"the Cassandra store needs native protocol 4 or later (got {protocol}): "
                "absent values are left unset, which protocol 3 cannot express"
            )
        if layout is None:
            layout = read_layout(session, schema.keyspace, request_timeout)
        problem = layout_problem(layout, schema.keyspace)
        if problem is not None:
            raise ConfigurationError(problem)
        if schema.views is not None and check_views(schema.views) != layout.views:
            raise ConfigurationError(
                f"--views {format_views(schema.views)} differs from the views keyspace "
                f"{schema.keyspace!r} keeps ({format_views(layout.views)}): run "
                f"`sqla-audit schema apply --views {format_views(schema.views)}` first, "
                "or leave --views out"
            )
        effective = replace(
            schema,
            views=layout.views,
            time_bucket=cast("TimeBucket", layout.time_bucket),
            timeline_bucket=cast("TimelineBucket", layout.timeline_bucket),
            timeline_shards=layout.timeline_shards,
            actor_bucket=cast("ActorBucket", layout.actor_bucket),
            actor_shards=layout.actor_shards,
        )
        self._schema = CassandraSchema(effective)
        self.views = self._schema.views
        self._bucket = effective.time_bucket
        self._timeline_bucket = effective.timeline_bucket
        self._shards = effective.timeline_shards
        from cassandra.query import UNSET_VALUE  # noqa: PLC0415 - heavy, optional dependency

        self._unset = UNSET_VALUE
        self._prepare()

    @classmethod
    def connect(cls, config: CassandraConfig) -> CassandraStore:
        cluster = connect(config)
        try:
            return cls(
                cluster.connect(),
                config.schema,
                max_in_flight=config.max_in_flight,
                request_timeout=config.request_timeout,
                cluster=cluster,
            )
        except BaseException:
            cluster.shutdown()
            raise

    def _prepare(self) -> None:
        """Prepare every statement of both paths; a missing or different table is a
        :class:`ConfigurationError` naming ``schema apply``."""
        from cassandra import InvalidRequest  # noqa: PLC0415

        try:
            prepare = self._session.prepare
            self._prepare_writes(prepare)
            self._prepare_reads(prepare)
        except InvalidRequest as exc:
            raise ConfigurationError(
                f"the audit tables in keyspace {self._schema.config.keyspace!r} are missing "
                f"or differ from this configuration (run `sqla-audit schema apply`): {exc}"
            ) from exc
        except Exception as exc:
            raise store_error("preparing statements failed", exc) from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._cluster is not None:
            self._cluster.shutdown()


def wait_for_cassandra(
    config: CassandraConfig,
    *,
    stop: threading.Event,
    max_backoff: float = 30.0,
    on_retry: Any = None,
) -> CassandraStore | None:
    """Connect, retrying with capped exponential backoff until it works or ``stop`` is set.

    Configuration problems (missing tables) are raised at once; an unreachable cluster is
    retried, so a worker may start before Cassandra does.
    """
    delay = 0.5
    while not stop.is_set():
        try:
            return CassandraStore.connect(config)
        except StoreError as exc:
            if on_retry is not None:
                on_retry(exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, max_backoff)
    return None


__all__ = ["CassandraStore", "wait_for_cassandra"]
