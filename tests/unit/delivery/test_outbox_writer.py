"""The outbox table and writer: rows commit and roll back with the application's data."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.schema import CreateTable

from sqla_audit.delivery import TransactionalWriter
from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import (
    DEFAULT_TABLE_NAME,
    LAYOUT_BATCH,
    LAYOUT_EVENT,
    OutboxWriter,
    UTCDateTime,
    create_outbox_table,
    outbox_counts,
    outbox_table,
    outbox_tally,
    requeue_parked,
)

EventFactory = Callable[..., ChangeEvent]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A SQLite file database with the outbox table and an application table."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
    yield engine
    engine.dispose()


def payloads(engine: sa.Engine) -> list[str]:
    table = outbox_table()
    with engine.connect() as connection:
        return list(connection.execute(sa.select(table.c.payload).order_by(table.c.id)).scalars())


def test_writer_is_a_transactional_writer() -> None:
    """OutboxWriter satisfies the capture library's TransactionalWriter protocol."""
    assert isinstance(OutboxWriter(), TransactionalWriter)


def test_committed_rows_hold_the_events(engine: sa.Engine, event_factory: EventFactory) -> None:
    """In layout 1, committing writes one row per event with the routing columns and the JSON."""
    events = [event_factory(record_id=str(i), sequence=i) for i in range(3)]
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO items VALUES (1, 'a')"))
        OutboxWriter(layout=1).write(connection, events)
    table = outbox_table()
    with engine.connect() as connection:
        rows = connection.execute(sa.select(table).order_by(table.c.id)).all()
    assert [ChangeEvent.from_json(r.payload) for r in rows] == events
    first = rows[0]
    assert first.event_id == str(events[0].event_id)
    assert first.transaction_id == str(events[0].transaction_id)
    assert first.table_name == "users"
    assert first.record_id == "0"
    assert first.created_at.tzinfo is dt.UTC
    assert first.failed_at is None


def test_rolled_back_transaction_leaves_no_row(
    engine: sa.Engine, event_factory: EventFactory
) -> None:
    """Rows written in a transaction that rolls back disappear with the data."""
    connection = engine.connect()
    transaction = connection.begin()
    connection.execute(sa.text("INSERT INTO items VALUES (1, 'a')"))
    OutboxWriter().write(connection, [event_factory()])
    transaction.rollback()
    connection.close()
    assert payloads(engine) == []
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM items")).scalar_one() == 0


def test_rows_follow_the_sequence_order(engine: sa.Engine, event_factory: EventFactory) -> None:
    """Ids (layout 1) and array positions (layout 2) follow the events' sequence."""
    events = [event_factory(sequence=i) for i in range(5)]
    with engine.begin() as connection:
        OutboxWriter(layout=1).write(connection, list(reversed(events)))
    assert payloads(engine) == [e.to_json() for e in events]
    with engine.begin() as connection:
        OutboxWriter().write(connection, list(reversed(events)))
    assert payloads(engine)[5:] == ["[" + ",".join(e.to_json() for e in events) + "]"]


def test_large_transactions_are_inserted_in_bounded_chunks(
    engine: sa.Engine, event_factory: EventFactory
) -> None:
    """Chunks are cut by row count and by payload bytes; every row still lands, in order."""
    statements: list[int] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO sqla_audit_outbox"):
            statements.append(1)

    events = [event_factory(sequence=i, padding=1000) for i in range(10)]
    with engine.begin() as connection:
        OutboxWriter(layout=1, chunk_rows=4).write(connection, events)
        OutboxWriter(layout=1, chunk_bytes=2500).write(connection, events[:4])
    assert len(payloads(engine)) == 14
    assert len(statements) >= 3 + 2


def test_writing_nothing_is_a_no_op(engine: sa.Engine) -> None:
    """An empty event list issues no statement."""
    with engine.begin() as connection:
        OutboxWriter().write(connection, [])
    assert payloads(engine) == []


def test_writer_settings_are_validated() -> None:
    """Non-positive chunk sizes and unknown layouts are refused."""
    with pytest.raises(ValueError, match="positive"):
        OutboxWriter(chunk_rows=0)
    with pytest.raises(ValueError, match="positive"):
        OutboxWriter(events_per_row=0)
    with pytest.raises(ValueError, match="layout"):
        OutboxWriter(layout=3)


def test_table_joins_the_applications_metadata() -> None:
    """outbox_table adds itself to given metadata, once, with an optional schema."""
    metadata = sa.MetaData()
    table = outbox_table(metadata)
    assert outbox_table(metadata) is table
    assert table.name == DEFAULT_TABLE_NAME
    assert metadata.tables[DEFAULT_TABLE_NAME] is table
    other = outbox_table(metadata, name="audit_outbox", schema="audit")
    assert metadata.tables["audit.audit_outbox"] is other
    assert [c.name for c in table.columns] == [
        "id",
        "event_id",
        "transaction_id",
        "table_name",
        "record_id",
        "payload",
        "created_at",
        "failed_at",
        "last_error",
        "layout",
        "event_count",
    ]


def test_ddl_fits_each_backend() -> None:
    """Payload is LONGTEXT on MySQL/MariaDB, ids are BIGINT there and on PostgreSQL."""
    table = outbox_table()
    mysql_ddl = str(CreateTable(table).compile(dialect=mysql.dialect()))
    assert "payload LONGTEXT" in mysql_ddl
    assert "DATETIME(fsp=6)" in mysql_ddl or "DATETIME(6)" in mysql_ddl
    assert "id BIGINT NOT NULL AUTO_INCREMENT" in mysql_ddl
    pg_ddl = str(CreateTable(table).compile(dialect=postgresql.dialect()))
    assert "id BIGSERIAL" in pg_ddl
    assert "TIMESTAMP WITH TIME ZONE" in pg_ddl
    sqlite_ddl = str(CreateTable(table).compile(dialect=sqlite.dialect()))
    assert "id INTEGER NOT NULL" in sqlite_ddl


def test_create_table_is_idempotent(tmp_path: Path) -> None:
    """Creating the outbox table twice is harmless."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'x.db'}")
    create_outbox_table(engine)
    create_outbox_table(engine)
    assert sa.inspect(engine).has_table(DEFAULT_TABLE_NAME)
    engine.dispose()


def test_counts_and_requeue(engine: sa.Engine, event_factory: EventFactory) -> None:
    """outbox_counts splits pending from parked rows; requeue_parked makes them pending."""
    for _ in range(2):
        with engine.begin() as connection:
            OutboxWriter().write(connection, [event_factory()])
    table = outbox_table()
    with engine.begin() as connection:
        connection.execute(
            sa.update(table)
            .where(table.c.id == 1)
            .values(failed_at=dt.datetime.now(dt.UTC), last_error="x")
        )
    assert outbox_counts(engine) == (1, 1)
    assert requeue_parked(engine) == 1
    assert outbox_counts(engine) == (2, 0)


def test_utc_datetime_refuses_naive_values(engine: sa.Engine) -> None:
    """Timestamps must be timezone-aware; other zones are stored as UTC."""
    kind = UTCDateTime()
    with pytest.raises(ValueError, match="timezone-aware"):
        kind.process_bind_param(dt.datetime(2026, 1, 1), engine.dialect)
    paris = dt.timezone(dt.timedelta(hours=1))
    stored = kind.process_bind_param(dt.datetime(2026, 1, 1, 12, tzinfo=paris), engine.dialect)
    assert stored == dt.datetime(2026, 1, 1, 11)
    assert kind.process_bind_param(None, engine.dialect) is None
    assert kind.process_result_value(None, engine.dialect) is None


def test_chunks_count_payload_bytes_not_characters() -> None:
    """A non-ASCII payload counts its UTF-8 bytes against the chunk's byte budget."""
    writer = OutboxWriter(chunk_bytes=10)
    rows = [{"payload": "é" * 6}, {"payload": "é" * 6}]  # 6 characters, 12 bytes each
    assert [len(chunk) for chunk in writer._chunks(rows)] == [1, 1]
    ascii_rows = [{"payload": "a" * 4}, {"payload": "a" * 4}]
    assert [len(chunk) for chunk in writer._chunks(ascii_rows)] == [2]


def rows_of(engine: sa.Engine) -> list[Any]:
    table = outbox_table()
    with engine.connect() as connection:
        return list(connection.execute(sa.select(table).order_by(table.c.id)).all())


def test_a_transaction_is_one_row_holding_its_events_verbatim(
    engine: sa.Engine, event_factory: EventFactory
) -> None:
    """By default one transaction's events go into one layout-2 row: an array of their texts."""
    events = [event_factory(record_id=str(i), sequence=i) for i in range(3)]
    with engine.begin() as connection:
        OutboxWriter().write(connection, events)
    (row,) = rows_of(engine)
    assert (row.layout, row.event_count) == (LAYOUT_BATCH, 3)
    assert row.payload == "[" + ",".join(e.to_json() for e in events) + "]"
    assert [ChangeEvent.from_dict(item) for item in json.loads(row.payload)] == events
    assert (row.event_id, row.record_id) == (str(events[0].event_id), "0")
    assert row.transaction_id == str(events[0].transaction_id)
    assert outbox_tally(engine) == (3, 0, 1, 0)


def test_a_one_event_transaction_writes_a_plain_layout_1_row(
    engine: sa.Engine, event_factory: EventFactory
) -> None:
    """A single event is stored as before (layout 1, payload = the event JSON)."""
    event = event_factory()
    with engine.begin() as connection:
        OutboxWriter().write(connection, [event])
    (row,) = rows_of(engine)
    assert (row.layout, row.event_count, row.payload) == (LAYOUT_EVENT, 1, event.to_json())


def test_large_transactions_are_split_into_bounded_rows_in_order(
    engine: sa.Engine, event_factory: EventFactory
) -> None:
    """events_per_row and chunk_bytes bound a layout-2 row; the rows keep the sequence order."""
    events = [event_factory(sequence=i, padding=1000) for i in range(10)]
    with engine.begin() as connection:
        OutboxWriter(events_per_row=4).write(connection, events)
    assert [row.event_count for row in rows_of(engine)] == [4, 4, 2]
    with engine.begin() as connection:
        OutboxWriter(chunk_bytes=3100).write(connection, events[:4])  # two 1.5 KB events
    later = rows_of(engine)[3:]
    assert [row.event_count for row in later] == [2, 2]
    texts = [item for row in rows_of(engine)[:3] for item in json.loads(row.payload)]
    assert [ChangeEvent.from_dict(item) for item in texts] == events


def test_layout_1_writes_to_a_table_created_before_layout_2(
    tmp_path: Path, event_factory: EventFactory
) -> None:
    """layout=1 names no new column, so it works on an outbox table not migrated yet."""
    old = sa.Table(
        DEFAULT_TABLE_NAME,
        sa.MetaData(),
        *[c._copy() for c in outbox_table().columns if c.name not in ("layout", "event_count")],
    )
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'old.db'}")
    old.create(engine)
    with engine.begin() as connection:
        OutboxWriter(layout=1).write(connection, [event_factory(), event_factory(sequence=1)])
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(old)).scalar_one() == 2
    engine.dispose()
