"""The CQL of the Cassandra store (audit layout 2): tables, keys, buckets and shards.

Pure text and arithmetic -- nothing here talks to Cassandra. :class:`CassandraSchema` renders
the ``CREATE ... IF NOT EXISTS`` statements for one :class:`~consumer.config.CassandraSchemaConfig`
and the ``schema_info`` row that records the layout (:data:`LAYOUT_VERSION`), the views and
the buckets; :func:`bucket_of`, :func:`timeline_bucket_ms` and :func:`timeline_shard` compute
the partition keys the write path binds and the read path walks. The package docstring of
:mod:`consumer.sinks.cassandra` describes the tables; docs/cql.md shows them in cqlsh.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable
from typing import Final

from consumer.config import CassandraSchemaConfig
from consumer.sinks.cassandra.buckets import ActorBucketing
from consumer.sinks.views import check_views, format_views

#: The columns every record table holds (the whole record, denormalized), in order.
RECORD_COLUMNS: Final = (
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
#: The names of :data:`RECORD_COLUMNS`: the values tuple bound to every record insert.
COLUMN_NAMES: Final = tuple(name for name, _ in RECORD_COLUMNS)


def bucket_of(event_time: dt.datetime, granularity: str) -> int:
    """The time bucket (``2026``, ``202601``, ``20260131`` or ``2026013123``) of an event
    time, in UTC."""
    day = event_time.astimezone(dt.UTC)
    if granularity == "year":
        return day.year
    if granularity == "month":
        return day.year * 100 + day.month
    if granularity == "day":
        return day.year * 10_000 + day.month * 100 + day.day
    if granularity == "hour":  # an int up to the year 2147
        return (day.year * 10_000 + day.month * 100 + day.day) * 100 + day.hour
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
COMMIT_ORDER: Final = ("event_time", "event_time_us", "sequence", "event_id")


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
        self.actor = ActorBucketing.of(config)

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
        columns = [*extra, *RECORD_COLUMNS]
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
            f"({partition}), {', '.join(COMMIT_ORDER)}",
            ", ".join(f"{column} ASC" for column in COMMIT_ORDER),
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
            "    time_bucket text,\n    timeline_bucket text,\n    timeline_shards int,\n"
            "    actor_bucket text,\n    actor_shards int\n)",
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
        out.append(  # the seals of signed events (consumer.seal), read by `verify`
            f"CREATE TABLE IF NOT EXISTS {ks}.event_seals (\n"
            f"    event_id uuid PRIMARY KEY,\n    seal text\n){digest_ttl}"
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
                    self.actor.table,
                    [("actor_id", "text"), *self.actor.key_columns],
                    f"({self.actor.partition_key}), event_time, event_id",
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
        """The ``INSERT`` that records the layout, views and buckets in ``schema_info``
        (the actor bucketing only when it is not the default, which a keyspace made before
        it could be chosen holds: such a ``schema_info`` lacks its columns)."""
        cfg = self.config
        names = "name, layout, views, time_bucket, timeline_bucket, timeline_shards"
        values = (
            f"'{SCHEMA_INFO_NAME}', {LAYOUT_VERSION}, '{format_views(self.views)}', "
            f"'{cfg.time_bucket}', '{cfg.timeline_bucket}', {cfg.timeline_shards}"
        )
        if not self.actor.legacy:
            names += ", actor_bucket, actor_shards"
            values += f", '{self.actor.bucket}', {self.actor.shards}"
        return f"INSERT INTO {cfg.keyspace}.schema_info ({names})\n  VALUES ({values})"

    def statements(self) -> list[str]:
        """Every statement, in the order to run them: the tables, then ``schema_info``."""
        return [*self.tables(), self.info_statement()]

    def cql(self) -> str:
        """The whole schema as a CQL script."""
        return "".join(f"{statement};\n\n" for statement in self.statements()).rstrip() + "\n"


__all__ = [
    "COLUMN_NAMES",
    "COMMIT_ORDER",
    "LAYOUT_VERSION",
    "MAX_TIMELINE_BUCKETS",
    "RECORD_COLUMNS",
    "SCHEMA_INFO_NAME",
    "TIMELINE_BUCKET_MS",
    "CassandraSchema",
    "bucket_of",
    "timeline_bucket_ms",
    "timeline_shard",
]
