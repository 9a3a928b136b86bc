"""The sender thread: it takes rounds of events from the queue and sends them through the
:class:`~sqla_audit.publishers.sns_sender.SNSSender`; during an outage, past the soft cap or
while the spool holds events, it spills and drains the spool instead, probing SNS with the
outage backoff until it answers."""

from __future__ import annotations

import logging
import threading
import time

from sqla_audit.errors import DecodeError, TransportError
from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.sns_messages import OutgoingMessage
from sqla_audit.publishers.sns_queue import Deferred, event_count
from sqla_audit.publishers.sns_sender import SNSSender
from sqla_audit.publishers.sns_spill import SNSSpill
from sqla_audit.retry import RetryPolicy

log = logging.getLogger("sqla_audit.publishers.sns_publisher")


class SNSSenderLoop(SNSSpill):
    """The sender thread of :class:`~sqla_audit.publishers.sns_publisher.SNSPublisher`."""

    _sender: SNSSender
    _max_batch: int
    _outage_retry: RetryPolicy
    _closing: bool
    _stop: threading.Event
    _window_done: set[str]
    _outage_attempt: int

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
        items: list[ChangeEvent | Deferred] = []
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
                    taken += event_count(item)
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
