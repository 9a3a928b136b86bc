"""The viewer's "restore this version" preview: what a restore would change, read from the
audit trail alone.

A real restore (:func:`consumer.restore.plan_restore`) needs the application's own session:
it compares the row *in the database* with the version asked for and writes through the ORM.
The viewer has only the audit store, so the preview compares the version (the record right
after the chosen event) with the latest state the trail knows, and shows the call that plans
-- and, once reviewed, applies -- the restore in the application. The application's dry run
is the authority: the row may have changed in ways the trail has not seen yet.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final, Literal

from consumer.query import AuditQuery, RecordState
from consumer.records import AuditRecord
from consumer.render import format_value
from consumer.ui.views import is_masked
from sqla_audit.events import Operation
from sqla_audit.serialization import JSONValue

#: Most changes read back from the newest to find the chosen event.
MAX_SCAN: Final = 10_000

Action = Literal["update", "insert", "delete", "none", "moved"]


@dataclass(frozen=True, slots=True)
class PlannedColumn:
    """One column the restore would write: its latest and restored values (text)."""

    column: str
    current: str
    restored: str
    #: Why it cannot be restored from the log (``None``: it can).
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    event: AuditRecord
    latest: RecordState
    action: Action
    columns: tuple[PlannedColumn, ...]
    snippet: str


def find_event(
    query: AuditQuery, service: str, table: str, record_id: str, event_id: str
) -> tuple[AuditRecord | None, set[str]]:
    """The record's change ``event_id`` and the columns changed after it (newest first scan)."""
    later: set[str] = set()
    for index, record in enumerate(query.iter_history(table, record_id, service=service)):
        if str(record.event_id) == event_id:
            return record, later
        if index >= MAX_SCAN:
            break
        later.update(record.changes)
    return None, later


def _version(event: AuditRecord) -> dict[str, JSONValue] | None:
    """The row right after ``event`` (``None``: no row then)."""
    if event.operation is Operation.DELETE or event.after is None:
        return None
    return dict(event.after)


def plan_preview(
    query: AuditQuery,
    service: str,
    table: str,
    record_id: str,
    *,
    event: AuditRecord,
    later: set[str],
) -> Preview:
    """Compare the version after ``event`` with the latest state the trail knows."""
    latest = query.as_of(table, record_id, dt.datetime.now(dt.UTC), service=service)
    version = _version(event)
    current = dict(latest.wire_values or {})
    columns: list[PlannedColumn] = []
    action: Action
    if latest.moved_to is not None:
        action = "moved"
    elif version is None:
        action = "delete" if latest.exists else "none"
    elif not latest.exists:
        action = "insert"
        for name, value in version.items():
            problem = "masked: its value is not in the audit log" if is_masked(value) else None
            columns.append(PlannedColumn(name, "(no row)", format_value(value), problem))
    else:
        action = "update"
        for name, value in version.items():
            now = current.get(name)
            if is_masked(value) or is_masked(now):
                if name in later:
                    columns.append(
                        PlannedColumn(
                            name,
                            format_value(now),
                            format_value(value),
                            "masked and changed since: its value is not in the audit log",
                        )
                    )
                continue
            if now != value:
                columns.append(PlannedColumn(name, format_value(now), format_value(value)))
        if not columns:
            action = "none"
    return Preview(
        event=event,
        latest=latest,
        action=action,
        columns=tuple(columns),
        snippet=snippet(service, table, record_id, str(event.event_id)),
    )


def snippet(service: str, table: str, record_id: str, event_id: str) -> str:
    """The Python that plans, then applies, this restore in the application."""
    return f"""import uuid

from consumer.query import AuditQuery
from consumer.restore import plan_restore
from sqla_audit import audit_context

query = AuditQuery(store)  # the audit store this viewer reads
# Model: your mapped class of table {table!r}; Session: your audited sessionmaker

# 1. dry run: reads the row in your database, writes nothing
with Session() as session:
    plan = plan_restore(
        session, query, Model, {record_id!r},
        event_id=uuid.UUID({event_id!r}), service={service!r},
    )
for table, record_id, change in plan.changes:
    print(change.column, change.current, "->", change.restored)

# 2. apply it, as the person who asked, in one transaction (audited like any change)
with audit_context(actor="you"), Session.begin() as session:
    plan.apply(session)
"""


__all__ = ["MAX_SCAN", "PlannedColumn", "Preview", "find_event", "plan_preview", "snippet"]
