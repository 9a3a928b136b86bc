"""Export: plain values for every tag, CSV rows, NDJSON lines, the terminal-only progress line."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import decimal
import enum
import io
import json
import uuid
from zoneinfo import ZoneInfo

import pytest

from consumer.export import (
    CSV_COLUMNS,
    CsvWriter,
    NdjsonWriter,
    Progress,
    csv_rows,
    export,
    iso_duration,
    plain_text,
    plain_value,
    record_to_plain_json,
)
from consumer.records import AuditRecord
from consumer.render import record_to_json
from consumer.testing import make_record
from sqla_audit.serialization import MASKED_VALUE, Unserializable, encode_value

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)


class Colour(enum.Enum):
    RED = "r"
    BLUE = 2


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(1)"


# (python value, plain JSON value, plain CSV text) -- one case per tag of the wire encoding
CASES = [
    pytest.param(decimal.Decimal("12.50"), "12.50", "12.50", id="decimal"),
    pytest.param(decimal.Decimal("1E+3"), "1E+3", "1E+3", id="decimal-exponent"),
    pytest.param(
        dt.datetime(2026, 3, 1, 9, 30, 0, 120, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "2026-03-01T09:30:00.000120+02:00",
        "2026-03-01T09:30:00.000120+02:00",
        id="datetime-offset",
    ),
    pytest.param(
        dt.datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris")),
        "2026-07-01T09:00:00+02:00",
        "2026-07-01T09:00:00+02:00",
        id="datetime-zone",
    ),
    pytest.param(dt.datetime(2026, 3, 1, 9, 30), "2026-03-01T09:30:00", "2026-03-01T09:30:00",
                 id="datetime-naive"),
    pytest.param(dt.date(2026, 2, 28), "2026-02-28", "2026-02-28", id="date"),
    pytest.param(dt.time(23, 59, 1, 5), "23:59:01.000005", "23:59:01.000005", id="time"),
    pytest.param(dt.timedelta(days=1, hours=2, minutes=3, seconds=4.5), "P1DT2H3M4.5S",
                 "P1DT2H3M4.5S", id="timedelta"),
    pytest.param(dt.timedelta(seconds=-1), "-PT1S", "-PT1S", id="timedelta-negative"),
    pytest.param(dt.timedelta(0), "PT0S", "PT0S", id="timedelta-zero"),
    pytest.param(uuid.UUID("0192E4A1-7B2C-7D3E-8F40-123456789ABC"),
                 "0192e4a1-7b2c-7d3e-8f40-123456789abc",
                 "0192e4a1-7b2c-7d3e-8f40-123456789abc", id="uuid"),
    pytest.param(b"\x00\xffhi", "AP9oaQ==", "AP9oaQ==", id="bytes-base64"),
    pytest.param(Colour.RED, "r", "r", id="enum-text"),
    pytest.param(Colour.BLUE, 2, "2", id="enum-number"),
    pytest.param(float("nan"), "NaN", "NaN", id="float-nan"),
    pytest.param(float("inf"), "Infinity", "Infinity", id="float-inf"),
    pytest.param(float("-inf"), "-Infinity", "-Infinity", id="float-minus-inf"),
    pytest.param({3, 1, 2}, [1, 2, 3], "[1,2,3]", id="set"),
    pytest.param({"$type": "x", "n": decimal.Decimal("1.0")}, {"$type": "x", "n": "1.0"},
                 '{"$type":"x","n":"1.0"}', id="object"),
    pytest.param(Opaque(), "Opaque(1)", "Opaque(1)", id="repr"),
    pytest.param(Unserializable("m:T", "T<7>"), "T<7>", "T<7>", id="repr-unserializable"),
    pytest.param("a\ud800b", "a\\ud800b", "a\\ud800b", id="utf16"),
    pytest.param({"k\udc00": 1}, {"k\\udc00": 1}, '{"k\\\\udc00":1}', id="pairs"),
    pytest.param([decimal.Decimal("1.5"), {"at": dt.date(2026, 1, 1)}],
                 ["1.5", {"at": "2026-01-01"}], '["1.5",{"at":"2026-01-01"}]', id="nested"),
    pytest.param("text", "text", "text", id="string"),
    pytest.param(None, None, "", id="null"),
    pytest.param(True, True, "true", id="bool"),
    pytest.param(1.25, 1.25, "1.25", id="float"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "plain", "text"), CASES)
def test_plain_value_of_every_tag(value: object, plain: object, text: str) -> None:
    """Each tag of the wire encoding becomes plain JSON and plain CSV text."""
    encoded = encode_value(value)
    assert plain_value(encoded) == plain
    assert plain_text(encoded) == text
    json.dumps(plain_value(encoded), allow_nan=False)  # plain JSON: no NaN, no tags


def test_plain_value_of_masked() -> None:
    """A masked value is shown as *** in the plain form."""
    assert plain_value(MASKED_VALUE) == "***"
    assert plain_text(MASKED_VALUE) == "***"


@pytest.mark.parametrize(
    "malformed",
    [
        {"$type": "uuid", "v": "not-a-uuid"},
        {"$type": "timedelta", "v": [1, "x", 0]},
        {"$type": "utf16", "v": "%%%"},
        {"$type": "pairs", "v": [[1]]},
        {"$type": "no-such-tag", "v": 1},
        {"$type": "decimal", "v": 5},
    ],
)
def test_malformed_tag_is_kept_as_is(malformed: dict[str, object]) -> None:
    """A malformed or unknown tagged object stays as stored instead of stopping the export."""
    assert plain_value(malformed) == malformed  # type: ignore[arg-type]


def test_iso_duration_parts() -> None:
    """Durations: days, hours, minutes and seconds with microseconds, sign in front."""
    assert iso_duration(0, 3600, 0) == "PT1H"
    assert iso_duration(2, 0, 0) == "P2D"
    assert iso_duration(-1, 86399, 999999) == "-PT0.000001S"


def _update() -> AuditRecord:
    return make_record(
        table="users",
        record_id="42",
        before={"id": "42", "name": "a,b", "balance": {"$type": "decimal", "v": "10.00"}},
        after={"id": "42", "name": 'say "hi"\nbye', "balance": {"$type": "decimal", "v": "12.50"}},
        committed_at=T0,
        actor="bob",
        request_id="req-7",
        sequence=3,
    )


def test_csv_rows_one_per_changed_column_tagged() -> None:
    """An update gives one CSV row per changed column, values as wire JSON text."""
    record = _update()
    rows = list(csv_rows(record))
    by_column = {row[CSV_COLUMNS.index("column")]: row for row in rows}
    assert sorted(by_column) == ["balance", "name"]
    balance = dict(zip(CSV_COLUMNS, by_column["balance"], strict=True))
    assert balance == {
        "event_time": "2026-01-10T12:00:00.000000Z",
        "service": "billing",
        "table": "users",
        "record_id": "42",
        "operation": "update",
        "column": "balance",
        "old": '{"$type":"decimal","v":"10.00"}',
        "new": '{"$type":"decimal","v":"12.50"}',
        "actor_id": "bob",
        "request_id": "req-7",
        "transaction_id": str(record.transaction_id),
        "sequence": "3",
        "event_id": str(record.event_id),
    }
    assert json.loads(by_column["name"][CSV_COLUMNS.index("new")]) == 'say "hi"\nbye'


def test_csv_rows_plain_insert_and_delete_leave_the_missing_side_empty() -> None:
    """Inserts have no old cell and deletes no new cell; plain values are plain text."""
    price = {"$type": "decimal", "v": "1.50"}
    insert = make_record(operation="insert", after={"id": "1", "price": price, "note": None})
    rows = {row[5]: (row[6], row[7]) for row in csv_rows(insert, "plain")}
    assert rows == {"id": ("", "1"), "price": ("", "1.50"), "note": ("", "")}
    delete = make_record(operation="delete", before={"id": "1", "note": None})
    rows = {row[5]: (row[6], row[7]) for row in csv_rows(delete, "tagged")}
    assert rows == {"id": ('"1"', ""), "note": ("null", "")}


def test_csv_record_without_column_changes_has_one_row() -> None:
    """A record with no changed columns still has one row, its column cells empty."""
    record = _update()
    bare = dataclasses.replace(record, changes={})
    rows = list(csv_rows(bare))
    assert len(rows) == 1
    assert rows[0][5:8] == ["", "", ""]
    assert rows[0][CSV_COLUMNS.index("event_id")] == str(record.event_id)


def test_csv_writer_header_quoting_and_round_trip() -> None:
    """The CSV writer emits a header, quotes commas, quotes and newlines, and parses back."""
    out = io.StringIO(newline="")
    writer = CsvWriter(out, "plain")
    record = _update()
    assert export([record, record], writer) == 2
    parsed = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert parsed[0] == list(CSV_COLUMNS)
    assert len(parsed) == 1 + 4
    by_column = {row[5]: row for row in parsed[1:3]}
    assert by_column["name"][6:8] == ["a,b", 'say "hi"\nbye']
    assert by_column["balance"][6:8] == ["10.00", "12.50"]
    assert out.getvalue().startswith(",".join(CSV_COLUMNS) + "\r\n")


def test_ndjson_writer_tagged_is_record_to_json() -> None:
    """NDJSON with tagged values is one record_to_json object per line."""
    out = io.StringIO()
    records = [_update(), make_record(operation="insert")]
    export(records, NdjsonWriter(out))
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [record_to_json(r) for r in records]


def test_ndjson_writer_plain_converts_changes_rows_and_metadata() -> None:
    """NDJSON with plain values converts changes, before/after, metadata and attributes."""
    record = make_record(
        before={"id": "1", "at": {"$type": "date", "v": "2026-01-01"}},
        after={"id": "1", "at": {"$type": "date", "v": "2026-01-02"}},
        metadata={"amount": {"$type": "decimal", "v": "3.10"}},
    )
    out = io.StringIO()
    export([record], NdjsonWriter(out, "plain"))
    data = json.loads(out.getvalue())
    assert data["changes"]["at"] == {"old": "2026-01-01", "new": "2026-01-02"}
    assert data["after"] == {"id": "1", "at": "2026-01-02"}
    assert data["metadata"] == {"amount": "3.10"}
    assert data == record_to_plain_json(record)


def test_plain_row_with_a_column_named_type_is_not_read_as_a_tag() -> None:
    """A row whose column is called $type keeps its columns in the plain form."""
    record = make_record(operation="insert", after={"id": "1", "$type": "decimal", "v": "x"})
    data = record_to_plain_json(record)
    assert data["after"] == {"id": "1", "$type": "decimal", "v": "x"}


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    """The progress line is written to a terminal, never to a redirected stream."""
    ticks = iter(range(100))
    tty = _Tty()
    progress = Progress(tty, interval=1, clock=lambda: float(next(ticks)))
    for _ in range(3):
        progress.add()
    progress.done()
    assert "\rsqla-audit: 3 records exported\n" in tty.getvalue()
    plain = io.StringIO()
    quiet = Progress(plain, interval=0)
    quiet.add(5)
    quiet.done()
    assert plain.getvalue() == ""
