"""The embedded outbox source on rows holding a whole transaction (layout 2), on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from consumer.sinks.memory import MemoryStore
from consumer.sources.outbox import OutboxSource
from consumer.testing import make_event
from consumer.worker import Worker
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.outbox import (
    LAYOUT_BATCH,
    OutboxWriter,
    create_outbox_table,
    outbox_counts,
    outbox_table,
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    made = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(made)
    yield made
    made.dispose()


@pytest.fixture
def source(engine: sa.Engine) -> Iterator[OutboxSource]:
    made = OutboxSource(engine, poll_interval=0.01)
    yield made
    made.close()


def transaction(count: int, first: int = 0) -> list[ChangeEvent]:
    return [
        make_event(operation=Operation.INSERT, record_id=str(first + i), sequence=i)
        for i in range(count)
    ]


def write(engine: sa.Engine, events: list[ChangeEvent], **writer: Any) -> None:
    with engine.begin() as connection:
        OutboxWriter(**writer).write(connection, events)


def rows(engine: sa.Engine) -> list[Any]:
    table = outbox_table()
    with engine.connect() as connection:
        return list(connection.execute(sa.select(table).order_by(table.c.id)).all())


def test_a_transaction_row_is_handed_out_event_by_event(
    engine: sa.Engine, source: OutboxSource
) -> None:
    """Each event of a layout-2 row is one message: its id, its table and record, its text."""
    written = transaction(4)
    write(engine, written)
    messages = source.receive(10, 0)
    assert [m.message_id for m in messages] == [str(e.event_id) for e in written]
    assert [m.body for m in messages] == [e.to_json() for e in written]
    assert [m.attributes["record_id"] for m in messages] == ["0", "1", "2", "3"]
    assert len({m.handle for m in messages}) == 4


def test_the_row_is_deleted_only_when_all_its_events_are_stored(
    engine: sa.Engine, source: OutboxSource
) -> None:
    """Acking some events of a row keeps it; acking the last one deletes it."""
    write(engine, transaction(3))
    messages = source.receive(10, 0)
    source.ack(messages[:2])
    assert outbox_counts(engine) == (3, 0)
    source.ack(messages[2:])
    assert outbox_counts(engine) == (0, 0)


def test_a_released_event_comes_back_without_the_stored_ones(
    engine: sa.Engine, source: OutboxSource
) -> None:
    """Stored events leave the row; a released one stays in it and is delivered again."""
    written = transaction(3)
    write(engine, written)
    first, second, third = source.receive(10, 0)
    source.ack([first, third])
    source.release([second], 0)
    (row,) = rows(engine)
    assert (row.event_count, row.payload) == (1, written[1].to_json())
    (again,) = source.receive(10, 0)
    assert again.message_id == str(written[1].event_id)
    assert again.receive_count == 2


def test_one_rejected_event_is_parked_alone(engine: sa.Engine, source: OutboxSource) -> None:
    """A rejected event gets a parked row of its own; its neighbours are stored and gone."""
    written = transaction(3)
    write(engine, written)
    first, second, third = source.receive(10, 0)
    source.reject([second], "store said no")
    source.ack([first, third])
    (parked,) = rows(engine)
    assert parked.payload == written[1].to_json()
    assert (parked.event_id, parked.record_id) == (str(written[1].event_id), "1")
    assert parked.last_error == "store said no"
    assert outbox_counts(engine) == (0, 1)
    assert source.receive(10, 0) == []


def test_worker_stores_a_transaction_and_parks_its_poison_event(engine: sa.Engine) -> None:
    """Through the worker: the good events of a row are stored once, the bad one is parked."""
    good = transaction(3)
    texts = [e.to_json() for e in good]
    poison = json.loads(texts[1])
    poison["schema_version"] = 99
    texts[1] = json.dumps(poison)
    table = outbox_table()
    with engine.begin() as connection:
        connection.execute(
            table.insert().values(
                event_id=str(good[0].event_id),
                transaction_id=str(good[0].transaction_id),
                table_name="accounts",
                record_id="0",
                payload="[" + ",".join(texts) + "]",
                created_at=good[0].committed_at,
                layout=LAYOUT_BATCH,
                event_count=3,
            )
        )
    write(engine, transaction(2, first=10), layout=1)  # rows as an older producer wrote them
    source = OutboxSource(engine)
    store = MemoryStore()
    worker = Worker(source, store, concurrency=1, wait_seconds=0)
    try:
        result = worker.process(source.receive(10, 0))
    finally:
        source.close()
    assert len(result.acked) == 4
    assert len(result.rejected) == 1
    assert sorted(r.record_id for r in store.records) == ["0", "10", "11", "2"]
    (parked,) = rows(engine)
    assert parked.payload == texts[1]
    assert outbox_counts(engine) == (0, 1)


def test_one_event_rows_keep_their_row_event_id_as_message_id(
    engine: sa.Engine, source: OutboxSource
) -> None:
    """A layout-1 row is one message named by its event_id column, as before transaction
    rows: two rows holding the same event are two messages, and both are settled."""
    event = make_event(operation=Operation.INSERT, record_id="1")
    table = outbox_table()
    with engine.begin() as connection:
        for row_event_id in ("row-a", "row-b"):
            connection.execute(
                table.insert(),
                {
                    "event_id": row_event_id,
                    "transaction_id": str(event.transaction_id),
                    "table_name": event.table,
                    "record_id": event.record_id,
                    "payload": event.to_json(),
                    "created_at": event.committed_at,
                },
            )
    messages = source.receive(10, 0)
    assert [m.message_id for m in messages] == ["row-a", "row-b"]
    result = Worker(source, MemoryStore(), batch_size=10, concurrency=1).process(messages)
    assert sorted(m.message_id for m in result.acked) == ["row-a", "row-b"]
    assert outbox_counts(engine) == (0, 0)
