"""The outbox relay: publishes committed outbox rows to SNS, then deletes them.

One pass (:meth:`OutboxRelay.run_once`), in one database transaction:

1. select up to ``batch_size`` pending rows, lowest id first, ``FOR UPDATE SKIP LOCKED``,
   and cut each into its events (a layout-2 row holds the events of one transaction). Fewer
   rows when they hold many events: the relay aims at about ``pass_events`` events per pass
   (from the events per row of the previous pass), so a pass of transaction rows stays small
   enough to overlap with the next one;
2. publish the events through the synchronous :class:`~sqla_audit.publishers.sns.SNSSender`
   (batches of 10, up to its ``max_concurrency`` calls in flight, per-entry retries within
   its budget);
3. settle each row from the fate of its events (:mod:`sqla_audit.outbox.settle`): delete it
   when SNS accepted them all, park an event SNS refused for good in a row of its own
   (``failed_at``, ``last_error``), keep in the row only the events SNS has not taken yet;
4. commit.

Overlapped passes. Where the database locks rows (PostgreSQL, MySQL/MariaDB), :meth:`run`
and :meth:`drain` overlap the database work with the network: while the events of pass *n*
are being sent, pass *n - 1* is settled and committed and pass *n + 1* is selected (``SKIP
LOCKED`` skips the rows pass *n* holds) on a second connection. Pass *n + 1* is sent only
once pass *n* was sent completely; when SNS did not take every event of pass *n*, the
prefetched pass is rolled back unsent and the relay backs off, so the rows left behind go
first again -- the same order as one pass at a time. On SQLite passes run one at a time.

Several relays at once. ``SKIP LOCKED`` (PostgreSQL, MariaDB 10.6+, MySQL 8) makes each
relay take rows no other relay holds, so in normal operation every row is published once.
The transaction runs at ``READ COMMITTED`` on MySQL/MariaDB so the relay takes no gap locks
that would make the application's own outbox inserts wait. SQLite has no row locks: run a
single relay per SQLite database.

At-least-once. A relay that dies after SNS accepted a batch but before its ``COMMIT`` leaves
the rows in place (the transaction rolls back), so they are published again by the next
pass: a duplicate with the same ``event_id``, which the consumer absorbs because its writes
are idempotent by event id. No failure can lose a committed row.

Order. Rows are taken in id order. Ids are assigned at insert time, inside the application's
transaction, and a transaction that changes a record holds that record's row lock until it
commits, so the events of one record get increasing ids in commit order and one relay
publishes them in that order. Across records, two transactions may commit in the opposite
order of their ids; and with several relays, two batches are published concurrently -- on a
FIFO topic, run one relay when strict per-record order matters (the consumer's store orders
history by event time either way).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, Protocol

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sqla_audit.delivery import report_failure
from sqla_audit.outbox.passes import ParkedRow, RelayPass, RelayResult, open_pass, select_pass
from sqla_audit.outbox.table import outbox_table
from sqla_audit.publishers.base import ErrorHook
from sqla_audit.publishers.sns import OutgoingMessage, SendOutcome
from sqla_audit.retry import RetryPolicy, Sleeper

log = logging.getLogger(__name__)


#: Passes :meth:`OutboxRelay.drain` retries after a deadlock or serialization conflict.
_CONFLICT_RETRIES: Final = 5

#: SQLSTATEs of PostgreSQL's serialization failure and deadlock; MySQL/MariaDB error
#: numbers of a deadlock and a lock wait timeout.
_CONFLICT_SQLSTATES: Final = frozenset({"40001", "40P01"})
_CONFLICT_ERRNOS: Final = frozenset({1213, 1205})


def is_transient_conflict(exc: DBAPIError) -> bool:
    """True for a deadlock, serialization failure or lock wait timeout (retry the pass)."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _CONFLICT_SQLSTATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _CONFLICT_ERRNOS


class MessageSender(Protocol):
    """What the relay needs from the publishing core (:class:`SNSSender` provides it)."""

    def send(
        self, messages: Sequence[OutgoingMessage], *, sleep: Sleeper | None = None
    ) -> SendOutcome: ...


class OutboxRelay:
    """Moves outbox rows to SNS; see the module documentation for the guarantees."""

    def __init__(
        self,
        engine: Engine,
        sender: MessageSender,
        *,
        table: Table | None = None,
        batch_size: int = 500,
        pass_events: int = 1000,
        poll_interval: float = 1.0,
        outage_retry: RetryPolicy | None = None,
        on_error: ErrorHook | None = None,
        on_pass: Callable[[RelayResult], None] | None = None,
        overlap: bool | None = None,
    ) -> None:
        if batch_size < 1 or pass_events < 1:
            raise ValueError("batch_size and pass_events must be at least 1")
        if poll_interval < 0:
            raise ValueError("poll_interval must not be negative")
        self.engine = engine
        self.sender = sender
        self.table = outbox_table() if table is None else table
        self.batch_size = batch_size
        self.pass_events = pass_events
        #: rows the next pass selects: ``batch_size``, or fewer when rows hold many events
        self.pass_rows = batch_size
        self.poll_interval = poll_interval
        self.outage_retry = outage_retry or RetryPolicy.outage()
        #: overlap passes (select the next one while one is sent); not on SQLite, which has
        #: no row locks and one writer at a time
        self.overlap = engine.dialect.name != "sqlite" if overlap is None else overlap
        self._on_error = on_error
        self._on_pass = on_pass
        self._stop = threading.Event()
        self.totals = {"published": 0, "parked": 0}
        #: consecutive failed passes (database errors, or SNS not taking rows); 0 when well
        self.failing = 0

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- work ------------------------------------------------------------------------------

    def run_once(self) -> RelayResult:
        """One pass over at most ``batch_size`` rows (one transaction)."""
        current = self._open()
        if current is None:
            return RelayResult()
        return self._finish(current, self._send(current.messages))

    def drain(self) -> RelayResult:
        """Passes until no pending row is left or SNS stops accepting; the summed result.

        A pass that the database aborts as a deadlock or serialization conflict (it rolled
        back; its published rows will be published again) is retried a few times.
        """
        total = _Sum()
        conflicts = 0
        while not self._stop.is_set():
            try:
                last = self._passes(total.add)
            except DBAPIError as exc:
                conflicts += 1
                if not is_transient_conflict(exc) or conflicts > _CONFLICT_RETRIES:
                    raise
                log.info("outbox relay: %s; retrying the pass", exc.orig)
                self._stop.wait(self.outage_retry.delay(conflicts))
                continue
            if last is not None and (last.deferred or not last.full):
                return total.result(last)
            if last is None:
                return total.result(None)
        return total.result(None)

    def run(self) -> None:
        """Relay until :meth:`stop`: poll when idle, back off while SNS or the database fail."""
        failures = 0
        while not self._stop.is_set():
            try:
                result = self._passes(None)
            except SQLAlchemyError as exc:
                failures += 1
                self.failing = failures
                delay = self.outage_retry.delay(failures)
                if isinstance(exc, DBAPIError) and is_transient_conflict(exc):
                    log.info("outbox relay: %s; retrying the pass", exc.orig)
                else:
                    log.warning("outbox relay: database error (%s); retrying in %.1fs", exc, delay)
                    report_failure(exc, [], self._on_error, logged=True)
                self._stop.wait(delay)
                continue
            if result is not None and result.deferred:
                failures += 1
                self.failing = failures
                delay = self.outage_retry.delay(failures)
                log.warning(
                    "outbox relay: SNS did not take %d event(s); retrying in %.1fs",
                    result.deferred,
                    delay,
                )
                self._stop.wait(delay)
            elif result is None or not result.full:
                failures = self.failing = 0
                self._stop.wait(self.poll_interval)
            else:
                failures = self.failing = 0  # stopped after a full pass

    # -- internals -------------------------------------------------------------------------

    def _passes(self, observe: Callable[[RelayResult], None] | None) -> RelayResult | None:
        """Passes back to back while they come full and SNS takes everything; the last
        pass's result (``None`` when the outbox was empty). With :attr:`overlap`, the next
        pass is selected, and the previous one committed, while a pass is being sent."""
        if not self.overlap:
            result = self.run_once() if not self._stop.is_set() else None
            if result is not None and result.rows:
                self._passed(result, observe)
                return result
            return None
        current = self._open()
        if current is None:
            return None
        done: RelayPass | None = None
        done_outcome: SendOutcome | None = None
        upcoming: RelayPass | None = None
        last: RelayResult | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="sqla-audit-relay-send") as executor:
            try:
                while current is not None:
                    sending: Future[SendOutcome] = executor.submit(self._send, current.messages)
                    try:
                        if done is not None and done_outcome is not None:
                            finished, done = done, None
                            last = self._finish(finished, done_outcome)
                            self._passed(last, observe)
                        if current.full and not self._stop.is_set():
                            upcoming = self._open()
                    finally:
                        outcome = sending.result()
                    done, done_outcome, current = current, outcome, None
                    if outcome.undelivered or upcoming is None:
                        break
                    current, upcoming = upcoming, None
                if done is not None and done_outcome is not None:
                    finished, done = done, None
                    last = self._finish(finished, done_outcome)
                    self._passed(last, observe)
            finally:
                for held in (current, done, upcoming):
                    if held is not None:
                        held.abandon()
        return last

    def _select(self) -> Any:
        return select_pass(self.table, self.pass_rows)

    def _open(self) -> RelayPass | None:
        """Open the next pass; size the one after it from its events per row."""
        limit = self.pass_rows
        opened = open_pass(self.engine, select_pass(self.table, limit), self._report, limit)
        if opened is not None:
            per_row = max(1.0, opened.events / max(1, opened.prepared.rows))
            self.pass_rows = max(1, min(self.batch_size, round(self.pass_events / per_row)))
        return opened

    def _send(self, messages: Sequence[OutgoingMessage]) -> SendOutcome:
        if not messages:
            return SendOutcome()
        return self.sender.send(messages, sleep=self._stop.wait)

    def _finish(self, finished: RelayPass, outcome: SendOutcome) -> RelayResult:
        result = finished.finish(self.table, outcome, self._report)
        if outcome.undelivered:
            log.warning(
                "outbox relay: %d event(s) not accepted by SNS: %s",
                len(outcome.undelivered),
                outcome.last_error,
            )
        self.totals["published"] += result.published
        self.totals["parked"] += result.parked
        return result

    def _passed(
        self, result: RelayResult, observe: Callable[[RelayResult], None] | None = None
    ) -> None:
        if observe is not None:
            observe(result)
        if self._on_pass is not None:
            try:
                self._on_pass(result)
            except Exception:
                log.exception("outbox relay: the on_pass hook raised")

    def _report(
        self,
        error: BaseException,
        events: Sequence[Any],
        row_id: int,
        reason: str,
        event_id: str | None = None,
    ) -> None:
        """A parked event is an expected, explained outcome: one warning line, no traceback."""
        what = (
            f"event {event_id} of row {row_id} (in a row of its own)"
            if event_id
            else (f"row {row_id}")
        )
        log.warning(
            "outbox relay: parked %s (see sqla-audit outbox status): %s",
            what,
            reason,
            extra={"outbox_id": row_id, "reason": reason},
        )
        report_failure(error, events, self._on_error, logged=True)


class _Sum:
    """Results of several passes added up."""

    def __init__(self) -> None:
        self.published = 0
        self.parked: list[ParkedRow] = []

    def add(self, result: RelayResult) -> None:
        self.published += result.published
        self.parked.extend(result.parked_rows)

    def result(self, last: RelayResult | None) -> RelayResult:
        deferred = last.deferred if last is not None else 0
        error = last.last_error if last is not None else None
        return RelayResult(self.published, len(self.parked), deferred, tuple(self.parked), error)


__all__ = [
    "MessageSender",
    "OutboxRelay",
    "ParkedRow",
    "RelayResult",
    "is_transient_conflict",
]
