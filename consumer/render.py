"""Output of the query commands: readable tables for people, JSON for programs.

The table form is for a terminal: one row per change with its time, operation, actor,
transaction and each changed column as ``old → new``, values shortened to stay readable
(strings quoted so that ``"NULL"`` and ``NULL`` differ, masked values shown as ``***``).
It is not meant to be parsed; ``--format json``/``ndjson``/``csv`` are (see
:mod:`consumer.export` for CSV and for plain values). The JSON form keeps values in their wire
encoding (type-tagged JSON, see :mod:`sqla_audit.serialization`), so a program reading it
gets exactly what was stored and can restore Decimals, datetimes and bytes with
:func:`~sqla_audit.serialization.decode_value`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from consumer.query import RecordState
from consumer.records import AuditRecord, FieldChange
from sqla_audit.events import Operation, format_timestamp
from sqla_audit.serialization import (
    MASKED,
    JSONValue,
    TaggedEnum,
    Unserializable,
    decode_value,
)

#: Longest rendering of one value in a table before it is cut with an ellipsis.
MAX_VALUE_WIDTH: Final = 48


# --------------------------------------------------------------------------- JSON


def record_to_json(record: AuditRecord) -> dict[str, JSONValue]:
    """A record as JSON-safe data (values in wire encoding)."""
    return {
        "table": record.table,
        "record_id": record.record_id,
        "event_id": str(record.event_id),
        "event_time": format_timestamp(record.event_time),
        "occurred_at": format_timestamp(record.occurred_at),
        "operation": record.operation.value,
        "service": record.service,
        "actor": (
            None
            if record.actor_id is None
            else {"id": record.actor_id, "attributes": dict(record.actor_attributes)}
        ),
        "request_id": record.request_id,
        "transaction_id": str(record.transaction_id),
        "sequence": record.sequence,
        "changes": {name: change.to_dict() for name, change in record.changes.items()},
        "before": None if record.before is None else dict(record.before),
        "after": None if record.after is None else dict(record.after),
        "previous_record_id": record.previous_record_id,
        "masked_columns": list(record.masked_columns),
        "metadata": dict(record.metadata),
    }


def state_to_json(state: RecordState) -> dict[str, JSONValue]:
    """A :class:`RecordState` as JSON-safe data (``values`` in wire encoding)."""
    return {
        "service": state.service,
        "table": state.table,
        "record_id": state.record_id,
        "at": format_timestamp(state.at),
        "exists": state.exists,
        "values": None if state.wire_values is None else dict(state.wire_values),
        "event": None if state.event is None else record_to_json(state.event),
    }


def dumps(data: JSONValue) -> str:
    """One line of JSON (non-ASCII kept as is)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def json_lines(records: Iterable[AuditRecord]) -> Iterable[str]:
    """One JSON object per record."""
    for record in records:
        yield dumps(record_to_json(record))


# --------------------------------------------------------------------------- values


def _shorten(text: str, width: int = MAX_VALUE_WIDTH) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_value(value: JSONValue) -> str:
    """A readable, one-line rendering of one wire-encoded value."""
    try:
        decoded = decode_value(value)
    except (TypeError, ValueError):  # SerializationError is a TypeError
        return _shorten(dumps(value))
    return _shorten(_format_decoded(decoded))


def _format_decoded(value: Any) -> str:
    if value is MASKED:
        return "***"
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes: {value[:8].hex()}{'…' if len(value) > 8 else ''}>"
    if isinstance(value, TaggedEnum):
        return f"{value.cls.rpartition(':')[2]}.{value.name}"
    if isinstance(value, Unserializable):
        return value.text
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(_format_decoded(item) for item in value)) + "}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return str(value)


def _path_text(path: Sequence[str | int]) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)


def format_change(name: str, change: FieldChange, *, arrow: str = "→") -> list[str]:
    """Readable lines for one column's change: ``name: old → new`` (nested: one per element)."""
    if change.detail:
        lines = []
        for item in change.detail:
            where = name + _path_text(item.path)
            if item.kind == "added":
                lines.append(f"{where}: + {format_value(item.new)}")
            elif item.kind == "removed":
                lines.append(f"{where}: - {format_value(item.old)}")
            else:
                lines.append(f"{where}: {format_value(item.old)} {arrow} {format_value(item.new)}")
        return lines
    return [f"{name}: {format_value(change.old)} {arrow} {format_value(change.new)}"]


def format_changes(record: AuditRecord, *, arrow: str = "→") -> list[str]:
    """Readable lines for every change of a record (inserts show new values only)."""
    lines: list[str] = []
    for name, change in record.changes.items():
        if record.operation is Operation.INSERT:
            lines.append(f"{name}: {format_value(change.new)}")
        elif record.operation is Operation.DELETE:
            lines.append(f"{name}: {format_value(change.old)} {arrow} (deleted)")
        else:
            lines.extend(format_change(name, change, arrow=arrow))
    return lines or ["(no column changes)"]


def format_time(value: dt.datetime) -> str:
    """UTC, microseconds, ``Z``: the form ``--since``/``--until``/``--at`` accept back."""
    return format_timestamp(value)


# --------------------------------------------------------------------------- tables


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Sequence[str]]]) -> str:
    """A plain-text table; each cell is a list of lines, columns padded to fit."""
    widths = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            for line in cell:
                widths[index] = max(widths[index], len(line))
    rule = "  ".join("-" * width for width in widths)

    def line_of(cells: Sequence[str]) -> str:
        return "  ".join(text.ljust(widths[i]) for i, text in enumerate(cells)).rstrip()

    out = [line_of(headers), rule]
    for row in rows:
        height = max((len(cell) for cell in row), default=1)
        for depth in range(height):
            out.append(line_of([cell[depth] if depth < len(cell) else "" for cell in row]))
    return "\n".join(out)


def render_records(
    records: Sequence[AuditRecord],
    *,
    show_record: bool = False,
    show_service: bool = False,
    arrow: str = "→",
) -> str:
    """The readable table of a list of changes (``show_record`` adds table and record id,
    ``show_service`` the service that made each change)."""
    headers = ["EVENT TIME", "OP", "ACTOR", "TRANSACTION"]
    if show_record:
        headers[2:2] = ["TABLE", "RECORD"]
    if show_service:
        headers[2:2] = ["SERVICE"]
    headers.append("CHANGES")
    rows: list[list[list[str]]] = []
    for record in records:
        row = [
            [format_time(record.event_time)],
            [record.operation.value],
            [record.actor_id or "-"],
            [str(record.transaction_id)],
        ]
        if show_record:
            row[2:2] = [[record.table], [record.record_id]]
        if show_service:
            row[2:2] = [[record.service]]
        row.append(format_changes(record, arrow=arrow))
        rows.append(row)
    return render_table(headers, rows)


def describe_event(record: AuditRecord) -> str:
    """``update at 2026-...Z by alice (transaction …)``."""
    actor = f" by {record.actor_id}" if record.actor_id else ""
    return (
        f"{record.operation.value} at {format_time(record.event_time)}{actor} "
        f"(transaction {record.transaction_id})"
    )


def render_state(state: RecordState) -> str:
    """The readable form of a record's state at an instant."""
    head = f"{state.table} {state.record_id} as of {format_time(state.at)}"
    if state.service:
        head = f"{state.table} {state.record_id} in {state.service} as of {format_time(state.at)}"
    if state.event is None:
        return f"{head}: no change recorded at or before this time"
    if not state.exists and state.moved_to is not None:
        return f"{head}: moved to {state.moved_to} ({describe_event(state.event)})"
    if not state.exists:
        return f"{head}: did not exist (deleted: {describe_event(state.event)})"
    values = state.wire_values or {}
    lines = [f"{head}: last change {describe_event(state.event)}", ""]
    rows = [[[name], [format_value(value)]] for name, value in values.items()]
    lines.append(render_table(["COLUMN", "VALUE"], rows))
    return "\n".join(lines)


__all__ = [
    "MAX_VALUE_WIDTH",
    "describe_event",
    "dumps",
    "format_change",
    "format_changes",
    "format_time",
    "format_value",
    "json_lines",
    "record_to_json",
    "render_records",
    "render_state",
    "render_table",
    "state_to_json",
]
