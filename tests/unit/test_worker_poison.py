"""Poison messages (records a store refuses for good) never hold up their batch, any source."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from consumer.metrics import WorkerMetrics
from consumer.records import AuditRecord
from consumer.sinks.base import RecordRejected
from consumer.sinks.memory import MemoryStore
from consumer.sources.base import Message
from consumer.sources.memory import MemorySource
from consumer.sources.outbox import OutboxSource
from consumer.testing import make_event
from consumer.worker import Worker
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table

#: a store's refusal whose text holds what no queue attribute or text column accepts
HOSTILE_REASON = "value out of range: '\ud800' \x00 \x07 end"


class RefusingStore(MemoryStore):
    """Refuses, for good, every write that holds a record of the table ``refused``."""

    def write(self, records: Iterable[AuditRecord]) -> None:
        batch = list(records)
        if any(r.table == "refused" for r in batch):
            raise RecordRejected(HOSTILE_REASON)
        super().write(batch)


def counter(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def is_clean(text: str) -> bool:
    """Text every source can keep: no surrogates, no control characters but tab/newline."""
    return all(ch in "\t\n\r" or unicodedata.category(ch) not in ("Cs", "Cc", "Cn") for ch in text)


def mixed_batch() -> list[ChangeEvent]:
    """Nine valid events with one poison event in the middle."""
    good = [make_event(operation=Operation.INSERT, record_id=str(i)) for i in range(9)]
    return [*good[:4], make_event(table="refused", record_id="p"), *good[4:]]


def test_a_refused_record_never_holds_up_its_batch_on_any_delivery() -> None:
    """Each time the poison message comes back, the rest of its batch is written and acked."""
    source = MemorySource(visibility_timeout=30, max_receive_count=3)  # redrive, no DLQ
    store = RefusingStore()
    worker = Worker(source, store, concurrency=1, batch_size=10)
    batch = mixed_batch()
    for event in batch:
        source.send(event.to_json())
    for _ in range(3):
        result = worker.process(source.receive(10, 0))
        assert len(result.rejected) == 1
        assert result.released == []
        for event in mixed_batch()[:3]:  # new valid events keep arriving beside the poison
            source.send(event.to_json())
            batch.append(event)
        source.make_visible()
    while messages := source.receive(10, 0):
        worker.process(messages)
    assert source.receive(10, 0) == []
    valid = {e.event_id for e in batch if e.table != "refused"}
    assert {r.event_id for r in store.records} == valid
    assert len(source.dead_letters) == 1  # the queue's redrive policy took the poison
    assert counter(worker.metrics, "sqla_audit_consumer_failures_total", kind="rejected") == 3


def test_the_reject_reason_is_clean_text() -> None:
    """A refusal whose text holds surrogates or control characters reaches the DLQ readable."""
    reasons: list[str] = []

    class Recording(MemorySource):
        def reject(self, messages: Sequence[Message], reason: str) -> None:
            reasons.append(reason)
            super().reject(messages, reason)

    source = Recording(visibility_timeout=30, dlq=True)
    worker = Worker(source, RefusingStore(), concurrency=1)
    source.send(make_event(table="refused").to_json())
    worker.process(source.receive(10, 0))
    [reason] = reasons
    assert is_clean(reason)
    assert "value out of range" in reason
    assert "\\ud800" in reason  # escaped, not dropped


@pytest.fixture
def outbox_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    made = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(made)
    yield made
    made.dispose()


def test_outbox_poison_row_is_parked_and_its_batch_stored(outbox_engine: sa.Engine) -> None:
    """consume --source outbox: the refused row is parked with its reason, never retried;
    every other row of its batch is stored and deleted."""
    batch = mixed_batch()
    with outbox_engine.begin() as connection:
        OutboxWriter().write(connection, batch)
    source = OutboxSource(outbox_engine)
    store = RefusingStore()
    worker = Worker(source, store, concurrency=1, batch_size=10, wait_seconds=0)
    try:
        for _ in range(3):  # a second and third pass find nothing to retry
            while messages := source.receive(10, 0):
                worker.process(messages)
    finally:
        source.close()
    assert outbox_counts(outbox_engine) == (0, 1)
    assert {r.event_id for r in store.records} == {
        e.event_id for e in batch if e.table != "refused"
    }
    table = outbox_table()
    with outbox_engine.connect() as connection:
        [(event_id, error)] = connection.execute(
            select(table.c.event_id, table.c.last_error).where(table.c.failed_at.is_not(None))
        ).all()
    assert event_id == str(batch[4].event_id)
    assert "value out of range" in error
    assert counter(worker.metrics, "sqla_audit_consumer_failures_total", kind="rejected") == 1


def test_the_outbox_source_parks_a_row_whatever_the_reason(outbox_engine: sa.Engine) -> None:
    """A reason the database could not store as given is parked escaped, not lost."""
    with outbox_engine.begin() as connection:
        OutboxWriter().write(connection, [make_event()])
    source = OutboxSource(outbox_engine)
    try:
        source.reject(source.receive(10, 0), HOSTILE_REASON)
        assert source.receive(10, 0) == []
    finally:
        source.close()
    assert outbox_counts(outbox_engine) == (0, 1)


def test_a_conflicting_duplicate_is_rejected_and_counted_as_a_conflict() -> None:
    """A store conflict (same event id, other content) rejects only that message, counted apart."""
    from consumer.sinks.base import RecordConflict  # noqa: PLC0415

    class Conflicting(MemoryStore):
        def write(self, records: Iterable[AuditRecord]) -> None:
            batch = list(records)
            for record in batch:
                if record.table == "forged":
                    raise RecordConflict("stored with other content", record.event_id)
            super().write(batch)

    source = MemorySource(visibility_timeout=30, dlq=True)
    worker = Worker(source, Conflicting(), concurrency=1)
    source.send(make_event(record_id="1").to_json())
    source.send(make_event(table="forged").to_json())
    result = worker.process(source.receive(10, 0))
    assert len(result.acked) == 1
    assert len(result.rejected) == 1
    assert counter(worker.metrics, "sqla_audit_consumer_failures_total", kind="conflict") == 1
    assert counter(worker.metrics, "sqla_audit_consumer_failures_total", kind="rejected") == 0
