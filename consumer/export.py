"""Exporting audit records: CSV and NDJSON writers, plain values, a progress line.

The query commands hand records to a :class:`RecordWriter` one at a time, page after page,
so an export of millions of records holds one page in memory, whatever its length.

Two value forms (``--values``):

* ``tagged`` (the default) -- values exactly as stored, in their wire encoding
  (type-tagged JSON, :mod:`sqla_audit.serialization`): lossless, and
  :func:`~sqla_audit.serialization.decode_value` restores the Python values;
* ``plain`` -- each tagged value as the plain JSON a spreadsheet or a data tool reads
  without knowing the tags (:func:`plain_value`): decimals as their exact text, datetimes,
  dates and times as ISO 8601, durations as ISO 8601 durations, UUIDs in canonical form,
  bytes as standard base64, enums as their value, non-finite floats as ``"NaN"``,
  ``"Infinity"`` and ``"-Infinity"``, sets as arrays, masked values as ``"***"``. Readable,
  not reversible: a decimal and a string holding the same text look the same.

CSV has one row per changed column (:data:`CSV_COLUMNS`); a record with no column changes
still has one row, with the column cells empty. NDJSON has one JSON object per record
(:func:`consumer.render.record_to_json`).
"""

from __future__ import annotations

import base64
import binascii
import csv
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Final, Literal, Protocol, TextIO

from consumer.records import AuditRecord, FieldChange
from consumer.render import dumps, record_to_json
from sqla_audit.events import Operation, format_timestamp
from sqla_audit.serialization import TAG, JSONValue, escape_surrogates

ValuesForm = Literal["tagged", "plain"]

#: The header of a CSV export: one row per changed column of each record.
CSV_COLUMNS: Final = (
    "event_time",
    "service",
    "table",
    "record_id",
    "operation",
    "column",
    "old",
    "new",
    "actor_id",
    "request_id",
    "transaction_id",
    "sequence",
    "event_id",
)

#: The plain form of a masked value (the change is known, the value was withheld).
MASKED_TEXT: Final = "***"

_NON_FINITE: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


# --------------------------------------------------------------------------- plain values


def iso_duration(days: int, seconds: int, microseconds: int) -> str:
    """An ISO 8601 duration of a ``timedelta``'s parts: ``P1DT2H3M4.5S``, ``-PT1S``, ``PT0S``."""
    total = (days * 86_400 + seconds) * 1_000_000 + microseconds
    sign = "-" if total < 0 else ""
    total = abs(total)
    whole, micros = divmod(total, 1_000_000)
    day_count, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    text = f"{sign}P"
    if day_count:
        text += f"{day_count}D"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if secs or micros or not (day_count or hours or minutes):
        clock += f"{secs}.{micros:06d}".rstrip("0").rstrip(".") + "S"
    return text + ("T" + clock if clock else "")


def _plain_tagged(obj: dict[str, JSONValue]) -> JSONValue:
    """The plain form of one tagged object, or the object itself when it is malformed."""
    tag = obj.get(TAG)
    raw = obj.get("v")
    if tag in ("decimal", "datetime", "date", "time", "repr") and isinstance(raw, str):
        return raw  # the exact text; a datetime's offset is in it (a zone key adds nothing)
    if tag == "uuid" and isinstance(raw, str):
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            return obj
    if tag == "bytes" and isinstance(raw, str):
        return raw  # standard base64, as stored
    if tag == "timedelta" and isinstance(raw, list) and len(raw) == 3:
        days, seconds, micros = raw
        if type(days) is int and type(seconds) is int and type(micros) is int:
            return iso_duration(days, seconds, micros)
        return obj
    if tag == "float" and isinstance(raw, str) and raw in _NON_FINITE:
        return _NON_FINITE[raw]
    if tag == "enum":
        return plain_value(raw)
    if tag == "set" and isinstance(raw, list):
        return [plain_value(item) for item in raw]
    if tag == "object" and isinstance(raw, dict):
        return {key: plain_value(item) for key, item in raw.items()}
    if tag == "masked":
        return MASKED_TEXT
    if tag == "utf16" and isinstance(raw, str):
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-16-be", "surrogatepass")
        except (binascii.Error, ValueError):
            return obj
        return escape_surrogates(text)
    if tag == "pairs" and isinstance(raw, list):
        out: dict[str, JSONValue] = {}
        for pair in raw:
            if not isinstance(pair, list) or len(pair) != 2:
                return obj
            key = plain_value(pair[0])
            out[key if isinstance(key, str) else dumps(key)] = plain_value(pair[1])
        return out
    return obj


def plain_value(value: JSONValue) -> JSONValue:
    """A wire-encoded value as plain JSON: every tagged object replaced by its plain form.

    Untagged values pass through (arrays and objects converted inside); a malformed or
    unknown tagged object is kept as it is, so one odd value never stops an export.
    """
    if isinstance(value, list):
        return [plain_value(item) for item in value]
    if isinstance(value, dict):
        if TAG in value:
            return _plain_tagged(value)
        return {key: plain_value(item) for key, item in value.items()}
    return value


def plain_text(value: JSONValue) -> str:
    """A CSV cell in the plain form: text as is, ``NULL`` as an empty cell, numbers and
    booleans as JSON writes them, arrays and objects as compact JSON."""
    plain = plain_value(value)
    if plain is None:
        return ""
    if isinstance(plain, str):
        return plain
    return dumps(plain)


def tagged_text(value: JSONValue) -> str:
    """A CSV cell in the tagged form: the value's wire JSON (``"a"``, ``null``, a tag)."""
    return dumps(value)


def _plain_mapping(mapping: JSONValue) -> JSONValue:
    """A row, metadata or attributes mapping with its values plain (its keys are names, so
    a column called ``$type`` does not make the row a tagged object)."""
    if isinstance(mapping, dict):
        return {key: plain_value(item) for key, item in mapping.items()}
    return plain_value(mapping)


def record_to_plain_json(record: AuditRecord) -> dict[str, JSONValue]:
    """:func:`~consumer.render.record_to_json` with every value in its plain form."""
    data = record_to_json(record)
    data["changes"] = {name: _plain_change(change) for name, change in record.changes.items()}
    data["before"] = _plain_mapping(data["before"])
    data["after"] = _plain_mapping(data["after"])
    data["metadata"] = _plain_mapping(data["metadata"])
    actor = data["actor"]
    if isinstance(actor, dict):
        actor["attributes"] = _plain_mapping(actor.get("attributes"))
    return data


def _plain_change(change: FieldChange) -> JSONValue:
    out: dict[str, JSONValue] = {"old": plain_value(change.old), "new": plain_value(change.new)}
    if change.detail:
        details: list[JSONValue] = []
        for item in change.detail:
            entry = item.to_dict()
            for side in ("old", "new"):
                if side in entry:
                    entry[side] = plain_value(entry[side])
            details.append(entry)
        out["detail"] = details
    return out


# --------------------------------------------------------------------------- writers


class RecordWriter(Protocol):
    """Writes records one at a time to an output; ``finish`` ends the output."""

    def write(self, record: AuditRecord) -> None: ...

    def finish(self) -> None: ...


class NdjsonWriter:
    """One JSON object per record and line (values tagged or plain)."""

    def __init__(self, out: TextIO, values: ValuesForm = "tagged") -> None:
        self._out = out
        self._convert = record_to_plain_json if values == "plain" else record_to_json

    def write(self, record: AuditRecord) -> None:
        self._out.write(dumps(self._convert(record)) + "\n")

    def finish(self) -> None:
        self._out.flush()


def csv_rows(record: AuditRecord, values: ValuesForm = "tagged") -> Iterable[list[str]]:
    """The CSV rows of one record: one per changed column, or one with the column empty.

    ``old`` is empty for an insert and ``new`` for a delete (there is no such side); with
    ``tagged`` values a ``NULL`` is the text ``null``, with ``plain`` values it is empty too.
    """
    cell = plain_text if values == "plain" else tagged_text
    head = [
        format_timestamp(record.event_time),
        record.service,
        record.table,
        record.record_id,
        record.operation.value,
    ]
    tail = [
        record.actor_id or "",
        record.request_id or "",
        str(record.transaction_id),
        str(record.sequence),
        str(record.event_id),
    ]
    if not record.changes:
        yield [*head, "", "", "", *tail]
        return
    has_old = record.operation is not Operation.INSERT
    has_new = record.operation is not Operation.DELETE
    for name, change in record.changes.items():
        old = cell(change.old) if has_old else ""
        new = cell(change.new) if has_new else ""
        yield [*head, name, old, new, *tail]


class CsvWriter:
    """CSV with a header row and one row per changed column (:data:`CSV_COLUMNS`).

    Python's :mod:`csv` dialect ``excel``: comma-separated, fields quoted only when needed
    (a comma, a quote or a line break), quotes doubled, rows ending in CRLF.
    """

    def __init__(self, out: TextIO, values: ValuesForm = "tagged") -> None:
        self._out = out
        self._values: ValuesForm = values
        self._writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL)
        self._writer.writerow(CSV_COLUMNS)

    def write(self, record: AuditRecord) -> None:
        self._writer.writerows(csv_rows(record, self._values))

    def finish(self) -> None:
        self._out.flush()


# --------------------------------------------------------------------------- progress


class Progress:
    """A ``\\r``-rewritten count on a terminal (at most every ``interval`` seconds).

    Inactive when ``stream`` is not a terminal, so redirected stderr stays clean.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        active: bool | None = None,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._active = _is_terminal(stream) if active is None else active
        self._last = clock()
        self._shown = False
        self.count = 0

    def add(self, count: int = 1) -> None:
        self.count += count
        if self._active and self._clock() - self._last >= self._interval:
            self._last = self._clock()
            self._stream.write(f"\rsqla-audit: {self.count:,} records exported")
            self._stream.flush()
            self._shown = True

    def done(self) -> None:
        """End the line (when one was shown) with the final count."""
        if self._active and self._shown:
            self._stream.write(f"\rsqla-audit: {self.count:,} records exported\n")
            self._stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


def export(
    records: Iterable[AuditRecord],
    writer: RecordWriter,
    *,
    progress: Progress | None = None,
    flush_every: int = 1000,
    flush: Callable[[], None] | None = None,
) -> int:
    """Write every record (flushing every ``flush_every``), then finish; the count written."""
    count = 0
    for record in records:
        writer.write(record)
        count += 1
        if progress is not None:
            progress.add()
        if flush is not None and count % flush_every == 0:
            flush()
    writer.finish()
    if progress is not None:
        progress.done()
    return count


__all__ = [
    "CSV_COLUMNS",
    "MASKED_TEXT",
    "CsvWriter",
    "NdjsonWriter",
    "Progress",
    "RecordWriter",
    "ValuesForm",
    "csv_rows",
    "export",
    "iso_duration",
    "plain_text",
    "plain_value",
    "record_to_plain_json",
    "tagged_text",
]
