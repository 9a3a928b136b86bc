"""The worker during a store outage: held batches, no receives spent, probing, slow messages."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from consumer.metrics import WorkerMetrics
from consumer.records import AuditRecord
from consumer.sinks.base import RecordRejected
from consumer.sinks.memory import MemoryStore
from consumer.sources.base import Message
from consumer.sources.memory import MemorySource
from consumer.testing import make_event
from consumer.worker import Worker
from sqla_audit.errors import StoreError


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``condition`` holds (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def gauge(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


class SwitchableStore(MemoryStore):
    """A memory store that is unreachable while ``down`` is set (every write: StoreError)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.failed_writes = 0

    def write(self, records: Iterable[AuditRecord]) -> None:
        if self.down.is_set():
            self.failed_writes += 1
            raise StoreError("connection refused (injected outage)")
        super().write(records)


class CountingSource(MemorySource):
    """A memory queue that remembers every delivery and every release delay."""

    def __init__(self, **kwargs: float | int | bool | None) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.deliveries: Counter[str] = Counter()
        self.release_delays: list[int] = []

    def receive(self, max_messages: int, wait: float) -> list[Message]:
        messages = super().receive(max_messages, wait)
        self.deliveries.update(m.message_id for m in messages)
        return messages

    def release(self, messages: Sequence[Message], visibility: int = 0) -> None:
        self.release_delays.extend(visibility for _ in messages)
        super().release(messages, visibility)


def make_worker(source: MemorySource, store: MemoryStore, **kwargs: float) -> Worker:
    options: dict[str, float] = {
        "concurrency": 3,
        "batch_size": 2,
        "wait_seconds": 0.05,
        "initial_backoff": 0.01,
        "max_backoff": 0.05,
    }
    options.update(kwargs)
    return Worker(source, store, **options)  # type: ignore[arg-type]


def test_an_outage_spends_no_delivery_attempts() -> None:
    """During an outage no message is re-received or released; all are written once after it."""
    source = CountingSource(visibility_timeout=30, max_receive_count=3)
    store = SwitchableStore()
    store.down.set()
    events = [make_event(record_id=str(i)) for i in range(12)]
    ids = [source.send(event.to_json()) for event in events]
    worker = make_worker(source, store)
    worker.start()
    try:
        wait_for(lambda: store.failed_writes >= 3)
        held = sum(source.deliveries.values())
        time.sleep(0.5)  # many probe periods of the outage
        assert sum(source.deliveries.values()) == held  # nobody receives while the store is down
        assert not worker.health()["ready"]
        store.down.clear()
        wait_for(lambda: source.pending == 0)
        wait_for(lambda: worker.health()["ready"])
    finally:
        worker.stop()
        assert worker.join(5)
    assert source.dead_letters == []
    assert sorted(r.event_id for r in store.records) == sorted(e.event_id for e in events)
    assert set(source.deliveries) == set(ids)
    assert set(source.deliveries.values()) == {1}
    assert source.release_delays == []


def test_a_held_batch_is_written_when_the_store_answers_again() -> None:
    """``process`` holds a batch through a store failure and acks it once a probe succeeds."""
    source = CountingSource(visibility_timeout=30)
    store = MemoryStore()
    source.send(make_event().to_json())
    worker = make_worker(source, store, concurrency=1)
    store.fail_next(3)
    result = worker.process(source.receive(10, 0))
    assert len(result.acked) == 1
    assert result.released == []
    assert len(store.records) == 1
    assert not worker.backoff.active
    assert source.deliveries == Counter({"m-1": 1})


def test_an_unexpected_store_error_is_held_like_an_outage() -> None:
    """A store bug (any exception) holds the batch and probes again; the worker never crashes."""
    source = MemorySource(visibility_timeout=30)
    store = MemoryStore()
    source.send(make_event().to_json())
    worker = make_worker(source, store, concurrency=1)
    store.fail_next(error=RuntimeError("boom"))
    result = worker.process(source.receive(10, 0))
    assert len(result.acked) == 1
    failures = worker.metrics.registry.get_sample_value(
        "sqla_audit_consumer_failures_total", {"kind": "internal"}
    )
    assert failures == 1


def test_shutdown_during_an_outage_releases_held_messages_at_once() -> None:
    """Stopping while the store is down hands the held messages back with visibility 0."""
    source = CountingSource(visibility_timeout=30)
    store = SwitchableStore()
    store.down.set()
    for i in range(4):
        source.send(make_event(record_id=str(i)).to_json())
    worker = make_worker(source, store, concurrency=2)
    worker.start()
    wait_for(lambda: store.failed_writes >= 2)
    worker.stop()
    assert worker.join(5)
    assert store.records == []
    assert source.release_delays
    assert set(source.release_delays) == {0}
    assert len(source.receive(10, 0)) == 4  # every message is visible again at once


def test_a_record_refused_after_the_outage_does_not_stall_the_worker() -> None:
    """A held batch the returning store refuses for good is rejected; consumption resumes."""

    class RefusesTable(SwitchableStore):
        def write(self, records: Iterable[AuditRecord]) -> None:
            batch = list(records)
            if not self.down.is_set() and any(r.table == "refused" for r in batch):
                raise RecordRejected("value out of range")
            super().write(batch)

    source = MemorySource(visibility_timeout=30, dlq=True)
    store = RefusesTable()
    store.down.set()
    source.send(make_event(table="refused").to_json())
    worker = make_worker(source, store, concurrency=2, batch_size=1)
    worker.start()
    try:
        wait_for(lambda: store.failed_writes >= 2)
        store.down.clear()
        wait_for(lambda: len(source.dead_letters) == 1)
        source.send(make_event(record_id="2").to_json())
        wait_for(lambda: len(store.records) == 1)
    finally:
        worker.stop()
        assert worker.join(5)
    assert "value out of range" in source.dead_letters[0][1]


def test_messages_held_without_progress_are_logged_and_measured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch held past the threshold gets a warning naming its ids and a message-age gauge."""
    source = MemorySource(visibility_timeout=30)
    store = SwitchableStore()
    store.down.set()
    message_id = source.send(make_event().to_json())
    worker = make_worker(source, store, concurrency=1, stall_warning_seconds=0.2)
    caplog.set_level(logging.WARNING, logger="consumer.worker")
    worker.start()
    try:
        wait_for(lambda: any(message_id in r.getMessage() for r in caplog.records))
        assert gauge(worker.metrics, "sqla_audit_consumer_oldest_in_flight_seconds") >= 0.2
        store.down.clear()
        wait_for(lambda: source.pending == 0)
        wait_for(lambda: gauge(worker.metrics, "sqla_audit_consumer_oldest_in_flight_seconds") == 0)
    finally:
        worker.stop()
        assert worker.join(5)
    lines = [r.getMessage() for r in caplog.records if message_id in r.getMessage()]
    assert all("without progress (store unavailable)" in line for line in lines)
    # the error every probe still gets is in the warning: an operator reads why, not only that
    assert all("last error: connection refused (injected outage)" in line for line in lines)


def test_a_persistent_unexpected_store_error_rejects_only_its_message() -> None:
    """A store bug that always fails one message's record never stalls the worker: its
    neighbours are written, and after a few probes that message alone is rejected."""

    class BuggyForOne(MemoryStore):
        def write(self, records: Iterable[AuditRecord]) -> None:
            batch = list(records)
            if any(r.record_id == "bad" for r in batch):
                raise TypeError("unsupported operand type(s)")  # a bug, not an outage
            super().write(batch)

    source = MemorySource(visibility_timeout=30)
    store = BuggyForOne()
    for record_id in ("1", "bad", "2"):
        source.send(make_event(record_id=record_id).to_json())
    worker = make_worker(source, store, concurrency=1)
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        outcome.append(worker.process(source.receive(10, 0)))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "the worker held the batch forever"
    (result,) = outcome
    assert sorted(r.record_id for r in store.records) == ["1", "2"]
    assert len(result.acked) == 2
    ((_message, reason),) = result.rejected
    assert "TypeError" in reason
    assert not worker.backoff.active
