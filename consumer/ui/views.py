"""What the viewer's templates show: records, states and times turned into plain text pieces.

Values are rendered exactly as the command line renders them (:mod:`consumer.render`):
strings quoted so that ``"NULL"`` and ``NULL`` differ, masked values as ``***``, nested JSON
changes one line per path (``details.items[0].qty``). Everything here is plain text; the
templates escape it (Jinja2 autoescape), so no value can become markup.

Markers -- changes that are not an ordinary row change -- get a sentence saying what they are:
a departure (the row's primary key changed; the record under the old id ends there), an
arrival (this id was reached by a key change), a bulk-statement marker (rows a bulk
statement changed that were not itemized, record id ``*``) and a restore (a change written
by :mod:`consumer.restore`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from consumer.query import RecordState
from consumer.records import AuditRecord, FieldChange
from consumer.render import format_value
from sqla_audit.events import MARKER_METADATA_KEY, MARKER_RECORD_ID, Operation
from sqla_audit.serialization import MASKED, JSONValue, decode_value

#: Metadata key of a change written by a restore (consumer.restore.RESTORE_METADATA_KEY,
#: repeated here so the viewer does not import the ORM side).
RESTORE_KEY: Final = "sqla_audit.restore"

#: Why a bulk statement's rows were not itemized (metadata ``reason``).
BULK_REASONS: Final = {
    "max_bulk_rows": "more rows than max_bulk_rows, the cap on rows itemized per statement",
    "unmatched_rows": "the statement changed rows it could not match to keys",
    "primary_key_updated": "the statement assigned primary keys",
    "keys_unknown": "the database did not report the keys of the rows",
    "upsert": "an upsert, whose rows the database does not report one by one",
    "keys_unmatched": "the keys read back did not match the rows changed",
}

#: What ``***`` means, shown beside masked values.
MASKED_NOTE: Final = "*** masked column: the change is recorded, its values never are"


@dataclass(frozen=True, slots=True)
class Stamp:
    """An instant: ``iso`` for machines (and the as-of links), ``text`` for people (UTC)."""

    iso: str
    text: str


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a change: where (column, nested path), what it was, what it became.

    ``kind``: ``changed``, ``added``/``removed`` (a nested element), ``set`` (an insert's
    value) or ``cleared`` (a delete's value). ``old``/``new`` are ``None`` where absent.
    """

    where: str
    kind: str
    old: str | None
    new: str | None
    masked: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """A link to another record (a key move): its service, table and record id."""

    service: str
    table: str
    record_id: str


@dataclass(frozen=True, slots=True)
class ChangeView:
    """One change as the pages show it."""

    record: AuditRecord
    time: Stamp
    lines: tuple[DiffLine, ...]
    notes: tuple[str, ...]
    moved_to: Link | None
    moved_from: Link | None
    metadata: tuple[tuple[str, str], ...]
    actor_attributes: tuple[tuple[str, str], ...]

    @property
    def masked(self) -> bool:
        return any(line.masked for line in self.lines)

    @property
    def day(self) -> str:
        return self.record.day.isoformat()


@dataclass(frozen=True, slots=True)
class StateView:
    """A record's state at an instant."""

    state: RecordState
    at: Stamp
    values: tuple[tuple[str, str, bool], ...]  # column, value text, masked
    event: ChangeView | None
    moved_to: Link | None

    @property
    def masked(self) -> bool:
        return any(masked for _, _, masked in self.values)


def stamp(value: dt.datetime) -> Stamp:
    """``2026-03-01T09:00:00.123456Z`` and ``2026-03-01 09:00:00.123456 UTC``."""
    utc = value.astimezone(dt.UTC)
    iso = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Stamp(iso=iso, text=utc.strftime("%Y-%m-%d %H:%M:%S.%f UTC"))


def is_masked(value: JSONValue) -> bool:
    """True for the masked placeholder of a wire value."""
    try:
        return decode_value(value) is MASKED
    except (TypeError, ValueError):
        return False


def _path(name: str, path: Sequence[str | int]) -> str:
    return name + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)


def diff_lines(record: AuditRecord) -> tuple[DiffLine, ...]:
    """The field-level lines of one change (an insert's values, a delete's last values)."""
    lines: list[DiffLine] = []
    for name, change in record.changes.items():
        lines.extend(_column_lines(record.operation, name, change))
    return tuple(lines)


def _column_lines(operation: Operation, name: str, change: FieldChange) -> Iterable[DiffLine]:
    if operation is Operation.INSERT:
        yield DiffLine(name, "set", None, format_value(change.new), is_masked(change.new))
        return
    if operation is Operation.DELETE:
        yield DiffLine(name, "cleared", format_value(change.old), None, is_masked(change.old))
        return
    if not change.detail:
        masked = is_masked(change.old) or is_masked(change.new)
        yield DiffLine(name, "changed", format_value(change.old), format_value(change.new), masked)
        return
    for item in change.detail:
        where = _path(name, item.path)
        if item.kind == "added":
            yield DiffLine(where, "added", None, format_value(item.new))
        elif item.kind == "removed":
            yield DiffLine(where, "removed", format_value(item.old), None)
        else:
            yield DiffLine(where, "changed", format_value(item.old), format_value(item.new))


def _bulk_note(description: JSONValue) -> str:
    if not isinstance(description, Mapping):
        return "Bulk-statement marker: rows a bulk statement changed, not itemized."
    rows = description.get("rows")
    count = "an unknown number of rows" if rows is None else f"{rows} rows"
    reason = str(description.get("reason") or "unknown")
    why = BULK_REASONS.get(reason, "")
    text = (
        f"Bulk {description.get('operation') or 'statement'} of {count}, "
        f"{description.get('itemized', 0)} itemized: the rest are not listed one by one "
        f"(reason {reason}{': ' + why if why else ''})."
    )
    statement = description.get("statement")
    if isinstance(statement, str) and statement:
        text += f" Statement: {statement}"
    return text


def _restore_note(description: JSONValue) -> str:
    if not isinstance(description, Mapping):
        return "Written by a restore."
    parts = [
        f"{label} {description[key]}"
        for key, label in (
            ("event_id", "the state after event"),
            ("at", "the state at"),
            ("transaction_id", "undoing transaction"),
        )
        if description.get(key)
    ]
    return "Written by a restore" + (f" ({'; '.join(parts)})." if parts else ".")


def notes_of(record: AuditRecord) -> tuple[str, ...]:
    """Sentences explaining a marker, a key move or a restore (empty for a plain change)."""
    notes: list[str] = []
    if record.moved_to is not None:
        notes.append(
            f"Primary key changed: the row moved to {record.moved_to}; its history goes on "
            "under that key (this is not a delete)."
        )
    elif record.previous_record_id is not None and record.previous_record_id != record.record_id:
        notes.append(f"Primary key changed: the row moved here from {record.previous_record_id}.")
    if record.record_id == MARKER_RECORD_ID and MARKER_METADATA_KEY in record.metadata:
        notes.append(_bulk_note(record.metadata[MARKER_METADATA_KEY]))
    if RESTORE_KEY in record.metadata:
        notes.append(_restore_note(record.metadata[RESTORE_KEY]))
    if not record.changes and record.operation is Operation.UPDATE and not notes:
        notes.append("No column changes.")
    return tuple(notes)


def _pairs(
    values: Mapping[str, JSONValue], skip: Iterable[str] = ()
) -> tuple[tuple[str, str], ...]:
    hidden = set(skip)
    return tuple(
        (name, format_value(value)) for name, value in values.items() if name not in hidden
    )


def change_view(record: AuditRecord) -> ChangeView:
    moved_to = None
    if record.moved_to is not None:
        moved_to = Link(record.service, record.table, record.moved_to)
    moved_from = None
    if record.previous_record_id is not None and record.previous_record_id != record.record_id:
        moved_from = Link(record.service, record.table, record.previous_record_id)
    return ChangeView(
        record=record,
        time=stamp(record.event_time),
        lines=diff_lines(record),
        notes=notes_of(record),
        moved_to=moved_to,
        moved_from=moved_from,
        metadata=_pairs(record.metadata, skip=("sqla_audit.moved_to", "sqla_audit.move_event_id")),
        actor_attributes=_pairs(record.actor_attributes),
    )


def state_view(state: RecordState) -> StateView:
    values = tuple(
        (name, format_value(value), is_masked(value))
        for name, value in (state.wire_values or {}).items()
    )
    moved = None if state.moved_to is None else Link(state.service, state.table, state.moved_to)
    return StateView(
        state=state,
        at=stamp(state.at),
        values=values,
        event=None if state.event is None else change_view(state.event),
        moved_to=moved,
    )


def group_by_day(views: Iterable[ChangeView]) -> list[tuple[str, list[ChangeView]]]:
    """Consecutive changes of the same UTC day together, in the order given."""
    groups: list[tuple[str, list[ChangeView]]] = []
    for view in views:
        if groups and groups[-1][0] == view.day:
            groups[-1][1].append(view)
        else:
            groups.append((view.day, [view]))
    return groups


__all__ = [
    "BULK_REASONS",
    "MASKED_NOTE",
    "ChangeView",
    "DiffLine",
    "Link",
    "Stamp",
    "StateView",
    "change_view",
    "diff_lines",
    "group_by_day",
    "is_masked",
    "notes_of",
    "stamp",
    "state_view",
]
