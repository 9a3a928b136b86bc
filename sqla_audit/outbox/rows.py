"""Row operations on the outbox table shared by the relay and the consumer's outbox source.

Both take pending rows the same way (lowest id first, ``FOR UPDATE SKIP LOCKED``, in a
``READ COMMITTED`` transaction on MySQL/MariaDB) and park rows the same way (``failed_at``,
``last_error`` capped at :data:`MAX_ERROR_CHARS`); each keeps its own delete strategy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import Connection, Engine, Select, Table, Update, bindparam, select, update
from sqlalchemy.sql.elements import ColumnElement

#: Longest ``last_error`` kept on a parked row.
MAX_ERROR_CHARS: Final = 2000


def outbox_connection(engine: Engine) -> Connection:
    """A connection for outbox work: ``READ COMMITTED`` on MySQL/MariaDB, so taking rows
    sets no gap locks that would make the application's own outbox inserts wait."""
    connection = engine.connect()
    if engine.dialect.name in ("mysql", "mariadb"):
        connection = connection.execution_options(isolation_level="READ COMMITTED")
    return connection


def select_pending(table: Table, limit: int, *columns: ColumnElement[Any]) -> Select[Any]:
    """``columns`` of up to ``limit`` pending rows (``failed_at IS NULL``), lowest id first,
    ``FOR UPDATE SKIP LOCKED`` (ignored where the database has no row locks)."""
    return (
        select(*columns)
        .where(table.c.failed_at.is_(None))
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def park_statement(table: Table) -> Update:
    """An UPDATE that parks one row per parameter set: ``row_id`` plus :func:`park_values`."""
    return (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values(failed_at=bindparam("parked_at"), last_error=bindparam("reason"))
    )


def park_values(reason: str, parked_at: dt.datetime) -> dict[str, Any]:
    """The parameters of :func:`park_statement` besides ``row_id`` (``reason`` capped)."""
    return {"parked_at": parked_at, "reason": reason[:MAX_ERROR_CHARS]}


__all__ = [
    "MAX_ERROR_CHARS",
    "outbox_connection",
    "park_statement",
    "park_values",
    "select_pending",
]
