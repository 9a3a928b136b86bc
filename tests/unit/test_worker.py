"""The worker over the in-memory source and store: outcomes, backoff, extension, shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from consumer.differ import deepdiff_detail
from consumer.metrics import WorkerMetrics
from consumer.records import AuditRecord, NestedChange
from consumer.sinks.base import RecordRejected
from consumer.sinks.memory import MemoryStore
from consumer.sources.base import Message
from consumer.sources.memory import MemorySource
from consumer.testing import make_event
from consumer.worker import Backoff, Worker
from sqla_audit.events import Operation
from sqla_audit.serialization import JSONValue


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``condition`` holds (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def counter(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


@pytest.fixture
def source() -> MemorySource:
    return MemorySource(visibility_timeout=30, dlq=True)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def worker(source: MemorySource, store: MemoryStore) -> Iterator[Worker]:
    made = Worker(source, store, concurrency=2, wait_seconds=0.05, max_backoff=0.2)
    yield made
    made.stop()
    made.join(5)


def receive_all(source: MemorySource) -> list[Message]:
    return source.receive(10, 0)


def test_valid_batch_is_written_then_acked(
    source: MemorySource, store: MemoryStore, worker: Worker
) -> None:
    """Every message of a good batch is written, then deleted."""
    events = [make_event(record_id=str(i)) for i in range(3)]
    for event in events:
        source.send(event.to_json())
    result = worker.process(receive_all(source))
    assert len(result.acked) == 3
    assert {r.event_id for r in store.records} == {e.event_id for e in events}
    assert source.pending == 0
    assert counter(worker.metrics, "sqla_audit_consumer_events_written_total") == 3


def test_a_key_change_writes_two_records_and_counts_one_event(
    source: MemorySource, store: MemoryStore, worker: Worker
) -> None:
    """A moving update writes its record and the old id's departure; redelivery adds nothing."""
    move = make_event(
        record_id="7",
        previous_record_id="1",
        before={"id": "1", "balance": 10},
        after={"id": "7", "balance": 10},
    )
    source.send(move.to_json())
    result = worker.process(receive_all(source))
    assert len(result.acked) == 1
    assert result.written == 1
    assert sorted((r.record_id, r.operation.value, r.moved_to) for r in store.records) == [
        ("1", "delete", "7"),
        ("7", "update", None),
    ]
    source.send(move.to_json())
    worker.process(receive_all(source))
    assert len(store.records) == 2
    assert counter(worker.metrics, "sqla_audit_consumer_events_written_total") == 2


POISON = [
    "not json",
    json.dumps({**make_event().to_dict(), "schema_version": 99}),
    json.dumps({k: v for k, v in make_event().to_dict().items() if k != "table"}),
    json.dumps(
        {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:other", "Message": "hi"}
    ),
]


def test_poison_never_holds_up_valid_messages(
    source: MemorySource, store: MemoryStore, worker: Worker
) -> None:
    """Poison messages are rejected one by one; the valid ones of the batch are acked."""
    good = [make_event(record_id=str(i)) for i in range(3)]
    source.send(good[0].to_json())
    for body in POISON:
        source.send(body)
    source.send(good[1].to_json())
    source.send(good[2].to_json())
    result = worker.process(receive_all(source))
    assert len(result.acked) == 3
    assert len(result.rejected) == len(POISON)
    assert {r.event_id for r in store.records} == {e.event_id for e in good}
    assert [body for body, _ in source.dead_letters] == POISON
    assert counter(worker.metrics, "sqla_audit_consumer_failures_total", kind="decode") == 4


def test_rejected_without_dlq_is_left_for_redrive(store: MemoryStore) -> None:
    """Without a DLQ a poison message stays in the queue until the redrive policy takes it."""
    source = MemorySource(visibility_timeout=30, dlq=False, max_receive_count=2)
    worker = Worker(source, store, concurrency=1)
    source.send("garbage")
    worker.process(receive_all(source))
    assert source.pending == 1
    source.make_visible()
    worker.process(receive_all(source))
    source.make_visible()
    assert receive_all(source) == []
    assert source.dead_letters == [("garbage", "max receive count")]


class RefusingStore(MemoryStore):
    """Refuses records of one table for good."""

    def write(self, records: Iterable[AuditRecord]) -> None:
        batch = list(records)
        if any(r.table == "refused" for r in batch):
            raise RecordRejected("too large")
        super().write(batch)


def test_permanent_store_refusal_splits_the_batch(source: MemorySource) -> None:
    """A record the store refuses for good rejects only its own message."""
    store = RefusingStore()
    worker = Worker(source, store, concurrency=1)
    source.send(make_event(record_id="1").to_json())
    source.send(make_event(table="refused").to_json())
    source.send(make_event(record_id="2").to_json())
    result = worker.process(receive_all(source))
    assert len(result.acked) == 2
    assert len(result.rejected) == 1
    assert "too large" in result.rejected[0][1]
    assert {r.record_id for r in store.records} == {"1", "2"}


def test_duplicate_delivery_writes_one_record(
    source: MemorySource, store: MemoryStore, worker: Worker
) -> None:
    """The same event delivered twice is stored once."""
    body = make_event().to_json()
    source.send(body)
    source.send(body)
    worker.process(receive_all(source))
    assert len(store.records) == 1


def test_noop_update_is_acked_without_writing(
    source: MemorySource, store: MemoryStore, worker: Worker
) -> None:
    """An update that changes nothing is acknowledged and writes nothing."""
    source.send(make_event(before={"id": "1"}, after={"id": "1"}).to_json())
    result = worker.process(receive_all(source))
    assert len(result.acked) == 1
    assert result.skipped == 1
    assert store.records == []
    assert store.write_calls == 0


def test_run_consumes_until_stopped(source: MemorySource, store: MemoryStore) -> None:
    """A running worker drains the queue with several pollers and stops with exit code 0."""
    worker = Worker(source, store, concurrency=3, batch_size=4, wait_seconds=0.05)
    events = [make_event(record_id=str(i), operation=Operation.INSERT) for i in range(40)]
    for event in events:
        source.send(event.to_json())
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()))
    thread.start()
    wait_for(lambda: len(store.records) == 40)
    assert worker.health()["alive"]
    worker.stop()
    thread.join(10)
    assert codes == [0]
    assert source.pending == 0
    assert not worker.health()["alive"]


def test_worker_survives_store_outage_and_resumes(source: MemorySource, store: MemoryStore) -> None:
    """While the store is down nothing is deleted; once it is back everything is written."""
    worker = Worker(
        source, store, concurrency=2, wait_seconds=0.05, initial_backoff=0.01, max_backoff=0.05
    )
    store.fail_next(5)
    events = [make_event(record_id=str(i)) for i in range(10)]
    for event in events:
        source.send(event.to_json())
    worker.start()
    try:
        wait_for(lambda: len(store.records) == 10)
        wait_for(lambda: source.pending == 0)
    finally:
        worker.stop()
        assert worker.join(5)
    assert counter(worker.metrics, "sqla_audit_consumer_failures_total", kind="store") >= 1


def test_receive_failures_do_not_stop_the_worker(source: MemorySource, store: MemoryStore) -> None:
    """Transport errors while receiving are retried."""
    worker = Worker(source, store, concurrency=1, wait_seconds=0.05, max_backoff=0.05)
    source.fail_receives(2)
    source.send(make_event().to_json())
    worker.start()
    try:
        wait_for(lambda: len(store.records) == 1)
    finally:
        worker.stop()
        worker.join(5)
    assert counter(worker.metrics, "sqla_audit_consumer_failures_total", kind="transport") == 2


class BlockingStore(MemoryStore):
    """Blocks every write until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.proceed = threading.Event()

    def write(self, records: Iterable[AuditRecord]) -> None:
        self.entered.set()
        self.proceed.wait(10)
        super().write(records)


def test_long_batches_get_their_visibility_extended() -> None:
    """A batch still processing after half the visibility timeout is extended."""
    source = MemorySource(visibility_timeout=1)
    store = BlockingStore()
    worker = Worker(source, store, concurrency=1, wait_seconds=0.05, visibility_timeout=1)
    message_id = source.send(make_event().to_json())
    worker.start()
    try:
        assert store.entered.wait(5)
        wait_for(lambda: message_id in source.extended)
        store.proceed.set()
        wait_for(lambda: source.pending == 0)
    finally:
        store.proceed.set()
        worker.stop()
        worker.join(5)


def test_shutdown_finishes_in_flight_batch_and_releases_late_messages() -> None:
    """On stop, the batch being written completes and is acked; later receipts are released."""
    source = MemorySource(visibility_timeout=30)
    store = BlockingStore()
    worker = Worker(source, store, concurrency=1, wait_seconds=0.05, batch_size=1)
    source.send(make_event(record_id="1").to_json())
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()))
    thread.start()
    assert store.entered.wait(5)
    source.send(make_event(record_id="2").to_json())
    worker.stop()
    store.proceed.set()
    thread.join(10)
    assert codes == [0]
    assert [r.record_id for r in store.records] == ["1"]
    assert source.pending == 1  # record 2 was never received, or was released at once
    assert receive_all(source)[0].receive_count >= 1


def test_messages_received_during_stop_are_released_with_zero_visibility() -> None:
    """A poll that returns after stop() releases its messages for other workers at once."""

    class StopOnReceive(MemorySource):
        worker: Worker

        def receive(self, max_messages: int, wait: float) -> list[Message]:
            messages = super().receive(max_messages, wait)
            if messages:
                self.worker.stop()
            return messages

    source = StopOnReceive(visibility_timeout=30)
    store = MemoryStore()
    worker = Worker(source, store, concurrency=1, wait_seconds=0.05)
    source.worker = worker
    source.send(make_event().to_json())
    assert worker.run() == 0
    assert store.records == []
    assert len(source.released) == 1
    assert len(receive_all(source)) == 1  # visible again immediately


def test_backoff_doubles_once_per_pause_and_caps() -> None:
    """Failures during a pause do not lengthen it; later ones double it up to the cap."""
    now = [0.0]
    backoff = Backoff(1.0, 4.0, clock=lambda: now[0])
    assert backoff.failure() == 1.0
    assert backoff.failure() == 1.0  # another poller, same outage
    now[0] = 1.5
    assert backoff.failure() == 2.0
    now[0] = 10.0
    assert backoff.failure() == 4.0
    now[0] = 20.0
    assert backoff.failure() == 4.0
    assert backoff.remaining() == 4.0
    backoff.success()
    assert not backoff.active
    assert backoff.remaining() == 0.0


def test_backoff_rejects_bad_bounds() -> None:
    """A backoff needs 0 < initial <= maximum."""
    with pytest.raises(ValueError, match="initial"):
        Backoff(0, 1)


def test_worker_rejects_bad_sizes(source: MemorySource, store: MemoryStore) -> None:
    """concurrency and batch_size must be positive."""
    with pytest.raises(ValueError, match="at least 1"):
        Worker(source, store, concurrency=0)


def test_the_nested_diff_can_be_chosen(source: MemorySource, store: MemoryStore) -> None:
    """``nested_diff`` is the function the worker's records get their nested detail from."""
    seen: list[JSONValue] = []

    def reference(old: JSONValue, new: JSONValue) -> tuple[NestedChange, ...]:
        seen.append(old)
        return deepdiff_detail(old, new)

    event = make_event(before={"id": "1", "doc": {"a": [1]}}, after={"id": "1", "doc": {"a": [2]}})
    source.send(event.to_json())
    result = Worker(source, store, nested_diff=reference).process(receive_all(source))
    assert len(result.acked) == 1
    assert seen == [{"a": [1]}]
    [record] = store.history(event.service, event.table, event.record_id).items
    assert record.changes["doc"].detail == (NestedChange("changed", ("a", 0), 1, 2),)
