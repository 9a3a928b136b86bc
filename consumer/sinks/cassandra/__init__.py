"""The Cassandra audit store: the production :class:`~consumer.sinks.base.AuditStore`.

Audit layout 2 (``schema cql`` prints it; ``schema apply`` creates it, idempotently; docs/cql.md
shows every table in cqlsh). A record is identified by ``(service, table_name, record_id)``:

``changes_by_service_record``
    history, partitioned by ``(service, table_name, record_id)`` and clustered newest first
    by ``(event_time DESC, event_id DESC)``: a record's history, and its state as of any
    time, is one partition read. Always written.
``record_services``
    partitioned by ``(table_name, record_id)``, clustered by ``service``: which services
    wrote a record (what ``history users 1`` without ``--service`` asks). Always written.
``changes_by_actor`` (view ``actor``)
    partitioned by ``(actor_id, day)``: what one actor changed on a day. With another
    ``--actor-bucket``/``--actor-shards`` the view is ``changes_by_actor_<bucket>[_x<shards>]``,
    partitioned by ``(actor_id, bucket, shard)`` (:mod:`~consumer.sinks.cassandra.buckets`).
``changes_by_transaction`` (view ``transaction``)
    partitioned by ``transaction_id``, clustered by ``sequence``: what one commit changed,
    in order.
``changes_by_request`` / ``changes_by_trace`` (views ``request``, ``trace``)
    partitioned by the request id / the OpenTelemetry trace id, in commit order
    ``(event_time, event_time_us, sequence, event_id)``: what one request changed across
    services. Changes without a request or trace id are not written there.
``changes_by_table`` (view ``table``)
    the table timeline, partitioned by ``(service, table_name, bucket, shard)`` -- an hour
    (``--timeline-bucket``) and a CRC-32 of the record id modulo ``--timeline-shards`` -- in
    commit order: what changed in one table in a time window.
``service_record_buckets`` (only with ``--time-bucket``)
    with a time bucket (``year``/``month``/``day``) in the history partition key, the
    buckets a record's history spans, so history walks them newest first.
``event_digests``
    one row per stored ``event_id`` with the SHA-256 of its content
    (:func:`~consumer.sinks.digest.content_digest`): what tells a redelivery from a conflict.
``schema_info``
    the layout version (:data:`LAYOUT_VERSION`), the views and the buckets; checked when a
    store connects (:func:`layout_problem` names what to run otherwise).

Every record table holds the whole record (denormalized), so each question is answered from
one table without a second lookup, at the cost of one write per enabled view
(docs/benchmarks.md measures each). A departure record (the row's key changed; see
:mod:`consumer.records`) goes to history and ``record_services`` only. ``event_id`` is a
version 7 UUID stored as ``uuid`` (Cassandra orders ``uuid`` values by version, then bytes:
for version 7, creation order); ``event_time`` is a ``timestamp`` (milliseconds), the exact
microseconds being in ``event_time_us`` and ``occurred_at_us``.

The package follows the data flow:

* :mod:`~consumer.sinks.cassandra.schema` -- the CQL text, keys, buckets and shards;
* :mod:`~consumer.sinks.cassandra.connection` -- connecting, and driver errors sorted into
  permanent (one record) and retryable (the store);
* :mod:`~consumer.sinks.cassandra.layout` -- which layout a keyspace holds, ``schema apply``;
* :mod:`~consumer.sinks.cassandra.writes` -- prepared inserts, the in-flight window, digests
  and conflicts, absent values left unset;
* :mod:`~consumer.sinks.cassandra.reads` -- history and its buckets, the views, the
  timeline's fan-out over buckets and shards;
* :mod:`~consumer.sinks.cassandra.store` -- :class:`CassandraStore`, which ties them together.

The layout-1 migration (``schema migrate``) is :mod:`consumer.sinks.migrate`.
"""

from __future__ import annotations

from consumer.sinks.cassandra.connection import (
    RECONNECT_MAX_DELAY,
    classify,
    connect,
    store_error,
)
from consumer.sinks.cassandra.layout import (
    KeyspaceLayout,
    apply_schema,
    layout_problem,
    read_layout,
)
from consumer.sinks.cassandra.schema import (
    COLUMN_NAMES,
    COMMIT_ORDER,
    LAYOUT_VERSION,
    MAX_TIMELINE_BUCKETS,
    RECORD_COLUMNS,
    SCHEMA_INFO_NAME,
    TIMELINE_BUCKET_MS,
    CassandraSchema,
    bucket_of,
    timeline_bucket_ms,
    timeline_shard,
)
from consumer.sinks.cassandra.store import CassandraStore, wait_for_cassandra

#: The names the single-module store had for its column names and error helpers.
_NAMES = COLUMN_NAMES
_RECORD_COLUMNS = RECORD_COLUMNS
_COMMIT_ORDER = COMMIT_ORDER
_store_error = store_error
_classify = classify

__all__ = [
    "COLUMN_NAMES",
    "COMMIT_ORDER",
    "LAYOUT_VERSION",
    "MAX_TIMELINE_BUCKETS",
    "RECONNECT_MAX_DELAY",
    "RECORD_COLUMNS",
    "SCHEMA_INFO_NAME",
    "TIMELINE_BUCKET_MS",
    "CassandraSchema",
    "CassandraStore",
    "KeyspaceLayout",
    "apply_schema",
    "bucket_of",
    "classify",
    "connect",
    "layout_problem",
    "read_layout",
    "store_error",
    "timeline_bucket_ms",
    "timeline_shard",
    "wait_for_cassandra",
]
