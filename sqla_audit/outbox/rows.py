"""Row operations on the outbox table shared by the relay and the consumer's outbox source.

Both take pending rows the same way (lowest id first, ``FOR UPDATE SKIP LOCKED``, in a
``READ COMMITTED`` transaction on MySQL/MariaDB) and park rows the same way (``failed_at``,
``last_error`` capped at :data:`MAX_ERROR_CHARS`); each keeps its own delete strategy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    Update,
    bindparam,
    func,
    select,
    update,
)
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


class ParkedRowInfo(NamedTuple):
    """A parked outbox row, for operators: what it holds and why it is parked."""

    id: int
    event_id: str
    table_name: str
    record_id: str
    created_at: dt.datetime | None
    failed_at: dt.datetime | None
    last_error: str | None
    #: events the row holds (more than one only for a row that could not be read at all)
    event_count: int = 1


@dataclass(frozen=True, slots=True)
class ParkedSelection:
    """Which parked rows to list or requeue; every criterion given must hold."""

    #: lowest and highest row id (inclusive)
    id_from: int | None = None
    id_to: int | None = None
    #: a case-insensitive part of ``last_error``
    error: str | None = None
    #: parked (``failed_at``) before this time
    parked_before: dt.datetime | None = None


def select_parked(table: Table, selection: ParkedSelection) -> Select[Any]:
    """The :class:`ParkedRowInfo` columns of the parked rows ``selection`` chooses, by id."""
    c = table.c
    query = (
        select(
            c.id,
            c.event_id,
            c.table_name,
            c.record_id,
            c.created_at,
            c.failed_at,
            c.last_error,
            c.event_count,
        )
        .where(c.failed_at.is_not(None))
        .order_by(c.id)
    )
    if selection.id_from is not None:
        query = query.where(c.id >= selection.id_from)
    if selection.id_to is not None:
        query = query.where(c.id <= selection.id_to)
    if selection.error:
        needle = selection.error.lower()
        query = query.where(func.lower(c.last_error).contains(needle, autoescape=True))
    if selection.parked_before is not None:
        query = query.where(c.failed_at < selection.parked_before)
    return query


__all__ = [
    "MAX_ERROR_CHARS",
    "ParkedRowInfo",
    "ParkedSelection",
    "outbox_connection",
    "park_statement",
    "park_values",
    "select_parked",
    "select_pending",
]
