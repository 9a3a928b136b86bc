"""The outbox relay: publishes committed outbox rows to SNS, then deletes them.

One pass (:meth:`OutboxRelay.run_once`), in one database transaction:

1. select up to ``batch_size`` pending rows, lowest id first, ``FOR UPDATE SKIP LOCKED``;
2. publish them through the synchronous :class:`~sqla_audit.publishers.sns.SNSSender`
   (batches of 10, per-entry retries within its budget);
3. delete the rows SNS accepted, park the rows SNS refused for good (``failed_at``,
   ``last_error``), leave the others for the next pass;
4. commit.

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
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from sqlalchemy import Connection, Engine, Row, Table, bindparam, delete
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sqla_audit.delivery import report_failure
from sqla_audit.errors import DecodeError
from sqla_audit.events import ChangeEvent, utcnow
from sqla_audit.outbox.rows import (
    outbox_connection,
    park_statement,
    park_values,
    select_pending,
)
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


@dataclass(frozen=True, slots=True)
class ParkedRow:
    """A row the relay parked, and why (the ``last_error`` it wrote)."""

    row_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class RelayResult:
    """What one pass did, in rows."""

    published: int = 0
    parked: int = 0
    deferred: int = 0
    #: the parked rows, with their reasons (details: not compared)
    parked_rows: tuple[ParkedRow, ...] = field(default=(), compare=False)
    #: why SNS did not take the deferred rows (its last error), when it said
    last_error: str | None = field(default=None, compare=False)

    @property
    def selected(self) -> int:
        return self.published + self.parked + self.deferred


class OutboxRelay:
    """Moves outbox rows to SNS; see the module documentation for the guarantees."""

    def __init__(
        self,
        engine: Engine,
        sender: MessageSender,
        *,
        table: Table | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        outage_retry: RetryPolicy | None = None,
        on_error: ErrorHook | None = None,
        on_pass: Callable[[RelayResult], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if poll_interval < 0:
            raise ValueError("poll_interval must not be negative")
        self.engine = engine
        self.sender = sender
        self.table = outbox_table() if table is None else table
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.outage_retry = outage_retry or RetryPolicy.outage()
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
        with outbox_connection(self.engine) as connection, connection.begin():
            rows = connection.execute(self._select()).all()
            if not rows:
                return RelayResult()
            return self._relay(connection, rows)

    def drain(self) -> RelayResult:
        """Passes until no pending row is left or SNS stops accepting; the summed result.

        A pass that the database aborts as a deadlock or serialization conflict (it rolled
        back; its published rows will be published again) is retried a few times.
        """
        published = 0
        parked: list[ParkedRow] = []
        conflicts = 0
        while not self._stop.is_set():
            try:
                result = self.run_once()
            except DBAPIError as exc:
                conflicts += 1
                if not is_transient_conflict(exc) or conflicts > _CONFLICT_RETRIES:
                    raise
                log.info("outbox relay: %s; retrying the pass", exc.orig)
                self._stop.wait(self.outage_retry.delay(conflicts))
                continue
            self._passed(result)
            published += result.published
            parked.extend(result.parked_rows)
            if result.deferred or result.selected < self.batch_size:
                return RelayResult(
                    published, len(parked), result.deferred, tuple(parked), result.last_error
                )
        return RelayResult(published, len(parked), 0, tuple(parked))

    def _passed(self, result: RelayResult) -> None:
        if self._on_pass is not None:
            try:
                self._on_pass(result)
            except Exception:
                log.exception("outbox relay: the on_pass hook raised")

    def run(self) -> None:
        """Relay until :meth:`stop`: poll when idle, back off while SNS or the database fail."""
        failures = 0
        while not self._stop.is_set():
            try:
                result = self.run_once()
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
            self._passed(result)
            if result.deferred:
                failures += 1
                self.failing = failures
                delay = self.outage_retry.delay(failures)
                log.warning(
                    "outbox relay: SNS did not take %d row(s); retrying in %.1fs",
                    result.deferred,
                    delay,
                )
                self._stop.wait(delay)
            elif result.selected < self.batch_size:
                failures = self.failing = 0
                self._stop.wait(self.poll_interval)
            else:
                failures = self.failing = 0  # a full batch: more rows are probably waiting

    # -- internals -------------------------------------------------------------------------

    def _select(self) -> Any:
        return select_pending(self.table, self.batch_size, self.table.c.id, self.table.c.payload)

    def _relay(self, connection: Connection, rows: Sequence[Row[Any]]) -> RelayResult:
        messages: list[OutgoingMessage] = []
        row_ids: dict[int, int] = {}  # id(message) -> outbox row id
        parked: list[tuple[int, str]] = []
        for row in rows:
            try:
                message = OutgoingMessage.from_body(row.payload)
            except (DecodeError, UnicodeDecodeError) as exc:
                parked.append((row.id, f"undecodable payload: {exc}"))
                self._report(exc, [], row.id, parked[-1][1])
                continue
            messages.append(message)
            row_ids[id(message)] = row.id
        outcome = self.sender.send(messages, sleep=self._stop.wait)
        for message, error in outcome.rejected:
            parked.append((row_ids[id(message)], f"{type(error).__name__}: {error}"))
            event = message.to_event()
            self._report(error, [event] if event is not None else [], *parked[-1])
        accepted = [row_ids[id(m)] for m in outcome.accepted]
        self._delete(connection, accepted)
        if parked:
            now = utcnow()
            connection.execute(
                park_statement(self.table),
                [{"row_id": row_id, **park_values(reason, now)} for row_id, reason in parked],
            )
        if outcome.undelivered:
            log.warning(
                "outbox relay: %d event(s) not accepted by SNS: %s",
                len(outcome.undelivered),
                outcome.last_error,
            )
        self.totals["published"] += len(accepted)
        self.totals["parked"] += len(parked)
        return RelayResult(
            len(accepted),
            len(parked),
            len(outcome.undelivered),
            tuple(ParkedRow(row_id, reason) for row_id, reason in parked),
            str(outcome.last_error) if outcome.undelivered and outcome.last_error else None,
        )

    def _delete(self, connection: Connection, row_ids: list[int]) -> None:
        table = self.table
        if not row_ids:
            return
        if self.engine.dialect.name in ("mysql", "mariadb"):
            # One primary-key lookup per row: an IN list becomes a range scan, and InnoDB
            # locks the record after a range's end -- a row another relay holds -- which
            # deadlocks two relays working on neighbouring batches.
            connection.execute(
                delete(table).where(table.c.id == bindparam("row_id")),
                [{"row_id": row_id} for row_id in row_ids],
            )
            return
        for start in range(0, len(row_ids), 500):
            connection.execute(delete(table).where(table.c.id.in_(row_ids[start : start + 500])))

    def _report(
        self, error: BaseException, events: Sequence[ChangeEvent], row_id: int, reason: str
    ) -> None:
        """A parked row is an expected, explained outcome: one warning line, no traceback."""
        log.warning(
            "outbox relay: parked row %d (see sqla-audit outbox status): %s",
            row_id,
            reason,
            extra={"outbox_id": row_id, "reason": reason},
        )
        report_failure(error, events, self._on_error, logged=True)


__all__ = ["MessageSender", "OutboxRelay", "ParkedRow", "RelayResult", "is_transient_conflict"]
