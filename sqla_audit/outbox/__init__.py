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


def requeue_parked(engine: Engine, table: Table | None = None) -> int:
    """Make parked rows (refused by SNS) pending again; return how many."""
    table = outbox_table() if table is None else table
    with engine.begin() as connection:
        result = connection.execute(
            update(table)
            .where(table.c.failed_at.is_not(None))
            .values(failed_at=None, last_error=None)
        )
    return int(result.rowcount)


__all__ = [
    "DEFAULT_TABLE_NAME",
    "OutboxWriter",
    "UTCDateTime",
    "create_outbox_table",
    "outbox_counts",
    "outbox_table",
    "requeue_parked",
]
