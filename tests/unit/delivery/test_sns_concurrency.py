"""Concurrent PublishBatch calls: several in flight, one per FIFO message group, order kept."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.sns import OutgoingMessage, SNSPublisher, SNSSender
from sqla_audit.retry import RetryPolicy
from tests.unit.delivery.conftest import (
    BOTH_SNS_PATHS,
    FAST_OUTAGE,
    FIFO_TOPIC,
    TOPIC,
    EventFactory,
    publishers,
)

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
SNS_PATHS = BOTH_SNS_PATHS


class InFlight:
    """An ``on_call`` hook for the SNS double: holds each call briefly and records overlap."""

    def __init__(self, hold: float = 0.01) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.current: list[list[dict[str, Any]]] = []
        self.peak = 0
        self.shared_groups: list[str] = []

    def __call__(self, entries: list[dict[str, Any]]) -> None:
        groups = {e.get("MessageGroupId") for e in entries} - {None}
        with self.lock:
            for other in self.current:
                for entry in other:
                    if entry.get("MessageGroupId") in groups:
                        self.shared_groups.append(str(entry["MessageGroupId"]))
            self.current.append(entries)
            self.peak = max(self.peak, len(self.current))
        time.sleep(self.hold)
        with self.lock:
            self.current.remove(entries)


@pytest.fixture
def make_publisher(fake_sns: Any) -> Iterator[Callable[..., SNSPublisher]]:
    """Publishers on the SNS double, closed after the test."""
    with publishers(client=fake_sns, retry=FAST, outage_retry=FAST_OUTAGE) as make:
        yield make


def by_record(ids: Sequence[str], events: Sequence[ChangeEvent]) -> dict[str, list[str]]:
    record_of = {str(e.event_id): e.record_id for e in events}
    out: dict[str, list[str]] = defaultdict(list)
    for event_id in ids:
        out[record_of[event_id]].append(event_id)
    return dict(out)


def interleaved(event_factory: EventFactory, records: int, per_record: int) -> list[ChangeEvent]:
    return [
        event_factory(record_id=str(r), sequence=n)
        for n in range(per_record)
        for r in range(records)
    ]


def test_standard_topic_keeps_several_batches_in_flight(
    make_publisher: Callable[..., SNSPublisher], fake_sns: Any, event_factory: EventFactory
) -> None:
    """On a standard topic up to max_concurrency PublishBatch calls run at once."""
    watch = InFlight()
    fake_sns.on_call = watch
    publisher = make_publisher(max_concurrency=4)
    events = [event_factory(record_id=str(i)) for i in range(200)]
    for start in range(0, 200, 20):
        publisher.publish(events[start : start + 20])
    assert publisher.flush(10)
    assert 1 < watch.peak <= 4
    assert sorted(fake_sns.accepted_ids) == sorted(str(e.event_id) for e in events)
    stats = publisher.stats()
    assert (stats.delivered, stats.dropped, stats.queued) == (200, 0, 0)


def test_fifo_topic_runs_groups_in_parallel_and_keeps_each_group_in_order(
    make_publisher: Callable[..., SNSPublisher], fake_sns: Any, event_factory: EventFactory
) -> None:
    """FIFO: calls overlap, but never two in flight with the same message group; order kept."""
    watch = InFlight()
    fake_sns.on_call = watch
    publisher = make_publisher(FIFO_TOPIC, max_concurrency=4)
    events = interleaved(event_factory, records=12, per_record=25)
    for start in range(0, len(events), 30):
        publisher.publish(events[start : start + 30])
    assert publisher.flush(10)
    assert watch.peak > 1
    assert watch.shared_groups == []
    assert by_record(fake_sns.accepted_ids, events) == by_record(
        [str(e.event_id) for e in events], events
    )


def test_fifo_retry_resends_the_entry_and_keeps_every_group_in_order(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """FIFO with lanes: a throttled entry is resent once, every group stays in order."""
    sender = SNSSender(FIFO_TOPIC, client=fake_sns, retry=FAST, max_concurrency=4)
    assert sender.send([OutgoingMessage.from_event(event_factory(record_id="warm"))]).complete
    events = interleaved(event_factory, records=8, per_record=10)
    messages = [OutgoingMessage.from_event(e) for e in events]
    throttled = messages[-8]  # record 0's last event
    fake_sns.entry_failures[throttled.event_id] = [("Throttled", True)]
    outcome = sender.send(messages, sleep=lambda _: False)
    assert outcome.complete
    assert outcome.accepted == messages
    accepted = fake_sns.accepted_ids[1:]
    assert sorted(accepted) == sorted(m.event_id for m in messages)
    assert by_record(accepted, events) == by_record([m.event_id for m in messages], events)
    tried = [c for c in fake_sns.calls if throttled.event_id in map(fake_sns.event_id_of, c)]
    assert len(tried) == 2


def test_outage_spool_drains_with_concurrency_keeping_record_order(
    make_publisher: Callable[..., SNSPublisher],
    fake_sns: Any,
    event_factory: EventFactory,
    tmp_path: Path,
) -> None:
    """After an outage the spool drains through concurrent calls; nothing lost, order per record."""
    fake_sns.down = True
    publisher = make_publisher(FIFO_TOPIC, spool=tmp_path / "spool", max_concurrency=4)
    events = interleaved(event_factory, records=10, per_record=30)
    for start in range(0, len(events), 25):
        publisher.publish(events[start : start + 25])
    deadline = time.monotonic() + 10
    while publisher.stats().spooled < len(events) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert publisher.stats().spooled == len(events)
    watch = InFlight(hold=0.005)
    fake_sns.on_call = watch
    fake_sns.down = False
    assert publisher.flush(10)
    assert watch.peak > 1
    assert watch.shared_groups == []
    assert by_record(fake_sns.accepted_ids, events) == by_record(
        [str(e.event_id) for e in events], events
    )
    assert publisher.stats().delivered == len(events)


def test_max_concurrency_must_be_positive(fake_sns: Any) -> None:
    """A sender or publisher with no call in flight is a configuration error."""
    with pytest.raises(ValueError, match="max_concurrency"):
        SNSSender(TOPIC, client=fake_sns, max_concurrency=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        SNSPublisher(TOPIC, client=fake_sns, max_concurrency=0, register_atexit=False)


def test_an_unparsable_response_is_retried_not_raised(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """A connection cut mid-response (botocore cannot parse it) is a retryable failure."""
    from botocore.parsers import ResponseParserError  # noqa: PLC0415

    fake_sns.call_errors.append(ResponseParserError("Unable to parse response: b''"))
    messages = [OutgoingMessage.from_event(event_factory(record_id=str(i))) for i in range(3)]
    outcome = SNSSender(TOPIC, client=fake_sns, retry=FAST).send(messages, sleep=lambda _: False)
    assert outcome.accepted == messages
    assert len(fake_sns.calls) == 2


@pytest.mark.parametrize(
    "text",
    ["plain", "a b+c&d=e%f", '{"k": "é", "n": [1, 2]}\n\t~_.-', "\U0001f600 ☃", "", "\x00\x7f"],
)
def test_form_body_is_what_urlencode_gives(text: str) -> None:
    """The request body encoder matches urllib's urlencode byte for byte."""
    from urllib.parse import urlencode  # noqa: PLC0415

    from sqla_audit.publishers.sns import form_encode  # noqa: PLC0415

    fields = {"Action": "PublishBatch", "Entries.member.1.Message": text, "N": 3}
    assert form_encode(fields) == urlencode(fields).encode("ascii")


def test_idle_call_workers_end() -> None:
    """The sender's worker threads run concurrent calls, then end once left idle."""
    from sqla_audit.publishers.call_pool import CallPool  # noqa: PLC0415

    pool = CallPool(4, idle_exit=0.05)
    seen: set[int] = set()

    def call(n: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.02)
        return n * 2

    assert pool.map(call, [1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
    assert len(seen) > 1
    deadline = time.monotonic() + 5
    while pool.workers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.workers == 0
    assert pool.map(call, [1, 2]) == [2, 4]  # new workers start on demand


def test_an_unreachable_endpoint_gets_one_probe_per_attempt(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """With calls in parallel, a down endpoint still sees one call per attempt, not a wave."""
    fake_sns.down = True
    messages = [OutgoingMessage.from_event(event_factory(record_id=str(i))) for i in range(45)]
    sender = SNSSender(TOPIC, client=fake_sns, retry=FAST, max_concurrency=4)
    outcome = sender.send(messages, sleep=lambda _: False)
    assert outcome.undelivered == messages
    assert len(fake_sns.calls) == FAST.max_attempts


def test_a_slow_call_does_not_hold_back_the_next_batches(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """Calls form a pipeline: while one batch waits, the free slot sends the batches after it."""
    messages = [OutgoingMessage.from_event(event_factory(record_id=str(i))) for i in range(40)]
    first, last = messages[0].body, messages[-1].body
    last_sent = threading.Event()
    waited: list[bool] = []

    def hold_the_first(entries: list[dict[str, Any]]) -> None:
        bodies = {entry["Message"] for entry in entries}
        if last in bodies:
            last_sent.set()
        if first in bodies:
            waited.append(last_sent.wait(5))

    fake_sns.on_call = hold_the_first
    sender = SNSSender(TOPIC, client=fake_sns, max_concurrency=2, retry=FAST)
    warm_up = OutgoingMessage.from_event(event_factory())
    sender.send([warm_up])  # the endpoint is known to answer: no probe batch
    outcome = sender.send(messages)
    assert len(outcome.accepted) == 40
    assert waited == [True]
