"""Settling outbox rows event by event: what the relay and the consumer's source write back.

A row of layout 2 holds several events, and each event has its own fate: SNS (or the store)
took it, refused it for good, or has not taken it yet. A row is settled once per pass or
lease, from the fate of each of its events (:class:`RowOutcome`):

* every event taken -> the row is deleted;
* none taken or refused -> the row stays as it is (pending);
* a one-event row whose event was refused -> the row is *parked* in place (``failed_at``,
  ``last_error``), as before layout 2;
* otherwise the row is split: each refused event gets a parked row of its own (layout 1, its
  text verbatim), and the row keeps only the events not taken yet (same id, so its place in
  the relay order) or is deleted when none is left.

So one bad event never holds back the others of its transaction, an event is never published
or stored again once it was taken (short of a crash before the commit: at-least-once), and
a parked row always names the one event it holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, Table, bindparam, delete, update
from sqlalchemy.sql.elements import ColumnElement

from sqla_audit.outbox.payloads import batch_payload, event_field, split_payload
from sqla_audit.outbox.rows import MAX_ERROR_CHARS, park_statement, park_values
from sqla_audit.outbox.table import LAYOUT_BATCH, LAYOUT_EVENT


@dataclass(slots=True)
class HeldRow:
    """An outbox row taken by a relay pass or a consumer lease, cut into its events."""

    id: int
    event_id: str
    transaction_id: str
    table_name: str
    record_id: str
    created_at: dt.datetime | None
    #: each event's wire text, verbatim, in order
    texts: list[str]
    #: each event's parsed JSON (``None`` where it is not JSON)
    values: list[Any]


def held_columns(table: Table) -> tuple[ColumnElement[Any], ...]:
    """The columns :func:`hold` reads."""
    c = table.c
    return (
        c.id,
        c.event_id,
        c.transaction_id,
        c.table_name,
        c.record_id,
        c.created_at,
        c.layout,
        c.payload,
    )


def hold(row: Row[Any]) -> HeldRow:
    """A selected row (:func:`held_columns`) cut into its events; :class:`DecodeError` when
    its payload cannot be cut (the whole row is unreadable)."""
    events = split_payload(row.payload, row.layout)
    return HeldRow(
        id=row.id,
        event_id=row.event_id,
        transaction_id=row.transaction_id,
        table_name=row.table_name,
        record_id=row.record_id,
        created_at=row.created_at,
        texts=[text for text, _ in events],
        values=[value for _, value in events],
    )


@dataclass(slots=True)
class RowOutcome:
    """The fate of each event of ``row``: indexes taken, and refused with a reason."""

    row: HeldRow
    done: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def left(self) -> list[int]:
        """Indexes neither taken nor refused (still pending), in order."""
        return [
            i for i in range(len(self.row.texts)) if i not in self.done and i not in self.refused
        ]


@dataclass(slots=True)
class Settlement:
    """The writes that settle a set of rows."""

    deleted: list[int] = field(default_factory=list)
    parked_in_place: list[tuple[int, str]] = field(default_factory=list)
    parked_rows: list[dict[str, Any]] = field(default_factory=list)
    rewritten: list[dict[str, Any]] = field(default_factory=list)


def _label(value: Any, name: str, fallback: str, limit: int | None = None) -> str:
    text = event_field(value, name) or fallback
    return text[:limit] if limit is not None else text


def plan_settlement(outcomes: Iterable[RowOutcome], now: dt.datetime) -> Settlement:
    """The writes for ``outcomes`` (see the module documentation)."""
    plan = Settlement()
    for outcome in outcomes:
        row = outcome.row
        left = outcome.left
        if not outcome.refused:
            if not left:
                plan.deleted.append(row.id)
            elif outcome.done:
                plan.rewritten.append(_rewrite(row, left))
            continue
        if len(row.texts) == 1:
            plan.parked_in_place.append((row.id, outcome.refused[0]))
            continue
        for index, reason in sorted(outcome.refused.items()):
            value = row.values[index]
            plan.parked_rows.append(
                {
                    "event_id": _label(value, "event_id", row.event_id, 36),
                    "transaction_id": _label(value, "transaction_id", row.transaction_id, 36),
                    "table_name": _label(value, "table", row.table_name, 255),
                    "record_id": _label(value, "record_id", row.record_id),
                    "payload": row.texts[index],
                    "created_at": row.created_at or now,
                    "failed_at": now,
                    "last_error": reason[:MAX_ERROR_CHARS],
                    "layout": LAYOUT_EVENT,
                    "event_count": 1,
                }
            )
        if left:
            plan.rewritten.append(_rewrite(row, left))
        else:
            plan.deleted.append(row.id)
    return plan


def _rewrite(row: HeldRow, left: Sequence[int]) -> dict[str, Any]:
    first = row.values[left[0]]
    texts = [row.texts[i] for i in left]
    return {
        "row_id": row.id,
        "new_event_id": _label(first, "event_id", row.event_id, 36),
        "new_table_name": _label(first, "table", row.table_name, 255),
        "new_record_id": _label(first, "record_id", row.record_id),
        "new_payload": texts[0] if len(texts) == 1 else batch_payload(texts),
        "new_layout": LAYOUT_EVENT if len(texts) == 1 else LAYOUT_BATCH,
        "new_event_count": len(texts),
    }


def delete_rows(connection: Connection, table: Table, row_ids: Sequence[int]) -> None:
    """Delete rows by id.

    On MySQL/MariaDB one primary-key lookup per row: an ``IN`` list becomes a range scan, and
    InnoDB locks the record after a range's end -- a row another relay or consumer holds --
    which deadlocks two of them working on neighbouring rows.
    """
    if not row_ids:
        return
    if connection.dialect.name in ("mysql", "mariadb"):
        connection.execute(
            delete(table).where(table.c.id == bindparam("row_id")),
            [{"row_id": row_id} for row_id in row_ids],
        )
        return
    for start in range(0, len(row_ids), 500):
        connection.execute(delete(table).where(table.c.id.in_(row_ids[start : start + 500])))


def apply_settlement(
    connection: Connection, table: Table, plan: Settlement, now: dt.datetime
) -> None:
    """Run ``plan``'s writes through ``connection`` (inside the caller's transaction)."""
    if plan.parked_rows:
        connection.execute(table.insert(), plan.parked_rows)
    if plan.parked_in_place:
        connection.execute(
            park_statement(table),
            [
                {"row_id": row_id, **park_values(reason, now)}
                for row_id, reason in plan.parked_in_place
            ],
        )
    if plan.rewritten:
        connection.execute(
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(
                event_id=bindparam("new_event_id"),
                table_name=bindparam("new_table_name"),
                record_id=bindparam("new_record_id"),
                payload=bindparam("new_payload"),
                layout=bindparam("new_layout"),
                event_count=bindparam("new_event_count"),
            ),
            plan.rewritten,
        )
    delete_rows(connection, table, plan.deleted)


__all__ = [
    "HeldRow",
    "RowOutcome",
    "Settlement",
    "apply_settlement",
    "delete_rows",
    "held_columns",
    "hold",
    "plan_settlement",
]
