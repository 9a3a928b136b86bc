"""The demo's consumer step, its history check and its publisher wrapper, in isolation."""

from __future__ import annotations

import pytest

from consumer.decoding import Decoder
from consumer.demo.runner import CountingPublisher, check_history, consume, history_table
from consumer.demo.scenario import ExpectedChange
from consumer.sinks.memory import MemoryStore
from consumer.sources.memory import MemorySource
from consumer.testing import make_event, make_record
from sqla_audit.errors import StoreError, TransportError
from sqla_audit.events import Operation
from sqla_audit.publishers.memory import InMemoryPublisher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_consume_writes_valid_messages_and_rejects_the_rest() -> None:
    """Valid events are written and acked; an undecodable message is rejected, not retried."""
    source = MemorySource(dlq=True)
    events = [make_event(record_id=str(i)) for i in range(12)]
    for event in events:
        source.send(event.to_json())
    source.send("{not json")
    store = MemoryStore()
    stats = consume(source, store, Decoder(), expected=None, timeout=60)
    assert (stats.messages, stats.events, stats.records) == (13, 12, 12)
    assert len(stats.rejected) == 1
    assert source.pending == 0
    assert len(source.dead_letters) == 1
    assert {r.event_id for r in store.records} == {e.event_id for e in events}


def test_consume_retries_a_failing_store() -> None:
    """A store failure releases the batch; the next attempt writes it."""
    source = MemorySource()
    source.send(make_event().to_json())
    store = MemoryStore()
    store.fail_next(2)
    pauses: list[float] = []
    stats = consume(source, store, Decoder(), expected=None, timeout=60, sleep=pauses.append)
    assert stats.records == 1
    assert len(pauses) == 2
    assert source.pending == 0


def test_consume_gives_up_on_a_store_that_stays_down() -> None:
    """After repeated store failures the store error is raised and the message kept."""
    source = MemorySource()
    source.send(make_event().to_json())
    store = MemoryStore()
    store.fail_next(10)
    with pytest.raises(StoreError):
        consume(source, store, Decoder(), expected=None, timeout=60, sleep=lambda _s: None)
    assert source.pending == 1


def test_consume_waits_for_every_expected_event() -> None:
    """With expected ids, events that never arrive end the wait with a TransportError."""
    source = MemorySource()
    arrived = make_event()
    source.send(arrived.to_json())
    clock = Clock()

    def receive_and_tick(max_messages: int, wait: float) -> list:  # type: ignore[type-arg]
        clock.now += 10
        return MemorySource.receive(source, max_messages, wait)

    source.receive = receive_and_tick  # type: ignore[method-assign]
    missing = make_event()
    with pytest.raises(TransportError, match="1 event"):
        consume(
            source,
            MemoryStore(),
            Decoder(),
            expected={arrived.event_id, missing.event_id},
            timeout=30,
            clock=clock,
        )


def test_consume_stops_once_the_expected_events_are_in() -> None:
    """Events that are not expected are stored too; the step ends when the expected ones are."""
    source = MemorySource()
    other, wanted = make_event(), make_event()
    source.send(other.to_json())
    source.send(wanted.to_json())
    store = MemoryStore()
    stats = consume(source, store, Decoder(), expected={wanted.event_id}, timeout=60)
    assert stats.events == 2
    assert len(store.records) == 2


def test_check_history_accepts_exactly_the_expected_changes() -> None:
    """Same operations, actors and changed columns, in order: no problem."""
    found = [
        make_record(operation=Operation.INSERT, actor="alice"),
        make_record(actor="bob"),
    ]
    expected = [
        ExpectedChange(Operation.INSERT, "alice"),
        ExpectedChange(Operation.UPDATE, "bob", frozenset({"balance"})),
    ]
    assert check_history(expected, found) is None


def test_check_history_names_what_differs() -> None:
    """A wrong actor, a missing or extra change, or other columns are reported."""
    insert = make_record(operation=Operation.INSERT, actor="alice")
    update = make_record(actor="bob")
    assert check_history([ExpectedChange(Operation.INSERT, "carol")], [insert]) == (
        "expected insert by carol; found insert by alice"
    )
    assert check_history([], [insert]) == "expected nothing; found insert by alice"
    assert check_history([ExpectedChange(Operation.INSERT, "alice")], []) == (
        "expected insert by alice; found nothing"
    )
    columns = check_history(
        [ExpectedChange(Operation.UPDATE, "bob", frozenset({"owner"}))], [update]
    )
    assert columns == "update by bob changed ['balance'], expected ['owner']"


def test_history_table_shows_old_and_new_values() -> None:
    """The table has one row per change with its time, operation, actor and old → new."""
    text = history_table([make_record(actor="bob")], arrow="->")
    header, rule, row = text.splitlines()
    assert header.split() == ["EVENT", "TIME", "OP", "ACTOR", "CHANGES"]
    assert set(rule) <= {"-", " "}
    assert row.split()[1:] == ["update", "bob", "balance:", "10", "->", "20"]


def test_counting_publisher_delegates_and_counts() -> None:
    """The wrapper passes events on unchanged and remembers their ids."""
    inner = InMemoryPublisher()
    counting = CountingPublisher(inner)
    events = [make_event(), make_event()]
    counting.publish(events)
    assert counting.flush(1)
    counting.close()
    assert inner.events == events
    assert inner.closed
    assert counting.event_ids == {e.event_id for e in events}
