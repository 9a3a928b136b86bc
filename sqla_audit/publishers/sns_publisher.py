"""Direct-mode publishing: :class:`SNSPublisher`, a bounded queue in front of an
:class:`~sqla_audit.publishers.sns_sender.SNSSender`, spilling to a local spool."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Final

from sqla_audit import shutdown
from sqla_audit.delivery import report_failure
from sqla_audit.errors import (
    DecodeError,
    PublisherClosedError,
    QueueFullError,
    TransportError,
)
from sqla_audit.events import ChangeEvent
from sqla_audit.limits import SNS_MAX_BATCH_ENTRIES
from sqla_audit.publishers.base import ErrorHook
from sqla_audit.publishers.offload import S3Offloader
from sqla_audit.publishers.sns_messages import OutgoingMessage
from sqla_audit.publishers.sns_sender import SNSSender, Transport
from sqla_audit.publishers.spool import EventSpool, SpoolFullError
from sqla_audit.retry import RetryPolicy

log = logging.getLogger(__name__)

#: Events serialized and written to the spool at a time when a queue spills.
_SPILL_CHUNK_EVENTS: Final = 500

#: Full batches per call in flight that the sender thread takes from the queue (or the
#: spool) at a time: the calls of a round form one pipeline, and a larger round leaves
#: fewer pauses between rounds.
_ROUND_BATCHES_PER_CALL: Final = 4

#: ``PublishBatch`` calls the direct-mode publisher keeps in flight at most, by default.
DEFAULT_MAX_CONCURRENCY: Final = 16

#: The direct-mode publisher's pause between probes while SNS is unreachable: short enough
#: that the first send after the endpoint's return comes within about 1.5 s.
DEFAULT_OUTAGE_RETRY: Final = RetryPolicy(max_attempts=1_000_000_000, base_delay=0.5, max_delay=1.5)


@dataclass(frozen=True, slots=True)
class _Deferred:
    """Queued events not built yet: ``build()`` makes ``count`` of them."""

    count: int
    build: Callable[[], Sequence[ChangeEvent]]


def _rows(item: ChangeEvent | _Deferred) -> int:
    return item.count if isinstance(item, _Deferred) else 1


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters of an :class:`SNSPublisher` since it started (events, not messages)."""

    accepted: int
    delivered: int
    spooled: int
    rejected: int
    dropped: int
    queued: int
    spool_bytes: int


class SNSPublisher:
    """Direct-mode publisher: bounded queue, background sender thread, local spool.

    ``publish()`` costs a lock and a deque append while the queue has room. During an
    outage (SNS unreachable past ``retry``) or once the queue holds more than
    ``max_queue_events``, events are written to ``spool`` by the sender thread, and from
    then on every new event follows them through the spool, so order is kept. The sender
    re-tries the spool's head with ``outage_retry`` backoff until SNS answers, then empties
    the spool before returning to the in-memory path.

    Spilling never holds the publisher's lock: the events are taken out of the queue under
    it (a swap) and serialized and written afterwards, so ``publish()`` does not wait for
    the disk. Only when the queue reaches ``max_queue_hard`` (default twice
    ``max_queue_events``) because the sender cannot keep up -- it is inside a blocking
    network call -- does ``publish()`` write to the spool itself (back-pressure, which
    keeps memory bounded). Spill batches are written in the order they left the queue,
    whichever thread writes them.

    Without a spool, events that cannot be delivered (or do not fit in the queue) are
    reported to ``on_error`` and counted as ``dropped``.

    Throughput: the sender thread takes ``max_batch_events`` events at a time (default four
    full batches per call in flight) and sends them with up to ``max_concurrency``
    ``PublishBatch`` calls at once (see :class:`SNSSender`; FIFO topics keep one batch per
    message group in flight). The spool is drained the same way; while it drains and SNS
    answers, newly published events wait in memory (up to ``max_queue_events``) and follow
    once the spool is empty, so the drain does not also write, read and decode the load
    that keeps coming.
    """

    def __init__(
        self,
        topic_arn: str,
        *,
        client: Any = None,
        sender: SNSSender | None = None,
        fifo: bool | None = None,
        offloader: S3Offloader | None = None,
        spool: EventSpool | str | PathLike[str] | None = None,
        max_queue_events: int = 10_000,
        max_queue_hard: int | None = None,
        max_batch_events: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        outage_retry: RetryPolicy | None = None,
        on_error: ErrorHook | None = None,
        close_timeout: float = 10.0,
        register_atexit: bool = True,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        transport: Transport = "lean",
    ) -> None:
        if max_queue_events < 1:
            raise ValueError("max_queue_events must be at least 1")
        hard = 2 * max_queue_events if max_queue_hard is None else max_queue_hard
        if hard < max_queue_events:
            raise ValueError(
                f"max_queue_hard ({hard}) must be at least max_queue_events ({max_queue_events})"
            )
        if max_batch_events is not None and max_batch_events < 1:
            raise ValueError("max_batch_events must be at least 1")
        self._sender = sender or SNSSender(
            topic_arn,
            client=client,
            fifo=fifo,
            offloader=offloader,
            retry=retry,
            region_name=region_name,
            endpoint_url=endpoint_url,
            max_concurrency=max_concurrency,
            transport=transport,
        )
        self._spool = EventSpool(spool) if isinstance(spool, str | PathLike) else spool
        self._max_queue = max_queue_events
        self._max_queue_hard = hard
        # One round of the sender: a full batch for every call it may have in flight.
        self._max_batch = (
            _ROUND_BATCHES_PER_CALL * SNS_MAX_BATCH_ENTRIES * self._sender.max_concurrency
            if max_batch_events is None
            else max_batch_events
        )
        self._outage_retry = outage_retry or DEFAULT_OUTAGE_RETRY
        self._on_error = on_error
        self._close_timeout = close_timeout

        self._cond = threading.Condition()
        self._queue: deque[ChangeEvent | _Deferred] = deque()
        self._queued = 0  # events in the queue (a deferred item counts its events)
        self._inflight = 0
        self._spilling = self._spool is not None and not self._spool.empty
        # Spilling outside the lock: batches taken out of the queue wait here (oldest first)
        # until a thread holding ``_spill_lock`` writes them; ``_spill_backlog`` counts their
        # events until they are on disk, so flush() and stats() still see them.
        self._spill_pending: deque[tuple[int, deque[ChangeEvent | _Deferred]]] = deque()
        self._spill_seq = 0
        self._spill_backlog = 0
        self._spill_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._stop = threading.Event()
        self._window_done: set[str] = set()  # event ids of the spool head already accepted
        self._outage_attempt = 0
        self._counts = {"accepted": 0, "delivered": 0, "spooled": 0, "rejected": 0, "dropped": 0}

        self._thread = threading.Thread(
            target=self._run, name=f"sqla-audit-sns-{topic_arn.rsplit(':', 1)[-1]}", daemon=True
        )
        self._thread.start()
        self._atexit_registered = register_atexit
        if register_atexit:
            atexit.register(self._close_at_exit)
            shutdown.track(self)  # flush_publishers() and the signal flush include it

    # -- Publisher protocol -----------------------------------------------------------------

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Queue the events of one committed transaction; never blocks on the network."""
        if events:
            self._enqueue(events, len(events))

    def publish_deferred(self, count: int, build: Callable[[], Sequence[ChangeEvent]]) -> None:
        """Queue ``count`` events that ``build()`` makes, on the sender thread.

        For the capture library: the envelopes of a transaction are built (and serialized)
        off the application's thread, which only hands over its captured changes. ``count``
        is what the memory bound counts; ``build`` reports its own failures (and then
        returns fewer events, counted as rejected).
        """
        if count > 0:
            self._enqueue((_Deferred(count, build),), count)

    def _enqueue(self, items: Sequence[ChangeEvent | _Deferred], count: int) -> None:
        try:
            with self._cond:
                if self._closed:
                    self._drop_items(PublisherClosedError("the SNS publisher is closed"), items)
                    return
                self._counts["accepted"] += count
                held = self._queued + count
                # Memory holds the queue and the events on their way to the spool.
                if held <= self._max_queue and held + self._spill_backlog <= self._max_queue_hard:
                    self._queue.extend(items)
                    self._queued = held
                    self._cond.notify_all()
                    return
                if self._spool is None:
                    self._drop_items(
                        QueueFullError(
                            f"the SNS publisher queue is full ({self._max_queue} events) "
                            "and no spool is configured"
                        ),
                        items,
                    )
                    return
                # Past the soft cap: from now on events go through the spool. The sender
                # thread writes them; this thread only does when the sender is behind by
                # more than the hard cap (back-pressure).
                self._spilling = True
                self._queue.extend(items)
                self._queued = held
                self._cond.notify_all()
                if held + self._spill_backlog <= self._max_queue_hard:
                    return
                seq = self._take_queue_locked()
            self._write_spill(seq)
        except Exception as exc:  # noqa: BLE001 -- publish() never raises into application code
            self._report(exc, [item for item in items if isinstance(item, ChangeEvent)])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted event is delivered, rejected or dropped."""
        with self._cond:
            return self._cond.wait_for(self._idle_locked, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` seconds, stop the thread, spool what is left."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        budget = self._close_timeout if timeout is None else timeout
        self.flush(budget)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(max(budget, 1.0))
        seq: int | None = None
        with self._cond:
            self._closed = True
            if self._queue:
                if self._spool is not None:
                    seq = self._take_queue_locked()
                else:
                    leftover = list(self._queue)
                    self._queue.clear()
                    self._queued = 0
                    self._drop_items(
                        TransportError("SNS publisher closed before delivery"), leftover
                    )
            self._cond.notify_all()
        if seq is not None:
            self._write_spill(seq)
        if self._spool is not None:
            with self._cond:  # a caller past the hard cap may still be writing its spill
                self._cond.wait_for(lambda: not self._spill_backlog, max(budget, 1.0))
        if self._spool is not None and not self._thread.is_alive():
            self._spool.close()
        if self._atexit_registered:
            atexit.unregister(self._close_at_exit)
            self._atexit_registered = False
        shutdown.untrack(self)

    # -- observability -------------------------------------------------------------------

    def stats(self) -> PublisherStats:
        # The spool's size is read outside the publisher's lock: the spool's own lock may be
        # held by a write in progress, and publish() must not queue up behind it.
        spool_bytes = self._spool.size_bytes if self._spool is not None else 0
        with self._cond:
            return PublisherStats(
                queued=self._queued + self._inflight + self._spill_backlog,
                spool_bytes=spool_bytes,
                **self._counts,
            )

    # -- internals ------------------------------------------------------------------------

    def _close_at_exit(self) -> None:
        self._atexit_registered = False
        self.close(self._close_timeout)

    def _idle_locked(self) -> bool:
        # ``_spilling`` stays set while the spool may hold events: only the sender clears it,
        # after finding the spool empty with nothing queued or on its way to the spool. Not
        # asking the spool here keeps flush() from holding the publisher's lock while the
        # spool's lock is held by a write.
        return (
            not self._queue
            and not self._inflight
            and not self._spill_backlog
            and not self._spilling
        )

    def _report(self, error: BaseException, events: Sequence[ChangeEvent]) -> None:
        report_failure(error, events, self._on_error)

    def _drop(self, error: BaseException, events: Sequence[ChangeEvent]) -> None:
        self._counts["dropped"] += len(events)
        self._report(error, events)

    def _drop_items(self, error: BaseException, items: Sequence[ChangeEvent | _Deferred]) -> None:
        """Drop queued items (lock held); deferred ones are built to be reported."""
        events, failed = self._expand(items)
        self._counts["rejected"] += failed
        self._drop(error, events)

    @staticmethod
    def _expand(items: Sequence[ChangeEvent | _Deferred]) -> tuple[list[ChangeEvent], int]:
        """The events of queued items, building deferred ones; and how many failed to build."""
        events: list[ChangeEvent] = []
        failed = 0
        for item in items:
            if isinstance(item, _Deferred):
                built = item.build()
                failed += max(0, item.count - len(built))
                events.extend(built)
            else:
                events.append(item)
        return events, failed

    def _take_queue_locked(self) -> int:
        """Hand the whole queue over for spilling; return its batch number. Lock held.

        O(1): the deque is swapped, not copied. The events stay counted (``_spill_backlog``)
        until :meth:`_write_spill` has put them on disk.
        """
        if self._queue:
            self._spill_seq += 1
            batch, self._queue = self._queue, deque()
            self._spill_pending.append((self._spill_seq, batch))
            self._spill_backlog += self._queued
            self._queued = 0
        return self._spill_seq

    def _write_spill(self, upto: int) -> None:
        """Write the handed-over batches numbered up to ``upto`` to the spool, oldest first.

        Called without the publisher's lock. ``_spill_lock`` makes one thread at a time
        write, and batches leave ``_spill_pending`` in the order they entered it, so the
        sender's spill and a caller's spill (past the hard cap) never interleave: whoever
        gets the lock first also writes the older batches of the other.
        """
        with self._spill_lock:
            while True:
                with self._cond:
                    if not self._spill_pending or self._spill_pending[0][0] > upto:
                        return
                    _, batch = self._spill_pending.popleft()
                self._write_batch(batch)

    def _write_batch(self, batch: deque[ChangeEvent | _Deferred]) -> None:
        """Serialize and append one spill batch, in chunks; count and report what fails."""
        assert self._spool is not None
        # In chunks, so serialized copies of a whole queue never coexist in memory; the
        # events of a written chunk are released at once.
        while batch:
            items: list[ChangeEvent | _Deferred] = []
            rows = 0
            while batch and rows < _SPILL_CHUNK_EVENTS:
                item = batch.popleft()
                items.append(item)
                rows += _rows(item)
            chunk, unbuilt = self._expand(items)
            records: list[bytes] = []
            kept: list[ChangeEvent] = []
            bad: list[tuple[BaseException, ChangeEvent]] = []
            for event in chunk:
                try:
                    records.append(event.to_json().encode("utf-8"))
                except Exception as exc:  # noqa: BLE001 -- a bad event must not stop the others
                    bad.append((exc, event))
                else:
                    kept.append(event)
            written = 0
            failure: BaseException | None = None
            try:
                written = self._spool.append(records) if records else 0
            except SpoolFullError as exc:
                written, failure = exc.written, exc
            except Exception as exc:  # noqa: BLE001 -- disk errors are reported, not raised
                failure = exc
            lost = kept[written:]
            # Reported before they stop counting as pending, so flush() returns after the hook.
            for error, event in bad:
                self._report(error, [event])
            if failure is not None:
                self._report(failure, lost)
            with self._cond:
                self._spill_backlog -= rows
                self._counts["spooled"] += written
                self._counts["rejected"] += len(bad) + unbuilt
                self._counts["dropped"] += len(lost)
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception as exc:  # never let the thread die: report and carry on
                log.exception("sqla-audit: unexpected error in the SNS sender thread")
                self._report(exc, [])
                if self._stop.wait(1.0):
                    return

    def _step(self) -> bool:
        """One unit of work; False when the thread should exit."""
        items: list[ChangeEvent | _Deferred] = []
        seq = 0
        with self._cond:
            while not self._queue and not self._spilling and not self._closing:
                self._cond.wait()
            if self._stop.is_set():
                return False
            spilling = self._spilling
            if spilling:
                seq = self._spill_seq
                # While SNS answers, events published during the drain wait in memory, as
                # on the direct path, and go out once the spool is empty -- rather than
                # being written, fsync-ed, read back and decoded on the way. During an
                # outage, past the soft cap or when closing they follow the backlog
                # through the spool.
                if self._outage_attempt or self._queued >= self._max_queue or self._closing:
                    seq = self._take_queue_locked()
            elif self._queue:
                taken = 0
                while self._queue and taken < self._max_batch:
                    item = self._queue.popleft()
                    items.append(item)
                    taken += _rows(item)
                self._queued -= taken
                self._inflight = taken
            elif self._closing:
                # Idle and closing: wait for close() to set the stop flag.
                self._cond.wait(0.1)
                return not self._stop.is_set()
            else:
                return True
        if spilling:
            self._write_spill(seq)
            self._drain_spool_step()
        else:
            # Deferred envelopes are built here, on the sender thread, outside the lock.
            batch, unbuilt = self._expand(items)
            if unbuilt:
                with self._cond:
                    self._counts["rejected"] += unbuilt
            self._send_inflight(batch)
        return True

    def _send_inflight(self, batch: list[ChangeEvent]) -> None:
        messages: list[OutgoingMessage] = []
        events_by_id: dict[str, ChangeEvent] = {}
        for event in batch:
            try:
                message = OutgoingMessage.from_event(event)
            except Exception as exc:  # noqa: BLE001 -- a bad event must not stop the others
                with self._cond:
                    self._counts["rejected"] += 1
                self._report(exc, [event])
                continue
            messages.append(message)
            events_by_id[message.event_id] = event
        outcome = self._sender.send(messages, sleep=self._sleep_spilling)
        for message, error in outcome.rejected:
            self._report(error, [events_by_id[message.event_id]])
        undelivered = [events_by_id[m.event_id] for m in outcome.undelivered]
        with self._cond:
            self._counts["delivered"] += len(outcome.accepted)
            self._counts["rejected"] += len(outcome.rejected)
            if not undelivered:
                self._inflight = 0
            elif self._spool is not None:
                # From now on new events follow these through the spool; the next step
                # moves what is queued behind them.
                self._spilling = True
            self._cond.notify_all()
        if not undelivered:
            return
        if self._spool is None:
            self._report(outcome.last_error or TransportError("SNS unreachable"), undelivered)
            with self._cond:
                self._counts["dropped"] += len(undelivered)
                self._inflight = 0
                self._cond.notify_all()
            return
        self._spool_front(
            undelivered, [m.body.encode("utf-8") for m in outcome.undelivered], outcome.last_error
        )

    def _spool_front(
        self, events: list[ChangeEvent], records: list[bytes], error: BaseException | None
    ) -> None:
        """Undelivered in-flight events go to the *front* of the spool (they are older than
        anything spilled meanwhile). Written without the publisher's lock; the events stay
        counted as in flight until they are on disk."""
        assert self._spool is not None
        log.warning(
            "sqla-audit: SNS unreachable (%s); spooling %d event(s) to %s",
            error,
            len(events),
            self._spool.directory,
        )
        written = 0
        failure: BaseException | None = None
        try:
            written = self._spool.push_front(records)
        except SpoolFullError as exc:
            written, failure = exc.written, exc
        except Exception as exc:  # noqa: BLE001 -- disk errors are reported, not raised
            failure = exc
        if failure is not None:
            self._report(failure, events[written:])
        with self._cond:
            self._counts["spooled"] += written
            self._counts["dropped"] += len(events) - written
            self._inflight = 0
            self._cond.notify_all()

    def _drain_spool_step(self) -> None:
        assert self._spool is not None
        records = self._spool.peek(self._max_batch)
        if not records:
            with self._cond:
                # Nothing on its way to the spool: with the publisher's lock held no spill
                # can start, so the spool's answer is final. What is queued is newer than
                # anything that was spooled and goes out directly.
                if not self._spill_backlog and self._spool.empty:
                    self._spilling = False
                    log.info("sqla-audit: spool drained, back to direct delivery")
                self._cond.notify_all()
            return
        messages: list[OutgoingMessage] = []
        for record in records:
            try:
                message = OutgoingMessage.from_body(record)
            except (DecodeError, UnicodeDecodeError) as exc:
                with self._cond:
                    self._counts["rejected"] += 1
                self._report(exc, [])
                continue
            if message.event_id not in self._window_done:
                messages.append(message)
        outcome = self._sender.send(messages, sleep=self._sleep_spilling)
        for message, error in outcome.rejected:
            event = message.to_event()
            self._report(error, [event] if event is not None else [])
        if outcome.complete:
            # Outside the publisher's lock: the cursor write must not hold up publish().
            self._spool.ack(len(records))
        with self._cond:
            self._counts["delivered"] += len(outcome.accepted)
            self._counts["rejected"] += len(outcome.rejected)
            if outcome.complete:
                self._window_done.clear()
                self._outage_attempt = 0
                self._cond.notify_all()
                return
            self._window_done.update(m.event_id for m in outcome.accepted)
            self._window_done.update(m.event_id for m, _ in outcome.rejected)
            self._outage_attempt += 1
            attempt = self._outage_attempt
            self._cond.notify_all()
        delay = self._outage_retry.delay(attempt)
        log.warning(
            "sqla-audit: SNS still unreachable (%s); %d byte(s) spooled, next try in %.1fs",
            outcome.last_error,
            self._spool.size_bytes,
            delay,
        )
        self._sleep_spilling(delay)

    def _sleep_spilling(self, seconds: float) -> bool:
        """The sender thread's pause (between retries and between outage probes).

        While spilling, newly published events are moved to the spool as they come, so they
        neither wait in memory (where a crash would lose them) nor push publish() to the
        hard cap. Returns True when the publisher is stopping, like ``Event.wait``.
        """
        deadline = time.monotonic() + seconds
        while True:
            if self._stop.is_set():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                if not (self._spilling and self._queue):
                    self._cond.wait(min(remaining, 1.0))
                if not (self._spilling and self._queue) or self._spool is None:
                    continue
                seq = self._take_queue_locked()
            self._write_spill(seq)


__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_OUTAGE_RETRY",
    "PublisherStats",
    "SNSPublisher",
]
