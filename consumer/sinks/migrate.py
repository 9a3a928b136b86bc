"""``sqla-audit schema migrate``: copy a layout-1 Cassandra keyspace into layout 2.

Layout 1 (sqla-audit before records were identified by service) kept history in
``changes_by_record``, partitioned by ``(table_name, record_id)`` -- two services with a
table of the same name shared one partition. Cassandra cannot change a table's primary key,
so layout 2 keeps history in a new table, ``changes_by_service_record``, partitioned by
``(service, table_name, record_id)``. Every layout-1 row holds its ``service`` column, so
the copy is exact.

What :func:`migrate` does, in order:

1. creates the layout-2 tables (``CREATE ... IF NOT EXISTS``; ``changes_by_actor``,
   ``changes_by_transaction`` and ``event_digests`` exist in both layouts and are kept);
2. reads ``changes_by_record`` page by page and writes each row into the history table, its
   lookups (``record_services``, ``service_record_buckets``) and the request, trace and
   table views enabled -- the views are backfilled from the same rows;
3. after every page, records the driver's paging state in ``schema_migration``: an
   interrupted migration resumes after the last page it finished (the writes are idempotent
   ``INSERT``s, so a page written twice is harmless);
4. when the table is read to the end, records layout 2 in ``schema_info``; from then on
   the consumer and the query commands start, and a second run says there is nothing to do
   (besides creating ``event_seals``, the seals of signed events, on a layout-2 keyspace made
   before that table existed; ``schema apply`` creates it too).

On a layout-2 keyspace, ``schema migrate`` with another ``--actor-bucket``/``--actor-shards``
than the keyspace records rebuilds the by-actor view: it creates the view's table for the new
setting (each setting has a table of its own, :mod:`~consumer.sinks.cassandra.buckets`),
copies the old table's rows into it page by page (resumable, like the layout copy), then
records the setting in ``schema_info``; readers and writers started afterwards use the new
table. The old table is kept (drop it once checked). Stop the workers first: one still
running writes the old table until it restarts.

The layout-1 tables (``changes_by_record``, ``record_buckets``) are left in place: drop them
once the new tables answer as expected. Stop the workers before migrating (they refuse to
start on a layout-1 keyspace anyway; messages wait in the queue).

:data:`LAYOUT_1_CQL` keeps the layout-1 tables' CQL, for the tests that build a layout-1
keyspace and for reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from consumer.config import CassandraConfig
from consumer.records import AuditRecord, record_from_row
from consumer.sinks.cassandra import (
    LAYOUT_VERSION,
    SCHEMA_INFO_NAME,
    CassandraSchema,
    CassandraStore,
    KeyspaceLayout,
    connect,
    layout_problem,
    read_layout,
    store_error,
)
from consumer.sinks.cassandra.buckets import ActorBucketing
from consumer.sinks.cassandra.layout import ensure_info_columns
from sqla_audit.errors import ConfigurationError, StoreError

#: The layout-1 tables, as ``schema apply`` created them (``{ks}`` is the keyspace, and
#: ``{bucket_column}``/``{bucket_key}`` add the time bucket of a bucketed keyspace).
LAYOUT_1_CQL: Final = (
    """CREATE TABLE IF NOT EXISTS {ks}.changes_by_record (
    table_name text,
    record_id text,{bucket_column}
    event_time timestamp,
    event_id uuid,
    event_time_us bigint,
    occurred_at timestamp,
    occurred_at_us bigint,
    operation text,
    service text,
    transaction_id uuid,
    sequence int,
    actor_id text,
    actor_attributes text,
    request_id text,
    previous_record_id text,
    masked_columns text,
    changes text,
    before text,
    after text,
    metadata text,
    PRIMARY KEY ((table_name, record_id{bucket_key}), event_time, event_id)
) WITH CLUSTERING ORDER BY (event_time DESC, event_id DESC)""",
    """CREATE TABLE IF NOT EXISTS {ks}.changes_by_actor (
    actor_id text,
    day date,
    table_name text,
    record_id text,
    event_time timestamp,
    event_id uuid,
    event_time_us bigint,
    occurred_at timestamp,
    occurred_at_us bigint,
    operation text,
    service text,
    transaction_id uuid,
    sequence int,
    actor_attributes text,
    request_id text,
    previous_record_id text,
    masked_columns text,
    changes text,
    before text,
    after text,
    metadata text,
    PRIMARY KEY ((actor_id, day), event_time, event_id)
) WITH CLUSTERING ORDER BY (event_time DESC, event_id DESC)""",
    """CREATE TABLE IF NOT EXISTS {ks}.changes_by_transaction (
    transaction_id uuid,
    table_name text,
    record_id text,
    event_time timestamp,
    event_id uuid,
    event_time_us bigint,
    occurred_at timestamp,
    occurred_at_us bigint,
    operation text,
    service text,
    sequence int,
    actor_id text,
    actor_attributes text,
    request_id text,
    previous_record_id text,
    masked_columns text,
    changes text,
    before text,
    after text,
    metadata text,
    PRIMARY KEY ((transaction_id), sequence, event_id)
) WITH CLUSTERING ORDER BY (sequence ASC, event_id ASC)""",
    """CREATE TABLE IF NOT EXISTS {ks}.event_digests (
    event_id uuid PRIMARY KEY,
    digest blob
)""",
)

#: Layout 1's table of the buckets a record's history spans (bucketed keyspaces only).
LAYOUT_1_BUCKETS_CQL: Final = """CREATE TABLE IF NOT EXISTS {ks}.record_buckets (
    table_name text,
    record_id text,
    bucket int,
    PRIMARY KEY ((table_name, record_id), bucket)
) WITH CLUSTERING ORDER BY (bucket DESC)"""

#: The progress of a migration: one row, the paging state after the last page copied.
_PROGRESS_CQL: Final = """CREATE TABLE IF NOT EXISTS {ks}.schema_migration (
    name text PRIMARY KEY,
    paging_state blob,
    copied bigint,
    finished boolean
)"""
_PROGRESS_NAME: Final = "layout2"


def layout_1_statements(keyspace: str, *, bucketed: bool = False) -> list[str]:
    """The CQL of a layout-1 keyspace's tables (the keyspace itself must exist)."""
    bucket_column = "\n    bucket int," if bucketed else ""
    bucket_key = ", bucket" if bucketed else ""
    out = [
        statement.format(ks=keyspace, bucket_column=bucket_column, bucket_key=bucket_key)
        for statement in LAYOUT_1_CQL
    ]
    if bucketed:
        out.append(LAYOUT_1_BUCKETS_CQL.format(ks=keyspace))
    return out


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What a run of :func:`migrate` did."""

    #: Rows copied in this run (0 when the keyspace already was at layout 2).
    copied: int
    #: Rows copied over all runs.
    total: int
    already_done: bool = False


def _bucketed_layout_1(session: Any, keyspace: str) -> bool:
    rows = session.execute(
        "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
        "AND table_name = 'changes_by_record'",
        (keyspace,),
    )
    return any(
        (row["column_name"] if isinstance(row, dict) else row.column_name) == "bucket"
        for row in rows
    )


def migrate(
    config: CassandraConfig,
    *,
    progress: Callable[[str], None] = print,
    page_size: int = 500,
) -> MigrationResult:
    """Copy a layout-1 keyspace into layout 2 (module docstring); idempotent, resumable.

    ``config.schema`` chooses the views to backfill (``None``: the default set) and the
    timeline settings; its time bucket must be the layout-1 keyspace's.
    """
    keyspace = config.schema.keyspace
    cluster = connect(config)
    try:
        session = cluster.connect()
        layout = read_layout(session, keyspace)
        if layout.version == LAYOUT_VERSION:
            # tables added within layout 2 (``event_seals``: signed events' seals)
            for statement in CassandraSchema(config.schema).tables():
                if f"{keyspace}.event_seals " in statement:
                    session.execute(statement, timeout=max(config.request_timeout, 60.0))
            wanted = ActorBucketing.of(config.schema)
            if "actor" in layout.views and wanted != ActorBucketing(
                layout.actor_bucket, layout.actor_shards
            ):
                copied = _rebuild_actor_view(session, cluster, config, layout, page_size, progress)
                return MigrationResult(copied, copied)
            progress(f"keyspace {keyspace!r} is already at audit layout {LAYOUT_VERSION}")
            return MigrationResult(0, 0, already_done=True)
        if layout.version != 1:
            raise ConfigurationError(
                layout_problem(layout, keyspace) or f"keyspace {keyspace!r}: nothing to migrate"
            )
        if not ActorBucketing.of(config.schema).legacy:
            raise ConfigurationError(
                "a layout-1 keyspace keeps the by-actor view by day: migrate it without "
                "--actor-bucket/--actor-shards, then run schema migrate again with them"
            )
        bucketed = _bucketed_layout_1(session, keyspace)
        if bucketed != (config.schema.time_bucket != "none"):
            raise ConfigurationError(
                f"keyspace {keyspace!r} was created "
                + ("with" if bucketed else "without")
                + " a time bucket: pass the same --time-bucket it was created with"
            )
        schema = CassandraSchema(config.schema)
        timeout = max(config.request_timeout, 60.0)
        for statement in [*schema.tables(), _PROGRESS_CQL.format(ks=keyspace)]:
            session.execute(statement, timeout=timeout)
        if not cluster.control_connection.wait_for_schema_agreement():
            raise StoreError("Cassandra nodes did not agree on the schema in time")
        target = KeyspaceLayout(
            version=LAYOUT_VERSION,
            views=schema.views,
            time_bucket=config.schema.time_bucket,
            timeline_bucket=config.schema.timeline_bucket,
            timeline_shards=config.schema.timeline_shards,
        )
        store = CassandraStore(
            session,
            dataclasses.replace(config.schema, views=None),
            max_in_flight=config.max_in_flight,
            request_timeout=config.request_timeout,
            layout=target,
        )
        copied, total = _copy(session, store.copy, keyspace, page_size, progress)
        session.execute(schema.info_statement(), timeout=timeout)
        progress(
            f"keyspace {keyspace!r} is at audit layout {LAYOUT_VERSION} ({total} records "
            "copied); the layout-1 tables changes_by_record"
            + (" and record_buckets" if bucketed else "")
            + " are kept: drop them once you have checked the new ones"
        )
        return MigrationResult(copied, total)
    except (StoreError, ConfigurationError):
        raise
    except Exception as exc:
        raise store_error("migrating the keyspace failed", exc) from exc
    finally:
        cluster.shutdown()


def _rebuild_actor_view(  # noqa: PLR0917 - the migration's own state, passed along
    session: Any,
    cluster: Any,
    config: CassandraConfig,
    layout: KeyspaceLayout,
    page_size: int,
    progress: Callable[[str], None],
) -> int:
    """Copy the by-actor view into the table of the configured bucketing (module docstring);
    returns the rows copied in this run."""
    keyspace = config.schema.keyspace
    old = ActorBucketing(layout.actor_bucket, layout.actor_shards)
    new = ActorBucketing.of(config.schema)
    target = dataclasses.replace(layout, actor_bucket=new.bucket, actor_shards=new.shards)
    schema = CassandraSchema(dataclasses.replace(config.schema, views=layout.views))
    timeout = max(config.request_timeout, 60.0)
    for statement in [*schema.tables(), _PROGRESS_CQL.format(ks=keyspace)]:
        if f"{keyspace}.{new.table} (" in statement or "schema_migration" in statement:
            session.execute(statement, timeout=timeout)
    ensure_info_columns(session, keyspace, timeout)
    if not cluster.control_connection.wait_for_schema_agreement():
        raise StoreError("Cassandra nodes did not agree on the schema in time")
    store = CassandraStore(
        session,
        dataclasses.replace(config.schema, views=None),
        max_in_flight=config.max_in_flight,
        request_timeout=config.request_timeout,
        layout=target,
    )
    progress(f"rebuilding the by-actor view: {old.table} ({old.describe()}) into {new.table}")
    copied, total = _copy(
        session,
        store.copy_actor,
        keyspace,
        page_size,
        progress,
        source=old.table,
        name=f"actor:{new.table}",
    )
    session.execute(
        f"UPDATE {keyspace}.schema_info SET actor_bucket = %s, actor_shards = %s WHERE name = %s",
        (new.bucket, new.shards, SCHEMA_INFO_NAME),
        timeout=timeout,
    )
    progress(
        f"the by-actor view of keyspace {keyspace!r} is in {new.table} ({new.describe()}, "
        f"{total} rows copied); {old.table} is kept: drop it once you have checked the new one"
        " (with login roles, run `schema apply --roles` again to grant the new table)"
    )
    return copied


def _copy(
    session: Any,
    write: Callable[[Iterable[AuditRecord]], None],
    keyspace: str,
    page_size: int,
    progress: Callable[[str], None],
    *,
    source: str = "changes_by_record",
    name: str = _PROGRESS_NAME,
) -> tuple[int, int]:
    """Copy ``source`` page by page through ``write``, saving the paging state after each
    page under ``name``."""
    from cassandra.query import SimpleStatement  # noqa: PLC0415 - heavy, optional dependency

    row = session.execute(
        f"SELECT paging_state, copied, finished FROM {keyspace}.schema_migration WHERE name = %s",
        (name,),
    ).one()
    state = None
    total = 0
    if row is not None:
        if row["finished"]:
            return 0, int(row["copied"] or 0)
        state = row["paging_state"]
        total = int(row["copied"] or 0)
        progress(f"resuming after {total} records")
    save = session.prepare(
        f"INSERT INTO {keyspace}.schema_migration (name, paging_state, copied, finished) "
        "VALUES (?, ?, ?, ?)"
    )
    scan = SimpleStatement(f"SELECT * FROM {keyspace}.{source}", fetch_size=page_size)
    copied = 0
    while True:
        result = session.execute(scan, paging_state=state)
        rows = list(result.current_rows)
        write(record_from_row(values) for values in rows)
        copied += len(rows)
        total += len(rows)
        state = result.paging_state
        session.execute(save, (name, state, total, state is None))
        progress(f"copied {total} records")
        if state is None:
            return copied, total


__all__ = [
    "LAYOUT_1_BUCKETS_CQL",
    "LAYOUT_1_CQL",
    "MigrationResult",
    "layout_1_statements",
    "migrate",
]
