"""Output of the query commands: readable tables for people, JSON for programs.

The table form is for a terminal: one row per change with its time, operation, actor,
request id (when records have one), transaction and each changed column as ``old → new``
(strings quoted so that ``"NULL"`` and ``NULL`` differ, masked values shown as ``***``).
Values are never cut: given a ``width`` (the terminal's), cells wrap so that the table fits
it, the widest column first; without one (``--wide``, or output to a pipe) nothing wraps.
It is not meant to be parsed; ``--format json``/``ndjson``/``csv`` are (see
:mod:`consumer.export` for CSV and for plain values). The JSON form keeps values in their wire
encoding (type-tagged JSON, see :mod:`sqla_audit.serialization`), so a program reading it
gets exactly what was stored and can restore Decimals, datetimes and bytes with
:func:`~sqla_audit.serialization.decode_value`.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
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

#: Narrowest a column is wrapped to, however narrow the terminal.
MIN_COLUMN_WIDTH: Final = 8
#: Spaces between two columns.
COLUMN_GAP: Final = 2


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


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def format_value(value: JSONValue) -> str:
    """A readable, one-line rendering of one wire-encoded value."""
    try:
        decoded = decode_value(value)
    except (TypeError, ValueError):  # SerializationError is a TypeError
        return _one_line(dumps(value))
    return _one_line(_format_decoded(decoded))


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


def fit_widths(natural: Sequence[int], width: int | None, minimum: Sequence[int]) -> list[int]:
    """Column widths that fit ``width`` (with the gaps), narrowing the widest column first,
    none below its ``minimum``; ``natural`` when ``width`` is ``None`` or already enough."""
    widths = list(natural)
    if width is None:
        return widths
    budget = width - COLUMN_GAP * (len(widths) - 1)
    while sum(widths) > budget:
        candidates = [i for i, w in enumerate(widths) if w > minimum[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        others = [widths[i] for i in candidates if i != widest]
        target = max(
            max(others, default=0), minimum[widest], widths[widest] - (sum(widths) - budget)
        )
        widths[widest] = target if target < widths[widest] else widths[widest] - 1
    return widths


def _wrap(lines: Sequence[str], width: int) -> list[str]:
    wrapped: list[str] = []
    for line in lines:
        if len(line) <= width:
            wrapped.append(line)
        else:
            wrapped.extend(
                textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False) or [""]
            )
    return wrapped


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[Sequence[str]]], *, width: int | None = None
) -> str:
    """A plain-text table; each cell is a list of lines, columns padded to fit.

    With ``width`` the table fits that many characters: the widest columns are narrowed
    (down to :data:`MIN_COLUMN_WIDTH`, or the header) and their cells wrapped, never cut.
    """
    natural = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            for line in cell:
                natural[index] = max(natural[index], len(line))
    minimum = [min(n, max(MIN_COLUMN_WIDTH, len(h))) for n, h in zip(natural, headers, strict=True)]
    widths = fit_widths(natural, width, minimum)
    gap = " " * COLUMN_GAP
    rule = gap.join("-" * w for w in widths)

    def line_of(cells: Sequence[str]) -> str:
        return gap.join(text.ljust(widths[i]) for i, text in enumerate(cells)).rstrip()

    out = [line_of(headers), rule]
    for row in rows:
        cells = [
            _wrap(cell, widths[i]) if widths[i] < natural[i] else cell for i, cell in enumerate(row)
        ]
        height = max((len(cell) for cell in cells), default=1)
        for depth in range(height):
            out.append(line_of([cell[depth] if depth < len(cell) else "" for cell in cells]))
    return "\n".join(out)


def render_records(
    records: Sequence[AuditRecord],
    *,
    show_record: bool = False,
    show_service: bool = False,
    show_request: bool | None = None,
    arrow: str = "→",
    width: int | None = None,
) -> str:
    """The readable table of a list of changes (``show_record`` adds table and record id,
    ``show_service`` the service that made each change, ``show_request`` the request id --
    by default when a record has one); ``width``: fit that many characters (wrapping)."""
    if show_request is None:
        show_request = any(record.request_id for record in records)
    headers = ["EVENT TIME", "OP", "ACTOR", "TRANSACTION"]
    if show_request:
        headers[3:3] = ["REQUEST"]
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
        if show_request:
            row[3:3] = [[record.request_id or "-"]]
        if show_record:
            row[2:2] = [[record.table], [record.record_id]]
        if show_service:
            row[2:2] = [[record.service]]
        row.append(format_changes(record, arrow=arrow))
        rows.append(row)
    return render_table(headers, rows, width=width)


def describe_event(record: AuditRecord) -> str:
    """``update at 2026-...Z by alice (transaction …)``."""
    actor = f" by {record.actor_id}" if record.actor_id else ""
    return (
        f"{record.operation.value} at {format_time(record.event_time)}{actor} "
        f"(transaction {record.transaction_id})"
    )


def render_state(state: RecordState, *, width: int | None = None) -> str:
    """The readable form of a record's state at an instant (``width``: wrap to fit)."""
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
    title = f"{head}: last change {describe_event(state.event)}"
    lines = [*(textwrap.wrap(title, width) if width else [title]), ""]
    rows = [[[name], [format_value(value)]] for name, value in values.items()]
    lines.append(render_table(["COLUMN", "VALUE"], rows, width=width))
    return "\n".join(lines)


__all__ = [
    "COLUMN_GAP",
    "MIN_COLUMN_WIDTH",
    "describe_event",
    "dumps",
    "fit_widths",
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
