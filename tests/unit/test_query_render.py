"""Rendering of query results: readable values and tables, JSON forms."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid

import pytest

from consumer.query import RecordState
from consumer.records import FieldChange, NestedChange
from consumer.render import (
    format_change,
    format_value,
    record_to_json,
    render_records,
    render_state,
    render_table,
    state_to_json,
)
from consumer.testing import make_record
from sqla_audit.events import Actor
from sqla_audit.serialization import MASKED_VALUE, encode_value

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)


class Plan(enum.Enum):
    FREE = "free"


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "NULL"),
        ("NULL", '"NULL"'),
        ("line1\nline2", '"line1\\nline2"'),
        (True, "true"),
        (3, "3"),
        (2.5, "2.5"),
        (decimal.Decimal("12.50"), "12.50"),
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02T03:04:05+00:00"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (b"\x00\x01", "<2 bytes: 0001>"),
        (bytes(range(20)), "<20 bytes: 0001020304050607…>"),
        (Plan.FREE, "Plan.FREE"),
        ({"a": [1, 2]}, '{"a":[1,2]}'),
        ({2, 1}, "{1, 2}"),
        (Opaque(), "Opaque()"),
        (float("nan"), "nan"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    """Each wire-encoded value has a short, unambiguous readable form."""
    assert format_value(encode_value(value)) == text


def test_format_value_masked_and_long() -> None:
    """Masked values show as ***; long values are kept whole (tables wrap them)."""
    assert format_value(MASKED_VALUE) == "***"
    assert format_value("x" * 200) == '"' + "x" * 200 + '"'
    assert format_value("a\nb") == '"a\\nb"'  # one line


def test_format_value_malformed_tag_falls_back_to_json() -> None:
    """A malformed tagged value is shown as its JSON rather than failing."""
    assert format_value({"$type": "decimal", "v": "abc"}) == '{"$type":"decimal","v":"abc"}'
    assert format_value({"$type": "nope", "v": 1}) == '{"$type":"nope","v":1}'


def test_format_change_nested_detail() -> None:
    """A JSON column's change lists each changed element by path."""
    change = FieldChange(
        {"a": {"b": 1}, "l": [1]},
        {"a": {"b": 2}, "l": [1, 2], "n": "x"},
        (
            NestedChange("changed", ("a", "b"), 1, 2),
            NestedChange("added", ("l", 1), None, 2),
            NestedChange("removed", ("gone",), "y", None),
        ),
    )
    assert format_change("doc", change) == ["doc.a.b: 1 → 2", "doc.l[1]: + 2", 'doc.gone: - "y"']


def test_render_table_pads_multiline_cells() -> None:
    """Cells with several lines are aligned; trailing spaces are trimmed."""
    text = render_table(["A", "BB"], [[["x"], ["1", "2"]], [["long"], ["3"]]])
    assert text.splitlines() == ["A     BB", "----  --", "x     1", "      2", "long  3"]


def test_render_records_insert_update_delete() -> None:
    """Inserts list new values, updates old → new, deletes old → (deleted); no changes noted."""
    insert = make_record(operation="insert", after={"id": "1", "n": 1}, committed_at=T0)
    update = make_record(before={"id": "1", "n": 1}, after={"id": "1", "n": 2}, committed_at=T0)
    delete = make_record(
        operation="delete", before={"id": "1", "n": 2}, committed_at=T0, actor=None
    )
    text = render_records([insert, update, delete])
    assert "n: 1\n" in text + "\n"
    assert "n: 1 → 2" in text
    assert "n: 2 → (deleted)" in text
    assert "  -  " in text  # no actor


def test_record_to_json_round_trips_through_json() -> None:
    """record_to_json is JSON-serializable and keeps every field."""
    record = make_record(
        actor=Actor("bob", {"roles": ["admin"]}),
        committed_at=T0,
        metadata={"ip": "127.0.0.1"},
        previous_record_id="0",
    )
    data = json.loads(json.dumps(record_to_json(record)))
    assert data["actor"] == {"id": "bob", "attributes": {"roles": ["admin"]}}
    assert data["event_time"] == "2026-01-10T12:00:00.000000Z"
    assert data["metadata"] == {"ip": "127.0.0.1"}
    assert data["previous_record_id"] == "0"
    assert data["changes"]["balance"] == {"old": 10, "new": 20}
    assert data["event_id"] == str(record.event_id)


def test_render_state_variants() -> None:
    """render_state says unknown, deleted, or lists the values."""
    insert = make_record(operation="insert", after={"id": "1", "n": 1}, committed_at=T0)
    delete = make_record(operation="delete", before={"id": "1"}, committed_at=T0, actor=None)
    unknown = RecordState("accounts", "1", T0, False, None, None, None)
    assert render_state(unknown).endswith("no change recorded at or before this time")
    gone = RecordState("accounts", "1", T0, False, None, None, delete)
    assert "did not exist (deleted: delete at 2026-01-10T12:00:00.000000Z (transaction" in (
        render_state(gone)
    )
    there = RecordState("accounts", "1", T0, True, {"id": "1", "n": 1}, insert.after, insert)
    assert render_state(there).splitlines()[-1] == "n       1"
    assert state_to_json(there)["values"] == {"id": "1", "n": 1}


def test_render_records_service_column() -> None:
    """show_service adds a SERVICE column before the table and record id."""
    shop = make_record(service="shop", table="orders", record_id="7", committed_at=T0)
    billing = make_record(service="billing", table="invoices", record_id="7", committed_at=T0)
    lines = render_records([billing, shop], show_record=True, show_service=True).splitlines()
    assert lines[0].split()[:6] == ["EVENT", "TIME", "OP", "SERVICE", "TABLE", "RECORD"]
    assert [line.split()[1:5] for line in lines[2:4]] == [
        ["update", "billing", "invoices", "7"],
        ["update", "shop", "orders", "7"],
    ]


def test_state_names_its_service() -> None:
    """A state with a service names it in the text and in the JSON form."""
    insert = make_record(operation="insert", after={"id": "1"}, committed_at=T0)
    state = RecordState("accounts", "1", T0, True, {"id": "1"}, insert.after, insert, "billing")
    assert render_state(state).startswith("accounts 1 in billing as of ")
    assert state_to_json(state)["service"] == "billing"
