"""The worker: receive a batch, decode, diff, write, then acknowledge message by message.

Per-message outcomes (the AWS Powertools batch-processor model):

* **acked** -- every record of the message is written (or it needed none: an update that
  changed nothing). Only then is it deleted from the queue.
* **released** -- the store is unavailable (a retryable error), or the worker is shutting
  down. The message becomes visible again after the current backoff delay (0 on shutdown),
  so a store outage costs a pause, never a message.
* **rejected** -- the message can never be processed (not JSON, an unknown
  ``schema_version``, missing fields, a foreign SNS notification, or a record the store
  refuses for good). It is logged with its id and handed to the source, which moves it to
  the dead-letter queue or leaves it to the queue's redrive policy. It never holds up the
  valid messages of its batch.

A batch is written with one ``store.write`` call, so the store can keep many requests in
flight. If the store refuses a record permanently, the batch is split and written message
by message to find the culprit; a retryable failure is not split (when the store is down,
every write would fail anyway).

Store outages: the first retryable failure starts a shared, capped exponential backoff;
every poller waits it out before receiving again, and the first success resets it. The
worker never exits because of the store, the queue or a bad message.

Long batches: a housekeeping thread extends the visibility of batches still being
processed once half of the visibility timeout has passed.

Shutdown (:meth:`Worker.stop`, called from SIGTERM/SIGINT handlers): pollers stop
receiving, batches being processed finish, messages received after the stop are released
with visibility 0, and :meth:`Worker.run` returns within ``shutdown_timeout`` seconds.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumer.decoding import Decoder
from consumer.differ import NestedDiff, records_for_event
from consumer.metrics import WorkerMetrics
from consumer.records import AuditRecord
from consumer.sinks.base import AuditStore
from consumer.sources.base import Message, MessageSource
from sqla_audit.errors import DecodeError, PermanentError, RetryableError

log = logging.getLogger(__name__)


class Backoff:
    """A capped exponential backoff shared by all pollers of a worker.

    ``failure`` starts or lengthens a pause (only once per pause, however many pollers
    report the same outage); ``success`` ends it.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._clock = clock
        self._lock = threading.Lock()
        self._delay = 0.0
        self._until = 0.0

    @property
    def delay(self) -> float:
        """The current pause length; 0 when healthy."""
        with self._lock:
            return self._delay

    @property
    def active(self) -> bool:
        with self._lock:
            return self._delay > 0

    def failure(self) -> float:
        """Record a failure; returns the pause now in force."""
        with self._lock:
            now = self._clock()
            if self._delay and now < self._until:
                return self._delay  # the same outage, reported by another poller
            self._delay = self.initial if not self._delay else min(self._delay * 2, self.maximum)
            self._until = now + self._delay
            return self._delay

    def success(self) -> None:
        with self._lock:
            self._delay = 0.0
            self._until = 0.0

    def remaining(self) -> float:
        """Seconds left in the current pause."""
        with self._lock:
            return max(0.0, self._until - self._clock()) if self._delay else 0.0


@dataclass(slots=True)
class BatchResult:
    """What became of each message of one batch."""

    acked: list[Message] = field(default_factory=list)
    released: list[Message] = field(default_factory=list)
    rejected: list[tuple[Message, str]] = field(default_factory=list)
    #: change events whose records were written (an event may need two records: a key change)
    written: int = 0
    #: change events that needed no record (an update that changed nothing)
    skipped: int = 0


@dataclass(slots=True)
class _Decoded:
    message: Message
    records: list[AuditRecord]
    #: events that yielded at least one record (a moved row yields two records)
    events: int
    skipped: int


@dataclass(slots=True)
class _Active:
    messages: Sequence[Message]
    extended_at: float


class Worker:
    """Consumes a :class:`MessageSource` into an :class:`AuditStore` with several pollers."""

    def __init__(
        self,
        source: MessageSource,
        store: AuditStore,
        *,
        decoder: Decoder | None = None,
        concurrency: int = 4,
        batch_size: int = 10,
        wait_seconds: float = 20,
        visibility_timeout: int = 60,
        max_backoff: float = 30.0,
        initial_backoff: float = 0.5,
        shutdown_timeout: float = 30.0,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        nested_diff: NestedDiff | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        self.source = source
        self.store = store
        self.decoder = decoder or Decoder()
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.shutdown_timeout = shutdown_timeout
        self.metrics = metrics or WorkerMetrics()
        #: the nested-detail function (``None``: :func:`consumer.differ.nested_detail`)
        self.nested_diff = nested_diff
        self.backoff = Backoff(min(initial_backoff, max_backoff), max_backoff, clock)
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active: dict[int, _Active] = {}
        self._active_lock = threading.Lock()
        self._batch_ids = itertools.count()
        self._running = False

    # -- one batch ---------------------------------------------------------------------------

    def _decode(self, message: Message) -> _Decoded:
        events = self.decoder.decode(message.body)
        records: list[AuditRecord] = []
        skipped = 0
        for event in events:
            made = records_for_event(event, nested=self.nested_diff)
            if made:
                records.extend(made)
            else:
                skipped += 1
        return _Decoded(message, records, len(events) - skipped, skipped)

    def _reject(self, result: BatchResult, message: Message, kind: str, reason: str) -> None:
        self.metrics.failures.labels(kind).inc()
        log.warning(
            "rejected message %s (delivery %d): %s",
            message.message_id,
            message.receive_count,
            reason,
            extra={"message_id": message.message_id, "reason": reason, "kind": kind},
        )
        result.rejected.append((message, reason))

    def _store_failed(self, exc: BaseException) -> None:
        self.metrics.failures.labels("store").inc()
        delay = self.backoff.failure()
        self.metrics.backoff_seconds.set(delay)
        log.warning(
            "store unavailable, backing off %.1fs: %s",
            delay,
            exc,
            extra={"backoff_seconds": delay, "error": str(exc)},
        )

    def _write(self, items: Sequence[_Decoded], result: BatchResult) -> None:
        """Write the records of ``items`` and sort the messages into the result."""
        records = [record for item in items for record in item.records]
        try:
            if records:
                self.store.write(records)
        except RetryableError as exc:
            self._store_failed(exc)
            result.released.extend(item.message for item in items)
            return
        except PermanentError as exc:
            if len(items) > 1:  # find the message the store refuses
                for item in items:
                    self._write([item], result)
                return
            self._reject(result, items[0].message, "rejected", f"store refused a record: {exc}")
            return
        except Exception as exc:  # an unexpected store error: treat it as an outage
            log.exception("unexpected error from the store")
            self.metrics.failures.labels("internal").inc()
            self._store_failed(exc)
            result.released.extend(item.message for item in items)
            return
        self._written(items, result)

    def _written(self, items: Sequence[_Decoded], result: BatchResult) -> None:
        for item in items:
            result.acked.append(item.message)
            result.written += item.events
            result.skipped += item.skipped
        if any(item.records for item in items) and self.backoff.active:
            self.backoff.success()
            self.metrics.backoff_seconds.set(0)
            log.info("store available again")

    def process(self, messages: Sequence[Message]) -> BatchResult:
        """Handle one batch and settle every message with the source. Never raises."""
        result = BatchResult()
        started = self._clock()
        self.metrics.in_flight.inc(len(messages))
        try:
            decoded: list[_Decoded] = []
            for message in messages:
                try:
                    decoded.append(self._decode(message))
                except DecodeError as exc:
                    self._reject(result, message, "decode", str(exc))
                except RetryableError as exc:  # an offloaded payload that cannot be read now
                    self.metrics.failures.labels("transport").inc()
                    log.warning("message %s: %s; will retry", message.message_id, exc)
                    result.released.append(message)
                except Exception as exc:
                    log.exception("message %s could not be decoded", message.message_id)
                    self._reject(result, message, "decode", f"{type(exc).__name__}: {exc}")
            if decoded:
                self._write(decoded, result)
        except Exception:  # a bug: keep the messages for redelivery, keep the worker alive
            log.exception("unexpected error while processing a batch")
            self.metrics.failures.labels("internal").inc()
            settled = {id(m) for m in result.acked} | {id(m) for m, _ in result.rejected}
            result.released = [m for m in messages if id(m) not in settled]
        self._settle(result)
        self.metrics.in_flight.dec(len(messages))
        self.metrics.batch_seconds.observe(max(0.0, self._clock() - started))
        return result

    def _settle(self, result: BatchResult) -> None:
        """Tell the source what became of each message (each call is best effort)."""
        calls: list[tuple[str, Callable[[], None]]] = []
        if result.acked:
            calls.append(("ack", lambda: self.source.ack(result.acked)))
        if result.released:
            delay = 0 if self._stop.is_set() else round(self.backoff.remaining())
            calls.append(("release", lambda: self.source.release(result.released, delay)))
        for message, reason in result.rejected:
            calls.append(("reject", lambda m=message, r=reason: self.source.reject([m], r)))  # type: ignore[misc]
        for name, call in calls:
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - the queue redelivers what was not settled
                self.metrics.failures.labels("transport").inc()
                log.warning("could not %s messages: %s", name, exc)
        self.metrics.messages.labels("acked").inc(len(result.acked))
        self.metrics.messages.labels("released").inc(len(result.released))
        self.metrics.messages.labels("rejected").inc(len(result.rejected))
        self.metrics.events_written.inc(result.written)
        self.metrics.events_skipped.inc(result.skipped)

    # -- the pollers -----------------------------------------------------------------------------

    def _poll(self) -> None:
        transport_delay = 0.5
        while not self._stop.is_set():
            pause = self.backoff.remaining()
            if pause > 0:
                self._stop.wait(pause)
                continue
            try:
                messages = self.source.receive(self.batch_size, self.wait_seconds)
            except Exception as exc:  # noqa: BLE001 - transport or bug: wait and retry
                self.metrics.failures.labels("transport").inc()
                log.warning("receive failed, retrying in %.1fs: %s", transport_delay, exc)
                self._stop.wait(transport_delay)
                transport_delay = min(transport_delay * 2, self.backoff.maximum)
                continue
            transport_delay = 0.5
            if not messages:
                continue
            if self._stop.is_set():
                self._release_on_stop(messages)
                break
            batch_id = next(self._batch_ids)
            with self._active_lock:
                self._active[batch_id] = _Active(messages, self._clock())
            try:
                self.process(messages)
            finally:
                with self._active_lock:
                    del self._active[batch_id]

    def _release_on_stop(self, messages: Sequence[Message]) -> None:
        try:
            self.source.release(messages, 0)
            self.metrics.messages.labels("released").inc(len(messages))
        except Exception as exc:  # noqa: BLE001 - they come back after the visibility timeout
            log.warning("could not release %d message(s) on shutdown: %s", len(messages), exc)

    def _housekeep(self) -> None:
        """Extend the visibility of batches that run longer than half the timeout."""
        interval = max(0.2, min(5.0, self.visibility_timeout / 4))
        while not self._stop.wait(interval) or self._active:
            due: list[_Active] = []
            now = self._clock()
            with self._active_lock:
                for active in self._active.values():
                    if now - active.extended_at >= self.visibility_timeout / 2:
                        active.extended_at = now
                        due.append(active)
            for active in due:
                try:
                    self.source.extend(active.messages, self.visibility_timeout)
                    log.info("extended visibility of %d message(s)", len(active.messages))
                except Exception as exc:  # noqa: BLE001 - worst case: a harmless redelivery
                    log.warning("could not extend visibility: %s", exc)
            if self._stop.is_set() and not self._active:
                return

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pollers and the housekeeping thread."""
        if self._running:
            return
        self._running = True
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._poll, name=f"sqla-audit-poller-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        self._threads.append(
            threading.Thread(target=self._housekeep, name="sqla-audit-housekeeping", daemon=True)
        )
        for thread in self._threads:
            thread.start()
        log.info("worker started with %d poller(s)", self.concurrency)

    def stop(self) -> None:
        """Ask the worker to stop (safe from a signal handler). Idempotent."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to finish; True if they all did within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("shutdown timeout: %s still running", ", ".join(alive))
        self._running = False
        return not alive

    def run(self, stop: threading.Event | None = None) -> int:
        """Run until :meth:`stop` (or ``stop`` is set); returns the exit code, 0."""
        self.start()
        while not self._stop.wait(0.5):
            if stop is not None and stop.is_set():
                self.stop()
        log.info("stopping: finishing in-flight batches (at most %.0fs)", self.shutdown_timeout)
        self.join(self.shutdown_timeout)
        log.info("worker stopped")
        return 0

    def health(self) -> dict[str, Any]:
        """Liveness and readiness, for the health endpoint."""
        pollers = [t for t in self._threads if t.name.startswith("sqla-audit-poller")]
        alive = self._running and not self._stop.is_set() and any(t.is_alive() for t in pollers)
        return {
            "alive": alive,
            "ready": alive and not self.backoff.active,
            "pollers": sum(t.is_alive() for t in pollers),
            "backoff_seconds": self.backoff.delay,
        }


__all__ = ["Backoff", "BatchResult", "Worker"]
