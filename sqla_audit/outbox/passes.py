"""One relay pass: the rows it took, the messages they hold, and how they are settled.

:func:`open_pass` starts a pass on its own connection and transaction (the rows stay locked
until :meth:`RelayPass.finish` commits or :meth:`RelayPass.abandon` rolls back); the relay
(:mod:`sqla_audit.outbox.relay`) sends :attr:`RelayPass.messages` in between. Keeping the
pass an object lets the relay hold two at once: one being sent, the next one selected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction, Row, Select, Table
from sqlalchemy.exc import SQLAlchemyError

from sqla_audit.errors import DecodeError
from sqla_audit.events import ChangeEvent, utcnow
from sqla_audit.outbox.payloads import Unreadable, event_field
from sqla_audit.outbox.rows import outbox_connection, select_pending
from sqla_audit.outbox.settle import (
    RowOutcome,
    apply_settlement,
    held_columns,
    hold,
    plan_settlement,
)
from sqla_audit.publishers.sns import OutgoingMessage, SendOutcome

#: ``report(error, events, row_id, reason, event_id)``: an event (``event_id`` when it was
#: one of several in its row) or an unreadable row was parked.
Report = Callable[[BaseException, Sequence[ChangeEvent], int, str, "str | None"], None]

_ROUTING_FIELDS = ("event_id", "table", "operation", "service", "record_id")


@dataclass(frozen=True, slots=True)
class ParkedRow:
    """An event the relay parked (or a row it could not read), and why (its ``last_error``).

    ``row_id`` is the row the event was taken from; an event of a several-event row is
    parked in a row of its own (see ``sqla-audit outbox status``)."""

    row_id: int
    reason: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class RelayResult:
    """What one pass (or several, summed) did, in events."""

    published: int = 0
    parked: int = 0
    deferred: int = 0
    #: the parked events, with their reasons (details: not compared)
    parked_rows: tuple[ParkedRow, ...] = field(default=(), compare=False)
    #: why SNS did not take the deferred events (its last error), when it said
    last_error: str | None = field(default=None, compare=False)
    #: outbox rows the pass selected
    rows: int = field(default=0, compare=False)
    #: the pass got all the rows it asked for (more are probably waiting)
    full: bool = field(default=False, compare=False)

    @property
    def selected(self) -> int:
        """Events the pass handled."""
        return self.published + self.parked + self.deferred


def _message(text: str, value: Any) -> OutgoingMessage:
    """The message of one stored event (its text verbatim); :class:`DecodeError` when the
    routing fields cannot be read."""
    if isinstance(value, Unreadable):
        raise DecodeError(f"stored event is not JSON: {value}")
    if not isinstance(value, dict):
        raise DecodeError("stored event is not a JSON object")
    fields: dict[str, str] = {}
    get = value.get
    for name in _ROUTING_FIELDS:
        found = get(name)
        if not isinstance(found, str) or not found:
            raise DecodeError(f"stored event lacks a string {name!r}")
        fields[name] = found
    return OutgoingMessage(body=text, **fields)


@dataclass(slots=True)
class PreparedPass:
    """The messages of a pass's rows, and where each came from."""

    rows: int = 0
    messages: list[OutgoingMessage] = field(default_factory=list)
    outcomes: list[RowOutcome] = field(default_factory=list)
    #: id(message) -> (its row's outcome, its index in the row)
    origin: dict[int, tuple[RowOutcome, int]] = field(default_factory=dict)
    #: rows whose payload cannot be cut into events: (row id, reason)
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    parked: list[ParkedRow] = field(default_factory=list)


def prepare(rows: Sequence[Row[Any]], report: Report) -> PreparedPass:
    """Cut ``rows`` (:func:`held_columns`) into messages; unreadable events are refused."""
    prepared = PreparedPass(rows=len(rows))
    for row in rows:
        try:
            held = hold(row)
        except DecodeError as exc:
            reason = f"undecodable payload: {exc}"
            prepared.unreadable.append((row.id, reason))
            prepared.parked.append(ParkedRow(row.id, reason))
            report(exc, [], row.id, reason, None)
            continue
        outcome = RowOutcome(held)
        prepared.outcomes.append(outcome)
        for index, (text, value) in enumerate(zip(held.texts, held.values, strict=True)):
            try:
                message = _message(text, value)
            except DecodeError as exc:
                reason = f"undecodable payload: {exc}"
                outcome.refused[index] = reason
                event_id = event_field(value, "event_id") if len(held.texts) > 1 else None
                prepared.parked.append(ParkedRow(row.id, reason, event_id))
                report(exc, [], row.id, reason, event_id)
                continue
            prepared.messages.append(message)
            prepared.origin[id(message)] = (outcome, index)
    return prepared


def settle(
    connection: Connection,
    table: Table,
    prepared: PreparedPass,
    outcome: SendOutcome,
    report: Report,
) -> RelayResult:
    """Write back what SNS did with the pass's messages (in the pass's transaction)."""
    parked = list(prepared.parked)
    for message in outcome.accepted:
        row_outcome, index = prepared.origin[id(message)]
        row_outcome.done.add(index)
    for message, error in outcome.rejected:
        row_outcome, index = prepared.origin[id(message)]
        reason = f"{type(error).__name__}: {error}"
        row_outcome.refused[index] = reason
        row_id = row_outcome.row.id
        event_id = message.event_id if len(row_outcome.row.texts) > 1 else None
        parked.append(ParkedRow(row_id, reason, event_id))
        event = message.to_event()
        report(error, [event] if event is not None else [], row_id, reason, event_id)
    now = utcnow()
    plan = plan_settlement(prepared.outcomes, now)
    plan.parked_in_place.extend(prepared.unreadable)
    apply_settlement(connection, table, plan, now)
    return RelayResult(
        published=len(outcome.accepted),
        parked=len(parked),
        deferred=len(outcome.undelivered),
        parked_rows=tuple(parked),
        last_error=(
            str(outcome.last_error) if outcome.undelivered and outcome.last_error else None
        ),
        rows=prepared.rows,
    )


@dataclass(slots=True)
class RelayPass:
    """An open pass: its connection and transaction hold the rows of :attr:`prepared`."""

    connection: Connection
    transaction: RootTransaction
    prepared: PreparedPass
    #: rows the pass asked for
    limit: int

    @property
    def messages(self) -> list[OutgoingMessage]:
        return self.prepared.messages

    @property
    def full(self) -> bool:
        """The pass got all the rows it asked for."""
        return self.prepared.rows >= self.limit

    @property
    def events(self) -> int:
        """Events the pass's rows hold (a row that cannot be read counts one)."""
        prepared = self.prepared
        return sum(len(o.row.texts) for o in prepared.outcomes) + len(prepared.unreadable)

    def finish(self, table: Table, outcome: SendOutcome, report: Report) -> RelayResult:
        """Settle the rows from ``outcome`` and commit (on error: roll back, raise)."""
        try:
            result = settle(self.connection, table, self.prepared, outcome, report)
            self.transaction.commit()
        finally:
            self.close()
        return replace(result, full=self.full)

    def abandon(self) -> None:
        """Roll back: the rows are pending again, untouched."""
        self.close()

    def close(self) -> None:
        with contextlib.suppress(SQLAlchemyError):
            self.connection.close()  # rolls back a transaction still open


def select_pass(table: Table, batch_size: int) -> Select[Any]:
    """The pass's query: up to ``batch_size`` pending rows, lowest id first, ``FOR UPDATE
    SKIP LOCKED``."""
    return select_pending(table, batch_size, *held_columns(table))


def open_pass(engine: Engine, query: Select[Any], report: Report, limit: int) -> RelayPass | None:
    """Select and lock the rows of ``query`` (:func:`select_pass` of ``limit`` rows) in a new
    transaction; ``None`` (and nothing held) when there is none."""
    connection = outbox_connection(engine)
    try:
        transaction = connection.begin()
        rows = connection.execute(query).all()
        if not rows:
            transaction.commit()
            connection.close()
            return None
        return RelayPass(connection, transaction, prepare(rows, report), limit)
    except BaseException:
        with contextlib.suppress(SQLAlchemyError):
            connection.close()
        raise


__all__ = [
    "ParkedRow",
    "PreparedPass",
    "RelayPass",
    "RelayResult",
    "Report",
    "open_pass",
    "prepare",
    "select_pass",
    "settle",
]
