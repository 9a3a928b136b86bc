"""Outbox mode: change events stored in the application's database, relayed to SNS.

Why: publishing after commit (direct mode) loses the events of a process that dies between
its commit and the publish. In outbox mode the events are rows of the same transaction as
the data (:class:`OutboxWriter`), so they exist if and only if the data was committed; a
relay (:mod:`sqla_audit.outbox.relay`, ``sqla-audit relay --db URL``) publishes them to SNS
in id order and deletes them once SNS accepted them.

This package imports SQLAlchemy only; the relay, which needs boto3, lives in
:mod:`sqla_audit.outbox.relay` and is imported on demand.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Engine, Table, func, select, update

from sqla_audit.outbox.rows import ParkedRowInfo, ParkedSelection, select_parked
from sqla_audit.outbox.table import (
    DEFAULT_TABLE_NAME,
    LAYOUT_BATCH,
    LAYOUT_EVENT,
    PAYLOAD_STORAGE_DDL,
    UTCDateTime,
    outbox_table,
)
from sqla_audit.outbox.writer import OutboxWriter


def create_outbox_table(engine: Engine, table: Table | None = None) -> Table:
    """Create the outbox table if it does not exist (idempotent) and return it."""
    table = outbox_table() if table is None else table
    table.create(engine, checkfirst=True)
    return table


class OutboxCounts(NamedTuple):
    """Events and rows of the outbox, pending and parked."""

    pending: int
    parked: int
    pending_rows: int
    parked_rows: int


def outbox_tally(engine: Engine, table: Table | None = None) -> OutboxCounts:
    """Pending and parked events (a layout-2 row holds several) and rows."""
    table = outbox_table() if table is None else table
    parked = table.c.failed_at.is_not(None)
    query = select(
        parked.label("parked"),
        func.count().label("rows"),
        func.coalesce(func.sum(table.c.event_count), 0).label("events"),
    ).group_by(parked)
    counts = {False: (0, 0), True: (0, 0)}
    with engine.connect() as connection:
        for row in connection.execute(query):
            counts[bool(row.parked)] = (int(row.events), int(row.rows))
    return OutboxCounts(counts[False][0], counts[True][0], counts[False][1], counts[True][1])


def outbox_counts(engine: Engine, table: Table | None = None) -> tuple[int, int]:
    """``(pending, parked)`` event counts of the outbox."""
    tally = outbox_tally(engine, table)
    return tally.pending, tally.parked


def parked_rows(
    engine: Engine, table: Table | None = None, selection: ParkedSelection | None = None
) -> list[ParkedRowInfo]:
    """The parked rows (all, or those ``selection`` chooses), lowest id first."""
    table = outbox_table() if table is None else table
    query = select_parked(table, selection or ParkedSelection())
    with engine.connect() as connection:
        return [ParkedRowInfo(*row) for row in connection.execute(query).all()]


def requeue_parked(
    engine: Engine, table: Table | None = None, selection: ParkedSelection | None = None
) -> int:
    """Make parked rows (refused by SNS) pending again; return how many."""
    return len(requeue_parked_rows(engine, table, selection))


def requeue_parked_rows(
    engine: Engine,
    table: Table | None = None,
    selection: ParkedSelection | None = None,
) -> list[ParkedRowInfo]:
    """Make parked rows (all, or those ``selection`` chooses) pending again, in one
    transaction; returns the rows requeued."""
    table = outbox_table() if table is None else table
    with engine.begin() as connection:
        rows = [
            ParkedRowInfo(*row)
            for row in connection.execute(
                select_parked(table, selection or ParkedSelection())
            ).all()
        ]
        ids = [row.id for row in rows]
        for start in range(0, len(ids), 500):
            connection.execute(
                update(table)
                .where(table.c.id.in_(ids[start : start + 500]), table.c.failed_at.is_not(None))
                .values(failed_at=None, last_error=None)
            )
    return rows


__all__ = [
    "DEFAULT_TABLE_NAME",
    "LAYOUT_BATCH",
    "LAYOUT_EVENT",
    "PAYLOAD_STORAGE_DDL",
    "OutboxCounts",
    "OutboxWriter",
    "ParkedRowInfo",
    "ParkedSelection",
    "UTCDateTime",
    "create_outbox_table",
    "outbox_counts",
    "outbox_table",
    "outbox_tally",
    "parked_rows",
    "requeue_parked",
    "requeue_parked_rows",
]
