"""The direct-mode SNS publisher: non-blocking publish, background delivery, spool on outage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.base import Publisher
from sqla_audit.publishers.sns import (
    PublisherClosedError,
    QueueFullError,
    SNSPublisher,
    SNSRejectedError,
)
from sqla_audit.publishers.spool import EventSpool, SpoolFullError
from sqla_audit.retry import RetryPolicy
from tests.unit.delivery.conftest import (
    BOTH_SNS_PATHS,
    FAST_OUTAGE,
    TOPIC,
    EventFactory,
    publishers,
)

FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01)
SNS_PATHS = BOTH_SNS_PATHS


class ErrorLog:
    def __init__(self) -> None:
        self.calls: list[tuple[BaseException, list[ChangeEvent]]] = []
        self.lock = threading.Lock()

    def __call__(self, error: BaseException, events: Sequence[ChangeEvent]) -> None:
        with self.lock:
            self.calls.append((error, list(events)))

    @property
    def events(self) -> list[ChangeEvent]:
        with self.lock:
            return [e for _, evs in self.calls for e in evs]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


@pytest.fixture
def errors() -> ErrorLog:
    """Collects on_error calls."""
    return ErrorLog()


@pytest.fixture
def make_publisher(fake_sns: Any, errors: ErrorLog) -> Iterator[Callable[..., SNSPublisher]]:
    """Factory for publishers on the fake SNS; all are closed after the test."""
    with publishers(client=fake_sns, retry=FAST, outage_retry=FAST_OUTAGE, on_error=errors) as make:
        yield make


def ids(events: Sequence[ChangeEvent]) -> list[str]:
    return [str(e.event_id) for e in events]


def test_is_a_publisher(make_publisher: Callable[..., SNSPublisher]) -> None:
    """SNSPublisher satisfies the Publisher protocol."""
    assert isinstance(make_publisher(), Publisher)


def test_published_events_arrive_in_order(
    make_publisher: Callable[..., SNSPublisher], fake_sns: Any, event_factory: EventFactory
) -> None:
    """With one call in flight, events of successive commits are delivered in publish order."""
    publisher = make_publisher(max_concurrency=1)
    events = [event_factory(record_id=str(i)) for i in range(120)]
    for start in range(0, 120, 7):
        publisher.publish(events[start : start + 7])
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids(events)
    stats = publisher.stats()
    assert (stats.accepted, stats.delivered, stats.queued, stats.dropped) == (120, 120, 0, 0)


def test_publish_does_not_wait_for_the_network(
    make_publisher: Callable[..., SNSPublisher], fake_sns: Any, event_factory: EventFactory
) -> None:
    """publish() returns while SNS is still answering the previous batch."""
    release = threading.Event()
    fake_sns.on_call = lambda entries: release.wait(10)
    publisher = make_publisher()
    publisher.publish([event_factory()])
    wait_until(lambda: len(fake_sns.calls) == 1)
    publisher.publish([event_factory()])  # the sender thread is blocked in publish_batch
    assert publisher.stats().queued == 2
    release.set()
    assert publisher.flush(10)


def test_outage_spills_to_the_spool_and_recovers_in_order(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
    errors: ErrorLog,
) -> None:
    """While SNS is down events go to the spool; when it is back they arrive in order."""
    fake_sns.down = True
    publisher = make_publisher(spool=tmp_path / "spool", max_batch_events=10)
    events = [event_factory(record_id=str(i)) for i in range(60)]
    publisher.publish(events[:30])
    wait_until(lambda: publisher.stats().spooled == 30)
    assert not publisher.flush(0.05)
    publisher.publish(events[30:])
    wait_until(lambda: publisher.stats().spooled == 60)
    assert publisher.stats().spool_bytes > 0
    fake_sns.down = False
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids(events)
    assert publisher.stats().spool_bytes == 0
    assert errors.calls == []


def test_full_queue_spills_on_the_callers_thread(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """With a full queue, publish() writes to the spool itself, and order is still kept."""
    release = threading.Event()
    fake_sns.on_call = lambda entries: release.wait(10)
    publisher = make_publisher(spool=tmp_path / "spool", max_queue_events=5, max_batch_events=3)
    events = [event_factory(record_id=str(i)) for i in range(20)]
    publisher.publish(events[:3])
    wait_until(lambda: len(fake_sns.calls) == 1)
    for event in events[3:]:
        publisher.publish([event])
    assert publisher.stats().spooled > 0
    release.set()
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids(events)


def test_full_queue_without_spool_drops_and_reports(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    errors: ErrorLog,
) -> None:
    """Without a spool, events that do not fit the queue go to on_error and are counted."""
    release = threading.Event()
    fake_sns.on_call = lambda entries: release.wait(10)
    publisher = make_publisher(max_queue_events=2, max_batch_events=1)
    publisher.publish([event_factory()])
    wait_until(lambda: len(fake_sns.calls) == 1)
    publisher.publish([event_factory(), event_factory()])
    overflow = [event_factory()]
    publisher.publish(overflow)
    assert isinstance(errors.calls[0][0], QueueFullError)
    assert errors.events == overflow
    assert publisher.stats().dropped == 1
    release.set()
    assert publisher.flush(10)


def test_outage_without_spool_reports_undelivered_events(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    errors: ErrorLog,
) -> None:
    """Without a spool, events still undelivered after the retry budget reach on_error."""
    fake_sns.down = True
    publisher = make_publisher()
    events = [event_factory() for _ in range(3)]
    publisher.publish(events)
    assert publisher.flush(10)
    assert errors.events == events
    assert publisher.stats().dropped == 3


def test_rejected_event_is_reported_and_does_not_block_others(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    errors: ErrorLog,
) -> None:
    """A permanently refused event goes to on_error; the rest are delivered."""
    events = [event_factory() for _ in range(3)]
    fake_sns.entry_failures[str(events[1].event_id)] = [("InvalidParameter", True)]
    publisher = make_publisher()
    publisher.publish(events)
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids([events[0], events[2]])
    ((error, reported),) = errors.calls
    assert isinstance(error, SNSRejectedError)
    assert reported == [events[1]]
    assert publisher.stats().rejected == 1


def test_rejection_from_the_spool_is_reported_with_the_event(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    errors: ErrorLog,
    tmp_path: Path,
) -> None:
    """An event refused while the spool drains is decoded back for on_error."""
    events = [event_factory() for _ in range(3)]
    fake_sns.down = True
    publisher = make_publisher(spool=tmp_path / "spool")
    publisher.publish(events)
    wait_until(lambda: publisher.stats().spooled == 3)
    fake_sns.entry_failures[str(events[0].event_id)] = [("InvalidParameter", True)]
    fake_sns.down = False
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids(events[1:])
    assert errors.events == events[:1]


def test_partial_failure_in_the_spool_is_not_resent_twice(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """Entries accepted in a partly failed spool batch are not published again."""
    events = [event_factory() for _ in range(4)]
    fake_sns.down = True
    publisher = make_publisher(spool=tmp_path / "spool")
    publisher.publish(events)
    wait_until(lambda: publisher.stats().spooled == 4)
    fake_sns.entry_failures[str(events[2].event_id)] = [("Throttled", True)] * 5
    fake_sns.down = False
    assert publisher.flush(10)
    assert sorted(fake_sns.accepted_ids) == sorted(ids(events))
    assert len(fake_sns.accepted_ids) == 4


def test_close_then_restart_delivers_what_was_spooled(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """Closing during an outage keeps events in the spool; the next publisher sends them."""
    spool_dir = tmp_path / "spool"
    fake_sns.down = True
    first = make_publisher(spool=spool_dir)
    events = [event_factory() for _ in range(5)]
    first.publish(events)
    first.close(timeout=0.2)
    assert fake_sns.accepted_ids == []
    fake_sns.down = False
    second = make_publisher(spool=spool_dir)
    assert second.flush(10)
    assert fake_sns.accepted_ids == ids(events)


def test_publish_after_close_is_reported(
    make_publisher: Callable[..., SNSPublisher], event_factory: EventFactory, errors: ErrorLog
) -> None:
    """Events published after close() go to on_error instead of vanishing; close is idempotent."""
    publisher = make_publisher()
    publisher.close()
    publisher.close()
    late = [event_factory()]
    publisher.publish(late)
    ((error, reported),) = errors.calls
    assert isinstance(error, PublisherClosedError)
    assert reported == late


def test_spool_full_is_reported_and_counted(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    errors: ErrorLog,
    tmp_path: Path,
) -> None:
    """When the spool itself is full the remaining events go to on_error as dropped."""
    fake_sns.down = True
    spool = EventSpool(tmp_path / "spool", max_bytes=2000)
    publisher = make_publisher(spool=spool)
    events = [event_factory() for _ in range(10)]
    publisher.publish(events)
    wait_until(lambda: publisher.stats().dropped > 0)
    stats = publisher.stats()
    assert stats.spooled + stats.dropped == 10
    assert all(isinstance(error, SpoolFullError) for error, _ in errors.calls)
    assert errors.events == events[stats.spooled :]


def test_a_failing_error_hook_never_reaches_the_application(
    make_publisher: Callable[..., SNSPublisher], fake_sns: Any, event_factory: EventFactory
) -> None:
    """An on_error hook that raises is logged and ignored."""

    def explode(error: BaseException, events: Sequence[ChangeEvent]) -> None:
        raise RuntimeError("hook bug")

    fake_sns.down = True
    publisher = make_publisher(on_error=explode, max_queue_events=1)
    publisher.publish([event_factory(), event_factory()])  # queue full, no spool: hook raises
    assert publisher.stats().dropped == 2


def test_publish_never_raises_on_bad_input(
    make_publisher: Callable[..., SNSPublisher], errors: ErrorLog, tmp_path: Path
) -> None:
    """Something that is not an event cannot make publish() raise; it is reported."""
    publisher = make_publisher(spool=tmp_path / "spool", max_queue_events=1)
    publisher.publish([object(), object()])  # type: ignore[list-item]
    wait_until(lambda: bool(errors.calls))
    publisher.publish([])
    assert publisher.flush(5)


def test_close_is_registered_at_interpreter_exit(
    fake_sns: Any, monkeypatch: pytest.MonkeyPatch, event_factory: EventFactory
) -> None:
    """With register_atexit the publisher closes at exit, and unregisters when closed."""
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr("atexit.unregister", registered.remove)
    errors = ErrorLog()
    at_exit = SNSPublisher(TOPIC, client=fake_sns, retry=FAST, on_error=errors)
    (hook,) = registered
    at_exit.publish([event_factory()])
    hook()  # what the interpreter does at exit
    assert len(fake_sns.accepted) == 1
    at_exit.publish([event_factory()])
    assert isinstance(errors.calls[0][0], PublisherClosedError)
    registered.clear()
    closed = SNSPublisher(TOPIC, client=fake_sns, retry=FAST)
    assert len(registered) == 1
    closed.close()
    assert registered == []


def test_invalid_settings_are_refused(fake_sns: Any) -> None:
    """A zero-sized queue or batch is refused at construction."""
    with pytest.raises(ValueError, match="max_queue_events"):
        SNSPublisher(TOPIC, client=fake_sns, max_queue_events=0, register_atexit=False)
    with pytest.raises(ValueError, match="max_batch_events"):
        SNSPublisher(TOPIC, client=fake_sns, max_batch_events=0, register_atexit=False)


def test_events_published_during_an_outage_reach_the_spool_promptly(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """Between outage probes, new events are moved to the spool instead of waiting in memory."""
    fake_sns.down = True
    slow_probes = RetryPolicy(max_attempts=10**9, base_delay=60.0, max_delay=60.0)
    publisher = make_publisher(spool=tmp_path / "spool", outage_retry=slow_probes)
    publisher.publish([event_factory()])
    wait_until(lambda: publisher.stats().spooled == 1)
    wait_until(lambda: len(fake_sns.calls) >= 4)  # first batch + first probe of the spool
    publisher.publish([event_factory(), event_factory()])
    wait_until(lambda: publisher.stats().spooled == 3)
    assert publisher.stats().queued == 0


def test_hard_cap_below_the_soft_cap_is_refused(fake_sns: Any) -> None:
    """max_queue_hard smaller than max_queue_events is refused at construction."""
    with pytest.raises(ValueError, match="max_queue_hard"):
        SNSPublisher(
            TOPIC, client=fake_sns, max_queue_events=10, max_queue_hard=9, register_atexit=False
        )


class BlockingSpool(EventSpool):
    """A spool whose appends wait for ``release`` holding the spool's lock, as a slow fsync."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, fsync=False)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.writers: list[str] = []

    def append(self, records: Sequence[bytes]) -> int:
        with self._lock:
            self.writers.append(threading.current_thread().name)
            self.entered.set()
            if not self.release.wait(10):
                raise AssertionError("the test never released the spool")
            return super().append(records)


def _block_sender_in_spool_append(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    events: Sequence[ChangeEvent],
    spool: BlockingSpool,
    **settings: Any,
) -> SNSPublisher:
    """Publish events[0] (in flight while SNS is held), then events[1:] past the soft cap of
    5, then let SNS answer: the sender moves the queue to the spool and blocks in append."""
    sns_gate = threading.Event()
    fake_sns.on_call = lambda entries: sns_gate.wait(10)
    publisher = make_publisher(spool=spool, max_queue_events=5, max_batch_events=1, **settings)
    publisher.publish(events[:1])
    wait_until(lambda: len(fake_sns.calls) == 1)
    for event in events[1:]:
        publisher.publish([event])
    assert spool.writers == []
    sns_gate.set()
    assert spool.entered.wait(10)
    return publisher


def test_publish_does_no_spool_io_below_the_hard_cap(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """Past the soft cap, publish() only queues: it returns while the sender is stuck in append."""
    spool = BlockingSpool(tmp_path / "spool")
    events = [event_factory(record_id=str(i)) for i in range(40)]
    publisher = _block_sender_in_spool_append(
        make_publisher, fake_sns, events[:8], spool, max_queue_hard=50
    )

    def publish_more() -> None:
        for event in events[8:]:
            publisher.publish([event])

    producer = threading.Thread(target=publish_more)
    producer.start()
    producer.join(10)  # a publish() waiting for the spool would never return before release
    assert not producer.is_alive()
    assert spool.writers == [publisher._thread.name]  # only the sender thread wrote
    spool.release.set()
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids(events)
    assert all(name == publisher._thread.name for name in spool.writers)


def test_flush_waits_for_a_spill_in_progress(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """Events taken out of the queue but not yet on disk keep flush() from reporting idle."""
    spool = BlockingSpool(tmp_path / "spool")
    events = [event_factory(record_id=str(i)) for i in range(8)]
    publisher = _block_sender_in_spool_append(make_publisher, fake_sns, events, spool)
    assert not publisher.flush(0.05)  # the queue is empty, but 7 events are being written
    spool.release.set()
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids(events)
    assert publisher.stats().queued == 0


def test_caller_spill_past_the_hard_cap_keeps_order(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """A publish() past the hard cap waits for the sender's spill and writes after it."""
    spool = BlockingSpool(tmp_path / "spool")
    events = [event_factory(record_id=str(i)) for i in range(30)]
    # events[0] in flight, events[1:7] being written by the sender (6 in the backlog).
    publisher = _block_sender_in_spool_append(
        make_publisher, fake_sns, events[:7], spool, max_queue_hard=10
    )

    def publish_past_the_hard_cap() -> None:
        for event in events[7:12]:  # the fifth makes 5 queued + 6 being written > 10
            publisher.publish([event])

    caller = threading.Thread(target=publish_past_the_hard_cap, name="caller")
    caller.start()
    caller.join(0.2)
    assert caller.is_alive()  # back-pressure: its spill waits for the sender's older one
    spool.release.set()
    caller.join(10)
    assert not caller.is_alive()
    for event in events[12:]:
        publisher.publish([event])
    assert publisher.flush(10)
    assert fake_sns.accepted_ids == ids(events)
    assert publisher.stats().dropped == 0


def test_spill_io_errors_are_reported_not_raised(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    errors: ErrorLog,
    tmp_path: Path,
) -> None:
    """A disk error while spilling reports the events as dropped; publish() does not raise."""

    class BrokenSpool(EventSpool):
        def append(self, records: Sequence[bytes]) -> int:
            raise OSError("disk on fire")

    fake_sns.down = True
    publisher = make_publisher(
        spool=BrokenSpool(tmp_path / "spool"), max_queue_events=2, max_queue_hard=2
    )
    events = [event_factory(record_id=str(i)) for i in range(3)]
    publisher.publish(events)  # past the hard cap at once: spilled on this thread
    assert publisher.stats().dropped == 3
    assert [type(error) for error, _ in errors.calls] == [OSError]
    assert errors.events == events


def test_events_published_while_the_spool_drains_are_not_spooled(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """With SNS answering, new events wait in memory behind the draining backlog, in order."""
    backlog = [event_factory(record_id=str(n)) for n in range(30)]
    with EventSpool(tmp_path / "spool") as spool:
        spool.append([e.to_json().encode() for e in backlog])
    release = threading.Event()
    fake_sns.on_call = lambda entries: release.wait(10)
    publisher = make_publisher(spool=tmp_path / "spool", max_concurrency=1, max_batch_events=10)
    later = [event_factory(record_id=str(n)) for n in range(30, 50)]
    publisher.publish(later[:10])
    publisher.publish(later[10:])
    release.set()
    assert publisher.flush(10)
    stats = publisher.stats()
    assert (stats.delivered, stats.spooled, stats.spool_bytes) == (50, 0, 0)
    assert fake_sns.accepted_ids == ids(backlog + later)
