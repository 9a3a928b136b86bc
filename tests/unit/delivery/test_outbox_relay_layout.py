"""The relay on rows of layout 2 (one row per transaction) and of layout 1, mixed, on SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import (
    LAYOUT_BATCH,
    OutboxWriter,
    create_outbox_table,
    outbox_counts,
    outbox_table,
    requeue_parked,
)
from sqla_audit.outbox.relay import OutboxRelay, RelayResult
from sqla_audit.publishers.sns import SNSSender
from sqla_audit.retry import RetryPolicy

TOPIC = "arn:aws:sns:us-east-1:123456789012:audit"
FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01)

EventFactory = Callable[..., ChangeEvent]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A SQLite file database with an empty outbox."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    yield engine
    engine.dispose()


def relay_for(engine: sa.Engine, client: Any, **kwargs: Any) -> OutboxRelay:
    kwargs.setdefault(
        "outage_retry", RetryPolicy(max_attempts=10**9, base_delay=0.001, max_delay=0.01)
    )
    return OutboxRelay(engine, SNSSender(TOPIC, client=client, retry=FAST), **kwargs)


def commit(engine: sa.Engine, events: Sequence[ChangeEvent], **writer: Any) -> None:
    with engine.begin() as connection:
        OutboxWriter(**writer).write(connection, events)


def ids(events: Sequence[ChangeEvent]) -> list[str]:
    return [str(e.event_id) for e in events]


def rows(engine: sa.Engine) -> list[Any]:
    table = outbox_table()
    with engine.connect() as connection:
        return list(connection.execute(sa.select(table).order_by(table.c.id)).all())


def insert_raw(engine: sa.Engine, payload: str, **values: Any) -> None:
    """A row as an older producer (layout columns left to their defaults) or a test wrote it."""
    row = {
        "event_id": "x",
        "transaction_id": "y",
        "table_name": "t",
        "record_id": "1",
        "payload": payload,
        "created_at": sa.func.now(),
        **values,
    }
    with engine.begin() as connection:
        connection.execute(outbox_table().insert().values(**row))


def test_a_transaction_row_is_published_event_by_event_in_order(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """Each event of a layout-2 row becomes one SNS message, its body the stored text verbatim."""
    events = [event_factory(record_id=str(i), sequence=i) for i in range(25)]
    commit(engine, events)
    assert len(rows(engine)) == 1
    result = relay_for(engine, fake_sns).run_once()
    assert result == RelayResult(published=25)
    assert fake_sns.accepted_ids == ids(events)
    assert [entry["Message"] for entry in fake_sns.accepted] == [e.to_json() for e in events]
    assert outbox_counts(engine) == (0, 0)


def test_rows_of_the_old_layout_are_relayed_beside_new_ones(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """Rows an older producer wrote (one event each, layout columns defaulted) go out in id
    order among layout-2 rows."""
    events = [event_factory(sequence=i) for i in range(7)]
    insert_raw(engine, events[0].to_json())
    commit(engine, events[1:4])
    insert_raw(engine, events[4].to_json())
    commit(engine, events[5:], layout=1)
    assert [row.layout for row in rows(engine)] == [1, LAYOUT_BATCH, 1, 1, 1]
    assert outbox_counts(engine) == (7, 0)
    assert relay_for(engine, fake_sns).drain().published == 7
    assert fake_sns.accepted_ids == ids(events)


def test_one_refused_event_is_parked_alone_and_the_others_go_on(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """An event SNS refuses for good gets a parked row of its own; the rest of its
    transaction's row is published and the row deleted; requeue sends it later."""
    events = [event_factory(record_id=str(i), sequence=i) for i in range(5)]
    commit(engine, events)
    fake_sns.entry_failures[str(events[2].event_id)] = [("InvalidParameter", True)]
    relay = relay_for(engine, fake_sns)
    result = relay.run_once()
    assert result == RelayResult(published=4, parked=1)
    assert result.parked_rows[0].event_id == str(events[2].event_id)
    (parked,) = rows(engine)
    assert parked.payload == events[2].to_json()
    assert (parked.layout, parked.event_count) == (1, 1)
    assert (parked.event_id, parked.record_id) == (str(events[2].event_id), "2")
    assert "InvalidParameter" in parked.last_error
    assert outbox_counts(engine) == (0, 1)
    assert requeue_parked(engine) == 1
    assert relay.run_once() == RelayResult(published=1)
    assert fake_sns.accepted_ids == ids(events[:2] + events[3:] + events[2:3])


def test_events_sns_did_not_take_stay_alone_in_their_row(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """When SNS takes only part of a row, the row keeps just the events it did not take
    (same id), so the next pass publishes no duplicate."""
    events = [event_factory(sequence=i) for i in range(6)]
    commit(engine, events)
    fake_sns.entry_failures[str(events[1].event_id)] = [("InternalError", False)] * 2
    fake_sns.entry_failures[str(events[4].event_id)] = [("InternalError", False)] * 2
    relay = relay_for(engine, fake_sns)
    first_id = rows(engine)[0].id
    assert relay.run_once() == RelayResult(published=4, deferred=2)
    (row,) = rows(engine)
    assert (row.id, row.layout, row.event_count) == (first_id, LAYOUT_BATCH, 2)
    assert row.payload == f"[{events[1].to_json()},{events[4].to_json()}]"
    assert row.event_id == str(events[1].event_id)
    assert outbox_counts(engine) == (2, 0)
    assert relay.run_once() == RelayResult(published=2)
    assert sorted(fake_sns.accepted_ids) == sorted(ids(events))


def test_an_unreadable_event_is_parked_alone(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """An array element that is not an event is parked in its own row; its neighbours go out."""
    events = [event_factory(sequence=i) for i in range(2)]
    payload = f'[{events[0].to_json()}, {{"event_id": 5}} ,{events[1].to_json()}]'
    insert_raw(engine, payload, layout=LAYOUT_BATCH, event_count=3)
    result = relay_for(engine, fake_sns).run_once()
    assert result == RelayResult(published=2, parked=1)
    assert fake_sns.accepted_ids == ids(events)
    (parked,) = rows(engine)
    assert parked.payload == '{"event_id": 5}'
    assert "undecodable" in parked.last_error


def test_a_row_whose_array_cannot_be_read_is_parked_whole(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """A layout-2 payload that is not a JSON array is parked as it is, nothing published."""
    text = event_factory().to_json()
    insert_raw(engine, f"[{text},{text[:40]}", layout=LAYOUT_BATCH, event_count=2)
    result = relay_for(engine, fake_sns).run_once()
    assert result == RelayResult(parked=1)
    assert fake_sns.calls == []
    (parked,) = rows(engine)
    assert parked.payload == f"[{text},{text[:40]}"
    assert parked.event_count == 2
    assert outbox_counts(engine) == (0, 2)


def test_a_row_of_an_unknown_layout_is_parked(engine: sa.Engine, fake_sns: Any) -> None:
    """A layout this relay does not know (a newer producer) is parked, not guessed at."""
    insert_raw(engine, "[]", layout=9)
    assert relay_for(engine, fake_sns).run_once() == RelayResult(parked=1)
    assert "unknown layout" in rows(engine)[0].last_error


def test_pass_counts_rows_against_batch_size(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """batch_size counts rows: a pass takes whole transactions, never part of a row."""
    batches = [[event_factory(sequence=i) for i in range(4)] for _ in range(3)]
    for batch in batches:
        commit(engine, batch)
    relay = relay_for(engine, fake_sns, batch_size=2)
    assert relay.run_once().published == 8
    assert relay.drain().published == 4
    assert fake_sns.accepted_ids == [i for batch in batches for i in ids(batch)]


def test_stored_arrays_may_hold_whitespace(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """Readers accept any JSON array layout (whitespace around elements); bodies exclude it."""
    events = [event_factory(sequence=i) for i in range(2)]
    payload = " [\n " + " ,\n ".join(json.dumps(json.loads(e.to_json())) for e in events) + "\n] "
    insert_raw(engine, payload, layout=LAYOUT_BATCH, event_count=2)
    relay_for(engine, fake_sns).run_once()
    assert [entry["Message"] for entry in fake_sns.accepted] == [
        json.dumps(json.loads(e.to_json())) for e in events
    ]


def test_passes_take_fewer_rows_when_rows_hold_many_events(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """After a pass of 50-event rows, the relay asks for pass_events / 50 rows per pass."""
    batches = [[event_factory(sequence=i) for i in range(50)] for _ in range(14)]
    for batch in batches:
        commit(engine, batch)
    relay = relay_for(engine, fake_sns, batch_size=10, pass_events=100)
    assert [relay.run_once().published for _ in range(3)] == [500, 100, 100]
    assert relay.pass_rows == 2
    assert relay.drain().published == 0
    assert fake_sns.accepted_ids == [i for batch in batches for i in ids(batch)]
