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

from sqlalchemy import Engine, Table, func, select, update

from sqla_audit.outbox.rows import ParkedRowInfo, ParkedSelection, select_parked
from sqla_audit.outbox.table import DEFAULT_TABLE_NAME, UTCDateTime, outbox_table
from sqla_audit.outbox.writer import OutboxWriter


def create_outbox_table(engine: Engine, table: Table | None = None) -> Table:
    """Create the outbox table if it does not exist (idempotent) and return it."""
    table = outbox_table() if table is None else table
    table.create(engine, checkfirst=True)
    return table


def outbox_counts(engine: Engine, table: Table | None = None) -> tuple[int, int]:
    """``(pending, parked)`` row counts of the outbox."""
    table = outbox_table() if table is None else table
    with engine.connect() as connection:
        pending = connection.execute(
            select(func.count()).select_from(table).where(table.c.failed_at.is_(None))
        ).scalar_one()
        parked = connection.execute(
            select(func.count()).select_from(table).where(table.c.failed_at.is_not(None))
        ).scalar_one()
    return int(pending), int(parked)


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
    "OutboxWriter",
    "ParkedRowInfo",
    "ParkedSelection",
    "UTCDateTime",
    "create_outbox_table",
    "outbox_counts",
    "outbox_table",
    "parked_rows",
    "requeue_parked",
    "requeue_parked_rows",
]
