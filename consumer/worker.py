"""The worker: receive a batch, decode, diff, write, then acknowledge message by message.

Per-message outcomes (the AWS Powertools batch-processor model):

* **acked** -- every record of the message is written (or it needed none: an update that
  changed nothing). Only then is it deleted from the queue.
* **rejected** -- the message can never be processed: it cannot be decoded (not JSON, an
  unknown ``schema_version``, missing or invalid fields, a foreign SNS notification), or the
  store refuses one of its records for good (:class:`~consumer.sinks.base.RecordRejected`,
  a conflicting duplicate included). It is logged with its id and a reason and handed to
  the source, which moves it to the dead-letter queue, leaves it to the queue's redrive
  policy, or (the outbox) parks its row. It never holds up the valid messages of its batch.
* **released** -- only when the worker stops while holding it, or when an offloaded payload
  cannot be read right now; the message becomes visible again (at once on shutdown).

A batch is written with one ``store.write`` call, so the store can keep many requests in
flight. If the store refuses a record permanently, the batch is split and written message
by message to find the culprit; a retryable failure is not split (when the store is down,
every write would fail anyway). A write that raised may have stored some records: writing
them again is harmless, stores are idempotent by event id.

Store outages (a retryable error): the batch is *held*, never released, so an outage costs
no delivery attempt. Every poller stops receiving while a batch is held for an outage; the
holders probe the store by retrying their batch's write after a capped exponential backoff
(``max_probe_interval``, 1 s by default, so the worker resumes within about a second of the
store's return), the housekeeping thread keeps the held messages invisible, and the first
write that succeeds ends the outage: every poller resumes at full speed. The worker never
exits because of the store, the queue or a bad message.

Long batches: the housekeeping thread extends the visibility of batches still held once
half of the visibility timeout has passed, logs a warning naming the message ids of any
batch held longer than ``stall_warning_seconds`` (again each time its age doubles), and
keeps the ``oldest_in_flight_seconds`` gauge.

Shutdown (:meth:`Worker.stop`, called from SIGTERM/SIGINT handlers): pollers stop
receiving, batches being processed finish, messages received after the stop -- and batches
held for a store outage -- are released with visibility 0 (for an outage, the one case that
costs a delivery attempt), and :meth:`Worker.run` returns within ``shutdown_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from consumer.backoff import Backoff
from consumer.decoding import Decoder
from consumer.differ import NestedDiff, records_for_event
from consumer.inflight import InFlight
from consumer.metrics import WorkerMetrics
from consumer.records import AuditRecord
from consumer.sinks import base as sinks_base
from consumer.sinks.base import AuditStore
from consumer.sources.base import Message, MessageSource, clean_reason
from consumer.verification import SignatureError
from sqla_audit.errors import DecodeError, PermanentError, RetryableError

log = logging.getLogger(__name__)

#: How often a poller looks again whether a store outage is over.
_OUTAGE_POLL_SECONDS = 0.05
#: ``run(until_empty=True)``: consecutive failed receives after which a poller gives up.
DRAIN_RECEIVE_ATTEMPTS: Final = 3


def _reject_kind(exc: PermanentError) -> str:
    """The metric label of a store refusal: ``conflict`` for a conflicting duplicate."""
    conflict = getattr(sinks_base, "RecordConflict", None)
    if isinstance(conflict, type) and isinstance(exc, conflict):
        return "conflict"
    return "rejected"


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
class Totals:
    """What a worker has done since it started (thread-safe; for progress summaries)."""

    received: int = 0
    acked: int = 0
    rejected: int = 0
    released: int = 0
    written: int = 0
    skipped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, result: BatchResult) -> None:
        with self.lock:
            self.acked += len(result.acked)
            self.rejected += len(result.rejected)
            self.released += len(result.released)
            self.received += len(result.acked) + len(result.rejected) + len(result.released)
            self.written += result.written
            self.skipped += result.skipped

    def summary(self) -> str:
        """One line: received, stored, unchanged, rejected, released."""
        with self.lock:
            return (
                f"received {self.received} message(s): stored {self.written} change(s), "
                f"{self.skipped} without a change, rejected {self.rejected}, "
                f"released {self.released}"
            )


@dataclass(slots=True)
class _Decoded:
    message: Message
    records: list[AuditRecord]
    #: events that yielded at least one record (a moved row yields two records)
    events: int
    skipped: int
    #: writes of this message alone that failed with an unexpected (unclassified) error
    unexpected: int = 0


#: Writes of one message alone that may fail with an unexpected (unclassified) store error
#: before that message is rejected: a store bug must not hold the queue forever.
UNEXPECTED_ATTEMPTS: Final = 3


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
        max_probe_interval: float = 1.0,
        stall_warning_seconds: float = 30.0,
        shutdown_timeout: float = 30.0,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        nested_diff: NestedDiff | None = None,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        if max_probe_interval <= 0 or stall_warning_seconds <= 0:
            raise ValueError("max_probe_interval and stall_warning_seconds must be positive")
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
        #: pause between two probes of a store that is down (``max_backoff`` and
        #: ``max_probe_interval`` both cap it)
        probe_cap = min(max_backoff, max_probe_interval)
        self.backoff = Backoff(min(initial_backoff, probe_cap), probe_cap, clock)
        self.in_flight = InFlight(visibility_timeout, stall_warning_seconds)
        self._transport_backoff_cap = max_backoff
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._holders = 0  # batches held for a store outage
        self._holders_lock = threading.Lock()
        self._outage_started = 0.0
        #: what the store answered the last failed write (named in the stall warning)
        self._last_store_error = ""
        self._running = False
        self._until_empty = False
        #: ``run(until_empty=True)``: the receive error a poller gave up on, if any
        self.drain_error: BaseException | None = None
        #: running totals for progress summaries (see :meth:`summary`)
        self.totals = Totals()

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
        reason = clean_reason(reason)
        self.metrics.failures.labels(kind).inc()
        log.warning(
            "rejected message %s (delivery %d, %s): %s",
            message.message_id,
            message.receive_count,
            kind,
            reason,
            extra={"message_id": message.message_id, "reason": reason, "kind": kind},
        )
        result.rejected.append((message, reason))

    def _store_failed(self, exc: BaseException) -> None:
        """Count a failed write; the first one of an outage is logged as a warning."""
        self.metrics.failures.labels("store").inc()
        self._last_store_error = clean_reason(str(exc))[:500]
        starting = not self.backoff.active
        delay = self.backoff.failure()
        self.metrics.backoff_seconds.set(delay)
        if starting:
            self._outage_started = self._clock()
            log.warning(
                "store unavailable: holding in-flight messages, receiving nothing, probing "
                "the store every %.1fs at most: %s",
                self.backoff.maximum,
                exc,
                extra={"backoff_seconds": delay, "error": str(exc)},
            )
        else:
            log.debug("store still unavailable, next probe in %.1fs: %s", delay, exc)

    def _store_answered(self) -> None:
        """The store answered a write (stored, or refused a record): any outage is over."""
        if self.backoff.active:
            self.backoff.success()
            self.metrics.backoff_seconds.set(0)
            log.info(
                "store available again after %.1fs; resuming",
                max(0.0, self._clock() - self._outage_started),
            )

    def _write(self, items: Sequence[_Decoded], result: BatchResult) -> list[_Decoded]:
        """Write the records of ``items`` and sort the messages into the result; returns the
        items the store could not take now (an outage), which the caller holds."""
        records = [record for item in items for record in item.records]
        try:
            if records:
                self.store.write(records)
        except RetryableError as exc:
            self._store_failed(exc)
            return list(items)
        except PermanentError as exc:
            self._store_answered()
            if len(items) > 1:  # find the message the store refuses
                return [held for item in items for held in self._write([item], result)]
            reason = f"store refused a record: {exc}"
            self._reject(result, items[0].message, _reject_kind(exc), reason)
            return []
        except Exception as exc:  # noqa: BLE001 - a store bug or an unclassified outage
            return self._unexpected(items, result, exc)
        self._written(items, result)
        return []

    def _unexpected(
        self, items: Sequence[_Decoded], result: BatchResult, exc: Exception
    ) -> list[_Decoded]:
        """An error outside the store contract. It may be an outage the store did not
        classify, or a bug that one record triggers every time: split the batch so the other
        messages are written, hold the message that fails like an outage, and reject it once
        it has failed :data:`UNEXPECTED_ATTEMPTS` times on its own (while the store is really
        down, every write fails and the splitting changes nothing)."""
        self.metrics.failures.labels("internal").inc()
        if len(items) > 1:
            log.warning(
                "unexpected store error (%s: %s); writing message by message",
                type(exc).__name__,
                exc,
            )
            return [held for item in items for held in self._write([item], result)]
        item = items[0]
        item.unexpected += 1
        if item.unexpected >= UNEXPECTED_ATTEMPTS:
            log.error(
                "message %s failed %d times with an unexpected store error",
                item.message.message_id,
                item.unexpected,
                exc_info=exc,
            )
            reason = f"store failed {item.unexpected} times: {type(exc).__name__}: {exc}"
            self._store_answered()  # judged a fault of this record, not of the store
            self._reject(result, item.message, "internal", reason)
            return []
        self._store_failed(exc)
        return [item]

    def _written(self, items: Sequence[_Decoded], result: BatchResult) -> None:
        for item in items:
            result.acked.append(item.message)
            result.written += item.events
            result.skipped += item.skipped
        if any(item.records for item in items):
            self._store_answered()

    def _write_holding(self, key: int, items: Sequence[_Decoded], result: BatchResult) -> None:
        """Write ``items``; through a store outage, hold what could not be written and probe
        until the store takes it (or the worker stops: then release it at once)."""
        held = self._write(items, result)
        if not held:
            return
        self.in_flight.set_state(key, "store unavailable")
        with self._holders_lock:
            self._holders += 1
        try:
            while held:
                self._stop.wait(max(self.backoff.remaining(), 0.01))
                if self._stop.is_set():
                    result.released.extend(item.message for item in held)
                    return
                held = self._write(held, result)
        finally:
            with self._holders_lock:
                self._holders -= 1
            self.in_flight.set_state(key, "writing")

    def process(self, messages: Sequence[Message]) -> BatchResult:
        """Handle one batch and settle every message with the source. Never raises.

        Blocks while the store is down (the batch is held and probed, see the module).
        """
        result = BatchResult()
        started = self._clock()
        key = self.in_flight.add(messages, started)
        self.metrics.in_flight.inc(len(messages))
        try:
            decoded: list[_Decoded] = []
            for message in messages:
                try:
                    decoded.append(self._decode(message))
                except SignatureError as exc:  # refused by the signature policy
                    self._reject(result, message, "signature", f"signature: {exc}")
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
                self._write_holding(key, decoded, result)
        except Exception:  # a bug: keep the messages for redelivery, keep the worker alive
            log.exception("unexpected error while processing a batch")
            self.metrics.failures.labels("internal").inc()
            settled = {id(m) for m in result.acked} | {id(m) for m, _ in result.rejected}
            result.released = [m for m in messages if id(m) not in settled]
        try:
            self._settle(result)
        finally:
            self.in_flight.remove(key)
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
        self.totals.add(result)
        self.metrics.messages.labels("acked").inc(len(result.acked))
        self.metrics.messages.labels("released").inc(len(result.released))
        self.metrics.messages.labels("rejected").inc(len(result.rejected))
        self.metrics.events_written.inc(result.written)
        self.metrics.events_skipped.inc(result.skipped)

    # -- the pollers -----------------------------------------------------------------------------

    def _store_down(self) -> bool:
        """True while a batch is held for a store outage: nobody receives then."""
        with self._holders_lock:
            return self._holders > 0

    def _poll(self) -> None:
        transport_delay = 0.5
        failed_receives = 0
        while not self._stop.is_set():
            if self._store_down():
                self._stop.wait(_OUTAGE_POLL_SECONDS)
                continue
            try:
                messages = self.source.receive(self.batch_size, self.wait_seconds)
            except Exception as exc:  # noqa: BLE001 - transport or bug: wait and retry
                self.metrics.failures.labels("transport").inc()
                failed_receives += 1
                if self._until_empty and failed_receives >= DRAIN_RECEIVE_ATTEMPTS:
                    self.drain_error = exc  # a drain must end: report the source as down
                    return
                log.warning("receive failed, retrying in %.1fs: %s", transport_delay, exc)
                self._stop.wait(transport_delay)
                transport_delay = min(transport_delay * 2, self._transport_backoff_cap)
                continue
            transport_delay = 0.5
            failed_receives = 0
            if not messages:
                if self._until_empty:
                    return  # drained, as far as this poller can tell
                continue
            if self._stop.is_set():
                self._release_on_stop(messages)
                break
            self.process(messages)

    def _release_on_stop(self, messages: Sequence[Message]) -> None:
        try:
            self.source.release(messages, 0)
            self.metrics.messages.labels("released").inc(len(messages))
        except Exception as exc:  # noqa: BLE001 - they come back after the visibility timeout
            log.warning("could not release %d message(s) on shutdown: %s", len(messages), exc)

    def _housekeep(self) -> None:
        """Extend the visibility of held batches, warn about slow ones, export their age."""
        interval = max(
            0.05, min(5.0, self.visibility_timeout / 4, self.in_flight.stall_seconds / 2)
        )
        while not self._stop.wait(interval) or self.in_flight:
            now = self._clock()
            for batch in self.in_flight.due_for_extension(now):
                try:
                    self.source.extend(batch.messages, self.visibility_timeout)
                    log.info("extended visibility of %d message(s)", len(batch.messages))
                except Exception as exc:  # noqa: BLE001 - worst case: a harmless redelivery
                    log.warning("could not extend visibility: %s", exc)
            for batch, age in self.in_flight.stalled(now):
                cause = f"; last error: {self._last_store_error}" if self.backoff.active else ""
                log.warning(
                    "%d message(s) held %.0fs without progress (%s): %s%s",
                    len(batch.messages),
                    age,
                    batch.state,
                    ", ".join(batch.message_ids),
                    cause,
                    extra={"message_ids": batch.message_ids, "held_seconds": round(age, 1)},
                )
            self.metrics.oldest_in_flight_seconds.set(self.in_flight.oldest_age(now))
            if self._stop.is_set() and not self.in_flight:
                break
        self.metrics.oldest_in_flight_seconds.set(0)

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

    def run(self, stop: threading.Event | None = None, *, until_empty: bool = False) -> int:
        """Run until :meth:`stop` (or ``stop`` is set); returns the exit code, 0.

        ``until_empty``: also return once the source is drained -- each poller stops at its
        first empty receive (a receive that fails :data:`DRAIN_RECEIVE_ATTEMPTS` times in a
        row also stops it, and :attr:`drain_error` keeps that error). Messages that arrive
        meanwhile stay in the source for the next run.
        """
        self._until_empty = until_empty
        self.start()
        pollers = [t for t in self._threads if t.name.startswith("sqla-audit-poller")]
        while not self._stop.wait(0.1 if until_empty else 0.5):
            external = stop is not None and stop.is_set()
            if external or (until_empty and not any(t.is_alive() for t in pollers)):
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


# Backoff: re-exported from consumer.backoff
__all__ = ["DRAIN_RECEIVE_ATTEMPTS", "Backoff", "BatchResult", "Totals", "Worker"]
