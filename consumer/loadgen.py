"""Drive a steady rate of change events through the real pipeline and measure its lag.

:class:`LoadGenerator` publishes synthetic transactions (``transaction_size`` update events
each, on ``records`` distinct records of one table) through any
:class:`~sqla_audit.publishers.base.Publisher` -- in production the application's own
:class:`~sqla_audit.publishers.sns.SNSPublisher` -- at a fixed rate for a fixed time, and
follows every ``probe_every``-th transaction to the audit store: a probe *lands* when the
store returns all of that transaction's events (:meth:`AuditStore.by_transaction`, one
partition read). The time from the probe's publication to its landing is the end-to-end
lag (SNS, SQS, the consumer and the store together), measured to within ``poll_interval``.

Every ``report_every`` seconds an :class:`Interval` says what was sent, what landed, the
lag of the probes that landed in that interval, the probes still in flight and, when a
queue is given, the queue's depth. After the last event the generator waits up to
``drain_timeout`` for every probe to land; the :class:`LoadSummary` says whether the
pipeline kept up (every probe landed) and how long it took to drain.

Synthetic rows are small (eight columns, about 0.6 KB per event on the wire); a service
whose rows are wider costs more per event everywhere, so compare with the capacity model
(docs/capacity.md) at the same event size.
"""

from __future__ import annotations

import decimal
import math
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqla_audit.events import Actor, ChangeEvent, Operation, new_event_id, utcnow
from sqla_audit.publishers.base import Publisher
from sqla_audit.serialization import JSONValue, encode_value

#: The table name synthetic events carry (a real service's tables are never touched).
DEFAULT_TABLE = "loadgen_items"
DEFAULT_SERVICE = "loadgen"


class ProbeReader(Protocol):
    """How many events of a transaction the audit store holds (0 while none)."""

    def __call__(self, transaction_id: uuid.UUID) -> int: ...


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What to send: ``rate`` events per second for ``duration`` seconds."""

    rate: float
    duration: float
    transaction_size: int = 5
    probe_every: int = 10
    records: int = 10_000
    service: str = DEFAULT_SERVICE
    table: str = DEFAULT_TABLE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(
                f"rate must be a positive number of events per second, got {self.rate}"
            )
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration}")
        if not 1 <= self.transaction_size <= 1000:
            raise ValueError("transaction_size must be between 1 and 1000")
        if self.probe_every < 1:
            raise ValueError("probe_every must be at least 1")
        if self.records < self.transaction_size:
            raise ValueError("records must be at least transaction_size")

    @property
    def transactions(self) -> int:
        """Transactions sent in total (the rate is rounded to whole transactions)."""
        return max(1, round(self.rate * self.duration / self.transaction_size))


@dataclass(frozen=True, slots=True)
class Interval:
    """One progress report (times in seconds since the start)."""

    elapsed: float
    sent: int
    send_rate: float
    landed: int
    lag_p50: float | None
    lag_max: float | None
    probes_in_flight: int
    queue_depth: int | None


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """The whole run."""

    plan: LoadPlan
    sent: int
    send_seconds: float
    probes: int
    landed: int
    lags: tuple[float, ...] = field(repr=False)
    drain_seconds: float | None
    max_queue_depth: int | None
    #: store reads that failed (each is retried at the next poll), and the last error
    probe_errors: int = 0
    last_probe_error: str | None = None
    #: events the publisher gave up on (``stats()``: dropped + rejected; None: no count)
    publisher_lost: int | None = None

    @property
    def send_rate(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds > 0 else 0.0

    @property
    def kept_up(self) -> bool:
        """Everything was delivered (nothing lost by the publisher) and every probe landed
        before the drain timeout."""
        return (
            self.drain_seconds is not None
            and self.landed == self.probes
            and not self.publisher_lost
        )

    def lag(self, quantile: float) -> float | None:
        """The lag at ``quantile`` (0..1) of the landed probes, None without any."""
        if not self.lags:
            return None
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)]

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "rate": self.plan.rate,
            "duration": self.plan.duration,
            "sent": self.sent,
            "send_rate": round(self.send_rate, 1),
            "probes": self.probes,
            "landed": self.landed,
            "lag_p50": self.lag(0.5),
            "lag_p95": self.lag(0.95),
            "lag_max": self.lag(1.0),
            "drain_seconds": self.drain_seconds,
            "max_queue_depth": self.max_queue_depth,
            "kept_up": self.kept_up,
            "probe_errors": self.probe_errors,
            "publisher_lost": self.publisher_lost,
        }


def synthetic_transaction(plan: LoadPlan, index: int, actor: Actor) -> list[ChangeEvent]:
    """The ``index``-th transaction: ``transaction_size`` updates of consecutive records."""
    now = utcnow()
    transaction_id = new_event_id()
    events = []
    for sequence in range(plan.transaction_size):
        number = (index * plan.transaction_size + sequence) % plan.records
        version = (index * plan.transaction_size + sequence) // plan.records
        before: dict[str, JSONValue] = {
            "id": number,
            "sku": f"SKU-{number:08d}",
            "name": f"Load item {number}",
            "status": ("new", "active", "suspended")[version % 3],
            "quantity": version,
            "price": encode_value(decimal.Decimal(f"{number % 1000}.50")),
            "note": "synthetic load " * 4,
            "version": version,
        }
        after = dict(before, status=("new", "active", "suspended")[(version + 1) % 3])
        after["quantity"] = version + 1
        after["version"] = version + 1
        events.append(
            ChangeEvent(
                event_id=new_event_id(),
                occurred_at=now,
                committed_at=now,
                service=plan.service,
                table=plan.table,
                record_id=str(number),
                primary_key={"id": number},
                operation=Operation.UPDATE,
                before=before,
                after=after,
                changed_columns=("quantity", "status", "version"),
                transaction_id=transaction_id,
                sequence=sequence,
                actor=actor,
                request_id=f"loadgen-{index}",
            )
        )
    return events


@dataclass(slots=True)
class _Probe:
    transaction_id: uuid.UUID
    expected: int
    sent_at: float


class _Prober:
    """Polls the store for the oldest probes in flight, on its own thread."""

    def __init__(
        self,
        reader: ProbeReader,
        clock: Callable[[], float],
        poll_interval: float,
        max_reads_per_poll: int,
    ) -> None:
        self._reader = reader
        self._clock = clock
        self._poll_interval = poll_interval
        self._max_reads = max_reads_per_poll
        self._pending: deque[_Probe] = deque()
        self._landed: list[tuple[float, float]] = []  # (landed at, lag)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="sqla-audit-loadgen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, probe: _Probe) -> None:
        with self._lock:
            self._pending.append(probe)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def landed_since(self, start: int) -> list[tuple[float, float]]:
        with self._lock:
            return self._landed[start:]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        offset = 0
        while not self._stop.is_set():
            with self._lock:
                pending = list(self._pending)
            # At most max_reads per poll; the window rotates, so a probe that never lands
            # (lost) does not hide the ones behind it.
            if offset >= len(pending):
                offset = 0
            batch = pending[offset : offset + self._max_reads]
            offset += len(batch)
            for probe in batch:
                try:
                    found = self._reader(probe.transaction_id)
                except Exception as exc:  # noqa: BLE001 -- an outage is a lag, not a crash
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    break
                if found < probe.expected:
                    continue
                now = self._clock()
                with self._lock:
                    self._pending.remove(probe)
                    self._landed.append((now, now - probe.sent_at))
                offset -= 1
            self._stop.wait(self._poll_interval)


class LoadGenerator:
    """Sends :class:`LoadPlan` through ``publisher``; see the module documentation."""

    def __init__(
        self,
        plan: LoadPlan,
        publisher: Publisher,
        *,
        probe: ProbeReader | None = None,
        queue_depth: Callable[[], int] | None = None,
        report_every: float = 5.0,
        on_interval: Callable[[Interval], None] | None = None,
        poll_interval: float = 0.1,
        drain_timeout: float = 120.0,
        actor: Actor | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        self.publisher = publisher
        self.queue_depth = queue_depth
        self.report_every = report_every
        self.on_interval = on_interval
        self.drain_timeout = drain_timeout
        self.actor = actor or Actor(id="loadgen")
        self._clock = clock
        self._sleep = sleep
        self._prober = (
            None if probe is None else _Prober(probe, clock, poll_interval, max_reads_per_poll=200)
        )
        self._depths: list[int] = []
        self._stopped = threading.Event()
        self._start = 0.0
        self._mark = (0.0, 0)
        self._reported_landed = 0

    def stop(self) -> None:
        """Stop sending (from a signal handler or another thread); the drain still runs."""
        self._stopped.set()

    def run(self) -> LoadSummary:
        plan = self.plan
        interval = plan.transaction_size / plan.rate
        self._start = start = self._clock()
        self._mark = (start, 0)
        self._reported_landed = 0
        sent = probes = 0
        if self._prober is not None:
            self._prober.start()
        try:
            for index in range(plan.transactions):
                if self._stopped.is_set():
                    break
                due = start + index * interval
                now = self._clock()
                if due > now:
                    self._sleep(due - now)
                events = synthetic_transaction(plan, index, self.actor)
                self.publisher.publish(events)
                sent += len(events)
                if self._prober is not None and index % plan.probe_every == 0:
                    probes += 1
                    self._prober.add(_Probe(events[0].transaction_id, len(events), self._clock()))
                self._maybe_report(sent)
            end = start + plan.duration  # the rate holds for the whole duration
            if not self._stopped.is_set() and end > self._clock():
                self._sleep(end - self._clock())
            send_seconds = self._clock() - start
            drain = self._drain(sent)
        finally:
            if self._prober is not None:
                self._prober.stop()
        landed = [] if self._prober is None else self._prober.landed_since(0)
        return LoadSummary(
            plan=plan,
            sent=sent,
            send_seconds=send_seconds,
            probes=probes,
            landed=len(landed),
            lags=tuple(lag for _, lag in landed),
            drain_seconds=drain,
            max_queue_depth=max(self._depths) if self._depths else None,
            probe_errors=0 if self._prober is None else self._prober.errors,
            last_probe_error=None if self._prober is None else self._prober.last_error,
            publisher_lost=_lost(self.publisher),
        )

    def _drain(self, sent: int) -> float | None:
        """Wait for the publisher to deliver, every probe to land and the queue to empty,
        reporting as usual meanwhile; the seconds it took (None: not within the timeout)."""
        publish_end = self._clock()
        deadline = publish_end + self.drain_timeout
        while not self.publisher.flush(timeout=min(0.5, self.drain_timeout)):
            if self._clock() >= deadline:
                self._report(self._clock(), sent)
                return None
            self._maybe_report(sent)
        while True:
            in_flight = 0 if self._prober is None else self._prober.in_flight()
            depth = self._depth()
            now = self._clock()
            if in_flight == 0 and not depth:
                self._report(now, sent)
                return now - publish_end
            if now >= deadline:
                self._report(now, sent)
                return None
            self._maybe_report(sent)
            self._sleep(0.1)

    def _depth(self) -> int | None:
        if self.queue_depth is None:
            return None
        depth = self.queue_depth()
        self._depths.append(depth)
        return depth

    def _maybe_report(self, sent: int) -> None:
        now = self._clock()
        if now - self._mark[0] >= self.report_every:
            self._report(now, sent)

    def _report(self, now: float, sent: int) -> None:
        landed = [] if self._prober is None else self._prober.landed_since(self._reported_landed)
        self._reported_landed += len(landed)
        lags = [lag for _, lag in landed]
        since, sent_then = self._mark
        self._mark = (now, sent)
        interval = Interval(
            elapsed=now - self._start,
            sent=sent,
            send_rate=(sent - sent_then) / (now - since) if now > since else 0.0,
            landed=self._reported_landed,
            lag_p50=statistics.median(lags) if lags else None,
            lag_max=max(lags) if lags else None,
            probes_in_flight=0 if self._prober is None else self._prober.in_flight(),
            queue_depth=self._depth(),
        )
        if self.on_interval is not None:
            self.on_interval(interval)


def _lost(publisher: Publisher) -> int | None:
    """Events the publisher gave up on, when it counts them (``SNSPublisher.stats``)."""
    stats = getattr(publisher, "stats", None)
    if not callable(stats):
        return None
    counts = stats()
    found = [getattr(counts, name, None) for name in ("dropped", "rejected")]
    numbers = [n for n in found if isinstance(n, int)]
    return sum(numbers) if numbers else None


def format_interval(interval: Interval) -> str:
    """One progress line."""
    lag = (
        "no probe landed"
        if interval.lag_p50 is None
        else f"lag p50 {interval.lag_p50:.2f} s, max {interval.lag_max:.2f} s"
    )
    depth = "" if interval.queue_depth is None else f", queue {interval.queue_depth}"
    return (
        f"{interval.elapsed:7.1f} s: sent {interval.sent} ({interval.send_rate:.0f}/s), "
        f"probes landed {interval.landed}, in flight {interval.probes_in_flight}, {lag}{depth}"
    )


def format_summary(summary: LoadSummary) -> Sequence[str]:
    """The final report, one line per fact."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    missing = summary.probes - summary.landed
    drain = (
        f"{summary.drain_seconds:.2f} s after the last event"
        if summary.drain_seconds is not None
        else f"not drained within the timeout ({missing} probe(s) missing)"
        if missing
        else "not drained within the timeout (the publisher was still delivering)"
    )
    lines = [
        f"sent {summary.sent} events in {summary.send_seconds:.1f} s "
        f"({summary.send_rate:.0f}/s, asked {summary.plan.rate:g}/s)",
        f"probes landed {summary.landed} of {summary.probes}",
        f"lag p50 {seconds(summary.lag(0.5))}, p95 {seconds(summary.lag(0.95))}, "
        f"max {seconds(summary.lag(1.0))}",
        f"drained: {drain}",
        "kept up: " + ("yes" if summary.kept_up else "NO"),
    ]
    if summary.publisher_lost is not None:
        lines.append(
            f"publisher gave up on {summary.publisher_lost} event(s) (see the lines above)"
        )
    if summary.probe_errors:
        lines.append(
            f"store reads failed {summary.probe_errors} time(s): {summary.last_probe_error}"
        )
    return lines


__all__ = [
    "DEFAULT_SERVICE",
    "DEFAULT_TABLE",
    "Interval",
    "LoadGenerator",
    "LoadPlan",
    "LoadSummary",
    "ProbeReader",
    "format_interval",
    "format_summary",
    "synthetic_transaction",
]
