"""The Cassandra audit store: the production :class:`~consumer.sinks.base.AuditStore`.

Layout (``schema cql`` prints it; ``schema apply`` creates it, idempotently):

``changes_by_record``
    the primary table, partitioned by ``(table_name, record_id)`` and clustered newest
    first by ``(event_time DESC, event_id DESC)``: a record's history, and its state as of
    any time, is one partition read.
``changes_by_actor``
    partitioned by ``(actor_id, day)``: "what did this actor change on this day" is one
    partition read; a window of days is one read per day.
``changes_by_transaction``
    partitioned by ``transaction_id``, clustered by ``sequence``: "what did this commit
    change" in the order it happened.
``record_buckets`` (only with a time bucket)
    which buckets a record's history spans, so history can walk them newest first.

Every table holds the whole record (denormalized): each question is answered from one
table without a second lookup, at the cost of writing each record three times. A departure
record (the row's key changed; see :mod:`consumer.records`) goes to ``changes_by_record``
only: by actor and by transaction, a move is the one real event under the new id.

``event_id`` is a version 7 UUID stored as ``uuid`` (``timeuuid`` only accepts version 1).
Cassandra orders ``uuid`` values by version, then bytes, which for version 7 is creation
order. ``event_time`` is a ``timestamp`` (milliseconds); the exact microseconds are kept in
``event_time_us`` and ``occurred_at_us``.

Time bucket. A record that changes constantly (a counter row, a hot configuration row)
grows one partition without bound; past a few hundred MB a partition slows compaction and
reads. With ``time_bucket`` set to ``year``/``month``/``day``, the bucket (``2026``,
``202601``, ``20260131``) joins the partition key: partitions stay bounded, but a history
read touches one partition per bucket (found through ``record_buckets``), and a plain
``WHERE table_name=? AND record_id=?`` no longer works in ad-hoc CQL. Choose it only for
tables whose rows change thousands of times a day; it cannot be changed on an existing
keyspace.

``event_digests``
    one row per stored ``event_id`` with the SHA-256 of its content
    (:func:`~consumer.sinks.base.content_digest`): what tells a redelivery from a conflict.

Writes use prepared, idempotent ``INSERT`` statements, sent asynchronously with at most
``max_in_flight`` requests outstanding across all threads. A write first reads the digests
of its event ids (one single-partition read each, concurrently); a record whose digest is
stored and equal is a redelivery and is skipped, one whose digest differs is a conflict
(:class:`~consumer.sinks.base.RecordConflict`, the stored record kept); the others are
written, and their digests only after all their rows are, so a stored digest means a
complete record and an interrupted write is simply written again. Two *concurrent*
deliveries of one event id with different content can both pass the read (a window of one
round trip); docs/cql.md describes it.

Absent values (``before`` of an insert, ``after`` of a delete, ``previous_record_id``,
``request_id``, the actor) are bound as ``UNSET_VALUE``, never ``None``: a ``None`` bound in
an ``INSERT`` writes a tombstone. This needs native protocol 4 or later.

Errors: a value the driver cannot bind (an ``int`` out of range, text that is not valid
Unicode) and Cassandra's ``InvalidRequest`` concern one record and raise
:class:`~consumer.sinks.base.RecordRejected`; everything else (no host, timeouts,
unavailable, overloaded) is a retryable :class:`~sqla_audit.errors.StoreError`.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import threading
import uuid
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Final, cast

from consumer.config import CassandraConfig, CassandraSchemaConfig, TimeBucket, TimelineBucket
from consumer.records import AuditRecord, record_from_row, record_to_row, to_micros
from consumer.sinks.base import (
    InvalidQuery,
    OrderedWindow,
    Page,
    RecordConflict,
    RecordRejected,
    ViewDisabled,
    Window,
    check_views,
    commit_key,
    conflict,
    content_digest,
    format_views,
    paginate,
    paginate_ordered,
    parse_views,
)
from sqla_audit.errors import ConfigurationError, StoreError
from sqla_audit.wire_limits import MAX_IDENTIFIER_CHARS

log = logging.getLogger(__name__)

_MIN_UUID: Final = uuid.UUID(int=0)
_MAX_UUID: Final = uuid.UUID(int=(1 << 128) - 1)
#: Lower bound used when a read has no ``since`` (Cassandra timestamps are signed ms).
_MIN_MS: Final = -(2**62)
_MAX_MS: Final = 2**62
_MIN_BIGINT: Final = -(2**63)
_MAX_BIGINT: Final = 2**63 - 1
_MIN_INT: Final = -(2**31)
_MAX_INT: Final = 2**31 - 1

_RECORD_COLUMNS: Final = (
    ("table_name", "text"),
    ("record_id", "text"),
    ("event_time", "timestamp"),
    ("event_id", "uuid"),
    ("event_time_us", "bigint"),
    ("occurred_at", "timestamp"),
    ("occurred_at_us", "bigint"),
    ("operation", "text"),
    ("service", "text"),
    ("transaction_id", "uuid"),
    ("sequence", "int"),
    ("actor_id", "text"),
    ("actor_attributes", "text"),
    ("request_id", "text"),
    ("previous_record_id", "text"),
    ("masked_columns", "text"),
    ("changes", "text"),
    ("before", "text"),
    ("after", "text"),
    ("metadata", "text"),
)
_NAMES: Final = tuple(name for name, _ in _RECORD_COLUMNS)


def bucket_of(event_time: dt.datetime, granularity: str) -> int:
    """The time bucket (``2026``, ``202601`` or ``20260131``) of an event time, in UTC."""
    day = event_time.astimezone(dt.UTC)
    if granularity == "year":
        return day.year
    if granularity == "month":
        return day.year * 100 + day.month
    if granularity == "day":
        return day.year * 10_000 + day.month * 100 + day.day
    raise ValueError(f"no time bucket {granularity!r}")


#: The layout this version writes and reads (recorded in ``schema_info``).
LAYOUT_VERSION: Final = 2

#: The row of ``schema_info`` that describes the keyspace.
SCHEMA_INFO_NAME: Final = "audit"

#: Milliseconds per timeline bucket.
TIMELINE_BUCKET_MS: Final = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}

#: Most timeline buckets one read may walk (about 11 years of hours).
MAX_TIMELINE_BUCKETS: Final = 100_000

#: Clustering of the ordered views: commit order. ``event_time`` first so cqlsh users can
#: slice by time; it is ``event_time_us // 1000``, so the order is that of the microseconds.
_COMMIT_ORDER: Final = ("event_time", "event_time_us", "sequence", "event_id")


def timeline_bucket_ms(event_time_ms: int, granularity: str) -> int:
    """Start (ms since the epoch, UTC) of the timeline bucket holding ``event_time_ms``."""
    size = TIMELINE_BUCKET_MS[granularity]
    return event_time_ms // size * size


def timeline_shard(record_id: str, shards: int) -> int:
    """The timeline shard of a record id: a stable hash (CRC-32 of its UTF-8) mod ``shards``."""
    if shards <= 1:
        return 0
    return zlib.crc32(record_id.encode("utf-8", "surrogatepass")) % shards


class CassandraSchema:
    """The CQL that creates the store (layout 2) for one :class:`CassandraSchemaConfig`."""

    def __init__(self, config: CassandraSchemaConfig) -> None:
        self.config = config
        self.views = check_views(config.views)

    @property
    def bucketed(self) -> bool:
        return self.config.time_bucket != "none"

    def _replication(self) -> str:
        cfg = self.config
        if cfg.replication_class == "NetworkTopologyStrategy":
            pairs = ", ".join(f"'{dc}': {count}" for dc, count in sorted(cfg.datacenters.items()))
            return f"{{'class': 'NetworkTopologyStrategy', {pairs}}}"
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {cfg.replication_factor}}}"

    def _table(self, name: str, extra: Iterable[tuple[str, str]], key: str, order: str) -> str:
        columns = [*extra, *_RECORD_COLUMNS]
        seen: set[str] = set()
        lines = []
        for column, cql_type in columns:
            if column not in seen:
                seen.add(column)
                lines.append(f"    {column} {cql_type},")
        options = [f"CLUSTERING ORDER BY ({order})"]
        if self.config.ttl_seconds:
            options.append(f"default_time_to_live = {self.config.ttl_seconds}")
        return (
            f"CREATE TABLE IF NOT EXISTS {self.config.keyspace}.{name} (\n"
            + "\n".join(lines)
            + f"\n    PRIMARY KEY ({key})\n) WITH "
            + "\n  AND ".join(options)
        )

    def _ordered_view(self, name: str, extra: list[tuple[str, str]], partition: str) -> str:
        return self._table(
            name,
            extra,
            f"({partition}), {', '.join(_COMMIT_ORDER)}",
            ", ".join(f"{column} ASC" for column in _COMMIT_ORDER),
        )

    def _small_table(self, name: str, columns: str, key: str, order: str | None = None) -> str:
        options = [f"CLUSTERING ORDER BY ({order})"] if order else []
        if self.config.ttl_seconds:
            options.append(f"default_time_to_live = {self.config.ttl_seconds}")
        tail = (" WITH " + "\n  AND ".join(options)) if options else ""
        return (
            f"CREATE TABLE IF NOT EXISTS {self.config.keyspace}.{name} (\n"
            f"{columns}\n    PRIMARY KEY ({key})\n){tail}"
        )

    def tables(self) -> list[str]:
        """``CREATE ... IF NOT EXISTS`` statements of the keyspace and its tables."""
        ks = self.config.keyspace
        record_key = (
            "(service, table_name, record_id, bucket)"
            if self.bucketed
            else "(service, table_name, record_id)"
        )
        record_extra = [("bucket", "int")] if self.bucketed else []
        newest = "event_time DESC, event_id DESC"
        out = [
            f"CREATE KEYSPACE IF NOT EXISTS {ks}\n"
            f"  WITH replication = {self._replication()}\n  AND durable_writes = true",
            f"CREATE TABLE IF NOT EXISTS {ks}.schema_info (\n"
            "    name text PRIMARY KEY,\n    layout int,\n    views text,\n"
            "    time_bucket text,\n    timeline_bucket text,\n    timeline_shards int\n)",
            self._table(
                "changes_by_service_record",
                record_extra,
                f"{record_key}, event_time, event_id",
                newest,
            ),
            self._small_table(
                "record_services",
                "    table_name text,\n    record_id text,\n    service text,",
                "(table_name, record_id), service",
            ),
        ]
        digest_ttl = (
            f" WITH default_time_to_live = {self.config.ttl_seconds}"
            if self.config.ttl_seconds
            else ""
        )
        out.append(
            f"CREATE TABLE IF NOT EXISTS {ks}.event_digests (\n"
            f"    event_id uuid PRIMARY KEY,\n    digest blob\n){digest_ttl}"
        )
        if self.bucketed:
            out.append(
                self._small_table(
                    "service_record_buckets",
                    "    service text,\n    table_name text,\n    record_id text,\n    bucket int,",
                    "(service, table_name, record_id), bucket",
                    "bucket DESC",
                )
            )
        if "actor" in self.views:
            out.append(
                self._table(
                    "changes_by_actor",
                    [("actor_id", "text"), ("day", "date")],
                    "(actor_id, day), event_time, event_id",
                    newest,
                )
            )
        if "transaction" in self.views:
            out.append(
                self._table(
                    "changes_by_transaction",
                    [("transaction_id", "uuid")],
                    "(transaction_id), sequence, event_id",
                    "sequence ASC, event_id ASC",
                )
            )
        if "request" in self.views:
            out.append(self._ordered_view("changes_by_request", [], "request_id"))
        if "trace" in self.views:
            out.append(self._ordered_view("changes_by_trace", [("trace_id", "text")], "trace_id"))
        if "table" in self.views:
            out.append(
                self._ordered_view(
                    "changes_by_table",
                    [("bucket", "timestamp"), ("shard", "int")],
                    "service, table_name, bucket, shard",
                )
            )
        return out

    def info_statement(self) -> str:
        """The ``INSERT`` that records the layout, views and buckets in ``schema_info``."""
        cfg = self.config
        return (
            f"INSERT INTO {cfg.keyspace}.schema_info "
            "(name, layout, views, time_bucket, timeline_bucket, timeline_shards)\n"
            f"  VALUES ('{SCHEMA_INFO_NAME}', {LAYOUT_VERSION}, '{format_views(self.views)}', "
            f"'{cfg.time_bucket}', '{cfg.timeline_bucket}', {cfg.timeline_shards})"
        )

    def statements(self) -> list[str]:
        """Every statement, in the order to run them: the tables, then ``schema_info``."""
        return [*self.tables(), self.info_statement()]

    def cql(self) -> str:
        """The whole schema as a CQL script."""
        return "".join(f"{statement};\n\n" for statement in self.statements()).rstrip() + "\n"


# --------------------------------------------------------------------------- connecting


#: Longest pause between the driver's attempts to reconnect to a node it lost. A worker
#: holding batches through an outage writes as soon as the driver has a connection again,
#: so this bounds how long after the node returns the worker resumes (the driver's default
#: is 600 s). A reconnection attempt is one TCP connect: cheap even every 2 s.
RECONNECT_MAX_DELAY: Final = 2.0


def connect(config: CassandraConfig) -> Any:
    """A connected driver ``Cluster`` (call ``.shutdown()``), configured from ``config``.

    Explicit protocol version and ``DCAwareRoundRobinPolicy(local_dc)`` (token aware) keep
    the driver from guessing (and warning); reconnection is quick (0.5 s doubling to
    :data:`RECONNECT_MAX_DELAY`) so a worker resumes soon after Cassandra comes back.
    """
    from cassandra import ConsistencyLevel  # noqa: PLC0415 - heavy, optional dependency
    from cassandra.auth import PlainTextAuthProvider  # noqa: PLC0415
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # noqa: PLC0415
    from cassandra.policies import (  # noqa: PLC0415
        DCAwareRoundRobinPolicy,
        ExponentialReconnectionPolicy,
        TokenAwarePolicy,
    )
    from cassandra.query import dict_factory  # noqa: PLC0415

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[config.consistency],
        request_timeout=config.request_timeout,
        row_factory=dict_factory,
    )
    auth = (
        PlainTextAuthProvider(username=config.username, password=config.password)
        if config.username is not None
        else None
    )
    cluster = Cluster(
        contact_points=list(config.hosts),
        port=config.port,
        protocol_version=config.protocol_version,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        connect_timeout=config.connect_timeout,
        reconnection_policy=ExponentialReconnectionPolicy(
            base_delay=0.5, max_delay=RECONNECT_MAX_DELAY
        ),
        idle_heartbeat_interval=5,
    )
    try:
        cluster.connect()
    except Exception as exc:
        cluster.shutdown()
        raise _store_error("cannot connect to Cassandra", exc) from exc
    return cluster


@dataclass(frozen=True, slots=True)
class KeyspaceLayout:
    """What a keyspace holds: its layout version (0: no audit tables) and, from layout 2
    on, the settings ``schema_info`` records."""

    version: int
    views: frozenset[str] = frozenset()
    time_bucket: str = "none"
    timeline_bucket: str = "hour"
    timeline_shards: int = 1


def read_layout(session: Any, keyspace: str, timeout: float = 30.0) -> KeyspaceLayout:
    """The layout of ``keyspace``: ``schema_info`` if it has a row, else 1 if the layout-1
    history table ``changes_by_record`` exists, else 0."""
    try:
        rows = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (keyspace,),
            timeout=timeout,
        )
        tables = {_column(row, "table_name") for row in rows}
        if "schema_info" in tables:
            row = session.execute(
                f"SELECT layout, views, time_bucket, timeline_bucket, timeline_shards "
                f"FROM {keyspace}.schema_info WHERE name = %s",
                (SCHEMA_INFO_NAME,),
                timeout=timeout,
            ).one()
            if row is not None and _column(row, "layout") is not None:
                return KeyspaceLayout(
                    version=int(_column(row, "layout")),
                    views=parse_views(_column(row, "views") or ""),
                    time_bucket=_column(row, "time_bucket") or "none",
                    timeline_bucket=_column(row, "timeline_bucket") or "hour",
                    timeline_shards=int(_column(row, "timeline_shards") or 1),
                )
    except Exception as exc:
        raise _store_error(f"cannot read the layout of keyspace {keyspace!r}", exc) from exc
    return KeyspaceLayout(1 if "changes_by_record" in tables else 0)


def _column(row: Any, name: str) -> Any:
    """A column of a driver row, whichever row factory the session uses."""
    return row[name] if isinstance(row, dict) else getattr(row, name)


def layout_problem(layout: KeyspaceLayout, keyspace: str) -> str | None:
    """Why this version cannot use a keyspace of ``layout`` (one line), or ``None``."""
    if layout.version == LAYOUT_VERSION:
        return None
    if layout.version == 0:
        return (
            f"keyspace {keyspace!r} has no audit tables: run "
            f"`sqla-audit schema apply --keyspace {keyspace}`"
        )
    if layout.version < LAYOUT_VERSION:
        return (
            f"the keyspace {keyspace!r} holds audit layout {layout.version}; run "
            f"`sqla-audit schema migrate --keyspace {keyspace}` (docs/cql.md, Migrating)"
        )
    return (
        f"the keyspace {keyspace!r} holds audit layout {layout.version}, newer than this "
        f"sqla-audit understands ({LAYOUT_VERSION}): upgrade sqla-audit"
    )


def apply_schema(config: CassandraConfig) -> list[str]:
    """Create the keyspace and tables if they do not exist and record the layout, views and
    buckets in ``schema_info``; returns the statements run.

    A keyspace of another layout is refused (:class:`ConfigurationError` naming what to
    run): a layout-1 keyspace needs ``schema migrate``, which copies its rows.
    """
    schema = CassandraSchema(config.schema)
    statements = schema.statements()
    cluster = connect(config)
    try:
        session = cluster.connect()
        layout = read_layout(session, config.schema.keyspace)
        if layout.version not in {0, LAYOUT_VERSION}:
            raise ConfigurationError(layout_problem(layout, config.schema.keyspace))
        if layout.version == LAYOUT_VERSION:
            recorded = (layout.time_bucket, layout.timeline_bucket, layout.timeline_shards)
            wanted = (
                config.schema.time_bucket,
                config.schema.timeline_bucket,
                config.schema.timeline_shards,
            )
            if recorded != wanted:
                raise ConfigurationError(
                    f"keyspace {config.schema.keyspace!r} was created with time bucket "
                    f"{recorded[0]}, timeline bucket {recorded[1]} and {recorded[2]} timeline "
                    "shard(s); they cannot be changed on an existing keyspace (pass the same "
                    "--time-bucket/--timeline-bucket/--timeline-shards)"
                )
        for statement in statements:
            session.execute(statement, timeout=max(config.request_timeout, 60.0))
        if not cluster.control_connection.wait_for_schema_agreement():
            raise StoreError("Cassandra nodes did not agree on the schema in time")
    except (StoreError, ConfigurationError):
        raise
    except Exception as exc:
        raise _store_error("applying the schema failed", exc) from exc
    finally:
        cluster.shutdown()
    return statements


def _store_error(what: str, exc: BaseException) -> StoreError:
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


def _classify(exc: BaseException) -> Exception:
    """Driver errors -> the sqla-audit tree: invalid requests are permanent, rest retryable."""
    from cassandra import InvalidRequest  # noqa: PLC0415

    if isinstance(exc, RecordRejected):
        return exc
    if isinstance(exc, InvalidRequest):
        return RecordRejected(f"Cassandra rejected a record: {exc}")
    return _store_error("Cassandra write failed", exc)


def _absent_unset(values: tuple[Any, ...], unset: Any) -> tuple[Any, ...]:
    """``values`` with every ``None`` replaced by the driver's ``UNSET_VALUE``."""
    return tuple(unset if value is None else value for value in values)


# --------------------------------------------------------------------------- the store


class CassandraStore:
    """An :class:`~consumer.sinks.base.AuditStore` over an existing keyspace.

    Build it with :meth:`connect` (owns the cluster) or from a session you manage. At
    start the store reads the keyspace's layout (``schema_info``): a keyspace without audit
    tables, of layout 1 or of a newer layout stops it with a :class:`ConfigurationError`
    naming what to run. The views, the time bucket and the timeline settings come from
    ``schema_info``; ``schema.views``, when set (the consumer's ``--views``), must match the
    recorded views. ``layout`` skips reading it (tests, and ``schema migrate`` writing into
    the tables it just created).
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
        self._slots = threading.BoundedSemaphore(max_in_flight)
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
        from cassandra import InvalidRequest  # noqa: PLC0415

        ks = self._schema.config.keyspace
        views = self.views
        record_names = (*_NAMES, "bucket") if self._schema.bucketed else _NAMES

        def insert(table: str, names: tuple[str, ...]) -> str:
            marks = ", ".join("?" for _ in names)
            return f"INSERT INTO {ks}.{table} ({', '.join(names)}) VALUES ({marks})"

        partition = "service = ? AND table_name = ? AND record_id = ?" + (
            " AND bucket = ?" if self._schema.bucketed else ""
        )
        lower = "(event_time, event_id) >= (?, ?)"
        order = f"({', '.join(_COMMIT_ORDER)})"
        ordered_slice = f"{order} >= (?, ?, ?, ?) AND {order} <= (?, ?, ?, ?)"
        descending = ", ".join(f"{column} DESC" for column in _COMMIT_ORDER)
        self._insert_actor = self._insert_txn = self._insert_bucket = None
        self._insert_request = self._insert_trace = self._insert_table = None
        self._actor: dict[bool, Any] = {}
        self._txn = self._buckets = self._request = self._trace = None
        self._table: dict[bool, Any] = {}
        try:
            prepare = self._session.prepare
            self._insert_record = prepare(insert("changes_by_service_record", record_names))
            self._insert_service = prepare(
                insert("record_services", ("table_name", "record_id", "service"))
            )
            if "actor" in views:
                self._insert_actor = prepare(insert("changes_by_actor", (*_NAMES, "day")))
            if "transaction" in views:
                self._insert_txn = prepare(insert("changes_by_transaction", _NAMES))
            if "request" in views:
                self._insert_request = prepare(insert("changes_by_request", _NAMES))
            if "trace" in views:
                self._insert_trace = prepare(insert("changes_by_trace", (*_NAMES, "trace_id")))
            if "table" in views:
                self._insert_table = prepare(
                    insert("changes_by_table", (*_NAMES, "bucket", "shard"))
                )
            if self._schema.bucketed:
                self._insert_bucket = prepare(
                    insert(
                        "service_record_buckets", ("service", "table_name", "record_id", "bucket")
                    )
                )
            self._insert_digest = prepare(insert("event_digests", ("event_id", "digest")))
            self._digest = prepare(f"SELECT digest FROM {ks}.event_digests WHERE event_id = ?")
            for statement in (
                self._insert_record,
                self._insert_service,
                self._insert_actor,
                self._insert_txn,
                self._insert_request,
                self._insert_trace,
                self._insert_table,
                self._insert_bucket,
                self._insert_digest,
                self._digest,
            ):
                if statement is not None:
                    statement.is_idempotent = True
            self._history = {
                inclusive: prepare(
                    f"SELECT * FROM {ks}.changes_by_service_record WHERE {partition} AND "
                    f"{lower} AND (event_time, event_id) {'<=' if inclusive else '<'} (?, ?)"
                )
                for inclusive in (True, False)
            }
            self._services = prepare(
                f"SELECT service FROM {ks}.record_services WHERE table_name = ? AND record_id = ?"
            )
            if "actor" in views:
                self._actor = {
                    inclusive: prepare(
                        f"SELECT * FROM {ks}.changes_by_actor WHERE actor_id = ? AND day = ? "
                        f"AND {lower} AND (event_time, event_id) "
                        f"{'<=' if inclusive else '<'} (?, ?)"
                    )
                    for inclusive in (True, False)
                }
            if "transaction" in views:
                self._txn = prepare(
                    f"SELECT * FROM {ks}.changes_by_transaction WHERE transaction_id = ?"
                )
            if "request" in views:
                self._request = prepare(
                    f"SELECT * FROM {ks}.changes_by_request WHERE request_id = ? "
                    f"AND {ordered_slice}"
                )
            if "trace" in views:
                self._trace = prepare(
                    f"SELECT * FROM {ks}.changes_by_trace WHERE trace_id = ? AND {ordered_slice}"
                )
            if "table" in views:
                self._table = {
                    newest: prepare(
                        f"SELECT * FROM {ks}.changes_by_table WHERE service = ? AND "
                        f"table_name = ? AND bucket = ? AND shard = ? AND {ordered_slice}"
                        + (f" ORDER BY {descending}" if newest else "")
                    )
                    for newest in (True, False)
                }
            if self._schema.bucketed:
                self._buckets = prepare(
                    f"SELECT bucket FROM {ks}.service_record_buckets WHERE service = ? AND "
                    "table_name = ? AND record_id = ? AND bucket >= ? AND bucket <= ?"
                )
        except InvalidRequest as exc:
            raise ConfigurationError(
                f"the audit tables in keyspace {ks!r} are missing or differ from this "
                f"configuration (run `sqla-audit schema apply`): {exc}"
            ) from exc
        except Exception as exc:
            raise _store_error("preparing statements failed", exc) from exc

    # -- writes ----------------------------------------------------------------------------

    def _statements_for(
        self, record: AuditRecord, *, migrating: bool = False
    ) -> Iterator[tuple[Any, tuple[Any, ...]]]:
        """The statements and bound values that store ``record``.

        The record's JSON texts are rendered once (:func:`record_to_row`) and the same
        values tuple is bound to every table's statement. ``migrating`` leaves out the
        tables a layout-1 keyspace already has (by actor, by transaction).
        """
        row = record_to_row(record)
        row["event_time"] = row["event_time_us"] // 1000  # == to_millis(record.event_time)
        row["occurred_at"] = row["occurred_at_us"] // 1000
        # absent values stay unset: a bound None would write a tombstone
        values = _absent_unset(tuple(map(row.__getitem__, _NAMES)), self._unset)
        key = (record.service, record.table, record.record_id)
        if self._insert_bucket is not None:
            bucket = bucket_of(record.event_time, self._bucket)
            yield self._insert_record, (*values, bucket)
            yield self._insert_bucket, (*key, bucket)
        else:
            yield self._insert_record, values
        yield self._insert_service, (record.table, record.record_id, record.service)
        if record.is_departure:
            return  # the companion tables keep the real event only (it names the old id)
        if not migrating:
            if self._insert_txn is not None:
                yield self._insert_txn, values
            if self._insert_actor is not None and record.actor_id is not None:
                yield self._insert_actor, (*values, record.day)
        if self._insert_request is not None and record.request_id:
            yield self._insert_request, values
        if self._insert_trace is not None and record.trace_id is not None:
            yield self._insert_trace, (*values, record.trace_id)
        if self._insert_table is not None:
            bucket_ms = timeline_bucket_ms(row["event_time"], self._timeline_bucket)
            shard = timeline_shard(record.record_id, self._shards)
            yield self._insert_table, (*values, bucket_ms, shard)

    def copy(self, records: Iterable[AuditRecord]) -> None:
        """Write layout-1 records into this layout's tables (``schema migrate``): history,
        its lookups and the request, trace and table views; not the by-actor and
        by-transaction tables, which both layouts share, nor the digests, already there."""
        self._run(
            (record, statement, params)
            for record in records
            for statement, params in self._statements_for(record, migrating=True)
        )

    def _settle(self, future: Any, errors: list[BaseException]) -> Any:
        """Wait for one sent request, give its in-flight slot back; its result or None."""
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - any driver error; classified by the caller
            errors.append(exc)
            return None
        finally:
            self._slots.release()

    def _bind(self, record: AuditRecord, statement: Any, params: tuple[Any, ...]) -> Any:
        """The bound statement; a value the driver refuses is that record's problem."""
        try:
            bound = statement.bind(params)
            _ = bound.routing_key  # computed now: a key component over 64 KiB fails here
        except Exception as exc:  # the driver raises TypeError, ValueError, struct.error...
            raise RecordRejected(
                f"Cassandra cannot bind record {record.event_id}: {type(exc).__name__}: {exc}"
            ) from exc
        return bound

    def _run(self, requests: Iterable[tuple[AuditRecord, Any, tuple[Any, ...]]]) -> list[Any]:
        """Send every request (at most ``max_in_flight`` in flight across all threads), wait
        for all of them, then raise the worst failure: a retryable one if any (the store is
        failing), else the first refused record. Returns the results in order.

        A slot is taken before each request and given back by the sending thread when it
        collects the result -- no callback per request on the driver's event loop, whose
        thread would otherwise compete with the pollers for the GIL. A thread that finds
        the window full settles its own oldest request first, so a run larger than the
        window never waits for slots only it could free.
        """
        slots = self._slots
        pending: deque[tuple[int, Any]] = deque()
        results: list[Any] = []
        errors: list[BaseException] = []
        send_error: BaseException | None = None

        def settle_oldest() -> None:
            index, future = pending.popleft()
            results[index] = self._settle(future, errors)

        try:
            for record, statement, params in requests:
                try:
                    bound = self._bind(record, statement, params)
                except RecordRejected as exc:
                    send_error = exc
                    break
                while not slots.acquire(blocking=False):
                    if not pending:
                        slots.acquire()
                        break
                    settle_oldest()
                try:
                    future = self._session.execute_async(bound, timeout=self._timeout)
                except Exception as exc:  # noqa: BLE001 - any driver error; classified below
                    slots.release()
                    send_error = exc
                    break
                results.append(None)
                pending.append((len(results) - 1, future))
            while pending:  # wait for everything sent, even after a failure
                settle_oldest()
        except BaseException:
            for _ in pending:  # interrupted: never leak the slots of requests still out
                slots.release()
            raise
        failures = [(exc, _classify(exc)) for exc in (send_error, *errors) if exc is not None]
        if failures:
            outages = [pair for pair in failures if not isinstance(pair[1], RecordRejected)]
            original, worst = outages[0] if outages else failures[0]
            if worst is original:
                raise worst
            raise worst from original
        return results

    def _stored_digests(self, records: list[AuditRecord]) -> dict[uuid.UUID, bytes]:
        """The stored content digest of each of ``records`` that has one."""
        results = self._run((record, self._digest, (record.event_id,)) for record in records)
        found: dict[uuid.UUID, bytes] = {}
        for record, result in zip(records, results, strict=True):
            row = result.one() if result is not None else None
            if row is not None and row["digest"] is not None:
                found[record.event_id] = bytes(row["digest"])
        return found

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Write the new records, skip redeliveries, refuse conflicts (see the module
        docstring); the digests of the written records go last."""
        unique: dict[uuid.UUID, tuple[AuditRecord, bytes]] = {}
        first: RecordConflict | None = None
        for record in records:
            digest = content_digest(record)  # RecordRejected: a record no store can hold
            seen = unique.get(record.event_id)
            if seen is None:
                unique[record.event_id] = (record, digest)
            elif seen[1] != digest:
                first = first or conflict(record, log)
        if not unique:
            if first is not None:
                raise first
            return
        stored = self._stored_digests([record for record, _ in unique.values()])
        fresh: list[tuple[AuditRecord, bytes]] = []
        for event_id, (record, digest) in unique.items():
            known = stored.get(event_id)
            if known is None:
                fresh.append((record, digest))
            elif known != digest:
                first = first or conflict(record, log)
        self._run(
            (record, statement, params)
            for record, _ in fresh
            for statement, params in self._statements_for(record)
        )
        self._run(
            (record, self._insert_digest, (record.event_id, digest)) for record, digest in fresh
        )
        if first is not None:
            raise first

    # -- reads -----------------------------------------------------------------------------

    def _execute(self, statement: Any, params: tuple[Any, ...], fetch_size: int) -> Any:
        bound = statement.bind(params)
        bound.fetch_size = fetch_size
        try:
            return self._session.execute(bound, timeout=self._timeout)
        except Exception as exc:
            raise _store_error("Cassandra read failed", exc) from exc

    def _rows(self, statement: Any, params: tuple[Any, ...], fetch_size: int) -> Iterator[Any]:
        result = self._execute(statement, params, fetch_size)
        iterator = iter(result)
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # fetching a later page failed
                raise _store_error("Cassandra read failed", exc) from exc
            yield row

    @staticmethod
    def _bounds(window: Window) -> tuple[bool, tuple[Any, ...]]:
        """(upper bound inclusive?, the four clustering bound values)."""
        low = (window.min_ms if window.min_ms is not None else _MIN_MS, _MIN_UUID)
        until_ms = window.until_us // 1000 if window.until_us is not None else _MAX_MS
        cursor = window.cursor
        if cursor is not None and cursor.millis <= until_ms:
            return False, (*low, cursor.millis, cursor.event_id)
        return True, (*low, until_ms, _MAX_UUID)

    def _fetch(self, window: Window) -> int:
        return window.limit + 1

    def _require(self, view: str) -> None:
        if view not in self.views:
            raise ViewDisabled(view)

    def _history_candidates(
        self, key: tuple[str, str, str], window: Window
    ) -> Iterator[AuditRecord]:
        inclusive, bounds = self._bounds(window)
        statement = self._history[inclusive]
        if self._buckets is None:
            for row in self._rows(statement, (*key, *bounds), self._fetch(window)):
                yield record_from_row(row)
            return
        low_ms, high_ms = bounds[0], bounds[2]
        low_bucket = 0 if low_ms == _MIN_MS else bucket_of(_from_ms(low_ms), self._bucket)
        high_bucket = (
            99_999_999 if high_ms == _MAX_MS else bucket_of(_from_ms(high_ms), self._bucket)
        )
        buckets = [
            row["bucket"]
            for row in self._rows(self._buckets, (*key, low_bucket, high_bucket), 1000)
        ]
        for bucket in buckets:
            for row in self._rows(statement, (*key, bucket, *bounds), self._fetch(window)):
                yield record_from_row(row)

    def history(
        self,
        service: str,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        window = Window.build(since, until, limit, page)
        return paginate(self._history_candidates((service, table, record_id), window), window)

    def services_of(self, table: str, record_id: str) -> list[str]:
        return sorted(
            row["service"] for row in self._rows(self._services, (table, record_id), 1000)
        )

    def _actor_candidates(
        self, actor_id: str, window: Window, until: dt.datetime | None
    ) -> Iterator[AuditRecord]:
        inclusive, bounds = self._bounds(window)
        statement = self._actor[inclusive]
        # No ``until``: look one day ahead of now to tolerate producers' clock skew.
        last = until or (dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        if window.cursor is not None:
            last = min(last, _from_ms(window.cursor.millis))
        first = _from_ms(window.min_ms if window.min_ms is not None else 0).date()
        day = last.astimezone(dt.UTC).date()
        while day >= first:
            for row in self._rows(statement, (actor_id, day, *bounds), self._fetch(window)):
                yield record_from_row(row)
            day -= dt.timedelta(days=1)

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
        service: str | None = None,
    ) -> Page[AuditRecord]:
        self._require("actor")
        window = Window.build(since, until, limit, page)
        found = self._actor_candidates(actor_id, window, until)
        if service is not None:
            found = (record for record in found if record.service == service)
        return paginate(found, window)

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        self._require("transaction")
        return [record_from_row(row) for row in self._rows(self._txn, (transaction_id,), 1000)]

    @staticmethod
    def _ordered_bounds(window: OrderedWindow) -> tuple[Any, ...]:
        """The eight clustering bounds (low inclusive, high inclusive) of an ordered read.

        The cursor is a bound itself (inclusive: :func:`paginate_ordered` drops the row it
        names), so a page after a long run of ties starts where the last one ended.
        """
        low: tuple[Any, ...] = (_MIN_MS, _MIN_BIGINT, _MIN_INT, _MIN_UUID)
        high: tuple[Any, ...] = (_MAX_MS, _MAX_BIGINT, _MAX_INT, _MAX_UUID)
        if window.since_us is not None:
            low = (window.since_us // 1000, window.since_us, _MIN_INT, _MIN_UUID)
        if window.until_us is not None:
            high = (window.until_us // 1000, window.until_us, _MAX_INT, _MAX_UUID)
        cursor = window.cursor
        if cursor is not None:
            at = (cursor.micros // 1000, cursor.micros, cursor.sequence, cursor.event_id)
            if window.newest_first:
                high = min(high, at, key=lambda bound: bound[1:])
            else:
                low = max(low, at, key=lambda bound: bound[1:])
        return (*low, *high)

    def _ordered_rows(
        self, statement: Any, partition: tuple[Any, ...], window: OrderedWindow
    ) -> Iterator[AuditRecord]:
        params = (*partition, *self._ordered_bounds(window))
        for row in self._rows(statement, params, window.limit + 1):
            yield record_from_row(row)

    def by_request(
        self, request_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("request")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        if not request_id:
            return Page([], None)
        return paginate_ordered(self._ordered_rows(self._request, (request_id,), window), window)

    def by_trace(
        self, trace_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("trace")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        if not trace_id or len(trace_id) > MAX_IDENTIFIER_CHARS:
            return Page([], None)  # the trace view indexes no such id
        return paginate_ordered(self._ordered_rows(self._trace, (trace_id,), window), window)

    def _timeline_buckets(self, window: OrderedWindow) -> list[int]:
        """The timeline buckets (start ms) a window spans, in the read's order."""
        size = TIMELINE_BUCKET_MS[self._timeline_bucket]
        assert window.low_us is not None  # by_table requires since
        high_us = window.high_us
        if high_us is None:  # no until: one day ahead of now, for producers' clock skew
            high_us = to_micros(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        first = timeline_bucket_ms(window.low_us // 1000, self._timeline_bucket)
        last = timeline_bucket_ms(high_us // 1000, self._timeline_bucket)
        count = (last - first) // size + 1
        if count > MAX_TIMELINE_BUCKETS:
            raise InvalidQuery(
                f"the window spans {count} {self._timeline_bucket} buckets of the table "
                f"timeline (at most {MAX_TIMELINE_BUCKETS}): narrow since/until"
            )
        buckets = list(range(first, last + 1, size)) if count > 0 else []
        return buckets[::-1] if window.newest_first else buckets

    def _timeline(self, service: str, table: str, window: OrderedWindow) -> Iterator[AuditRecord]:
        """The table's records in the window's order: bucket after bucket, each bucket's
        shards merged by commit order. Each partition is read lazily, a page at a time."""
        statement = self._table[window.newest_first]
        for bucket in self._timeline_buckets(window):
            shards = [
                self._ordered_rows(statement, (service, table, bucket, shard), window)
                for shard in range(self._shards)
            ]
            if len(shards) == 1:
                yield from shards[0]
            else:
                yield from heapq.merge(*shards, key=commit_key, reverse=window.newest_first)

    def by_table(
        self,
        service: str,
        table: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        newest_first: bool = True,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        self._require("table")
        window = OrderedWindow.build(since, until, limit, page, newest_first=newest_first)
        if window.since_us is None:
            raise InvalidQuery("by_table needs since")
        return paginate_ordered(self._timeline(service, table, window), window)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._cluster is not None:
            self._cluster.shutdown()


def _from_ms(millis: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)


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


__all__ = [
    "LAYOUT_VERSION",
    "CassandraSchema",
    "CassandraStore",
    "KeyspaceLayout",
    "apply_schema",
    "bucket_of",
    "connect",
    "layout_problem",
    "read_layout",
    "timeline_bucket_ms",
    "timeline_shard",
    "wait_for_cassandra",
]
