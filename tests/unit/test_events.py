"""The v1 envelope: wire form, validation, record ids, event ids, building a transaction."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqla_audit.capture import RowChange
from sqla_audit.delivery import build_events
from sqla_audit.errors import DecodeError, UnsupportedSchemaVersion
from sqla_audit.events import (
    Actor,
    ChangeEvent,
    Operation,
    canonical_key_text,
    format_timestamp,
    make_record_id,
    new_event_id,
    new_event_ids,
    parse_timestamp,
    split_record_id,
    uuid7_time,
)
from sqla_audit.schema import change_event_schema
from sqla_audit.testing import assert_valid_event

NOW = dt.datetime(2026, 1, 31, 12, 0, 0, 1, tzinfo=dt.UTC)


def _event(**overrides: Any) -> ChangeEvent:
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "occurred_at": NOW,
        "committed_at": NOW,
        "service": "shop",
        "table": "users",
        "record_id": "1",
        "primary_key": {"id": 1},
        "operation": Operation.UPDATE,
        "before": {"id": 1, "name": "a"},
        "after": {"id": 1, "name": "b"},
        "changed_columns": ["name"],
        "transaction_id": uuid.uuid4(),
        "sequence": 0,
        "actor": Actor(id="7", attributes={"roles": ["admin"]}),
        "request_id": "req-1",
        "metadata": {"tenant": "t"},
    }
    fields.update(overrides)
    return ChangeEvent(**fields)


def test_json_round_trip_is_identity() -> None:
    """An event written to JSON and read back is equal to the original."""
    event = _event(masked_columns=["secret"], previous_record_id="0")
    assert ChangeEvent.from_json(event.to_json()) == event
    assert_valid_event(event)


def test_wire_form_has_every_documented_field() -> None:
    """The JSON object carries exactly the documented top-level fields (an unsigned event:
    all but the two of signed events)."""
    data = json.loads(_event().to_json())
    signed_only = {"signature", "transaction_event_count"}
    assert set(data) == set(change_event_schema()["properties"]) - signed_only
    assert data["committed_at"] == "2026-01-31T12:00:00.000001Z"


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: d.pop("table"), "lacks field"),
        (lambda d: d.update(schema_version=None), "schema_version"),
        (lambda d: d.update(operation="upsert"), "invalid change event"),
        (lambda d: d.update(operation="insert", after=None), "needs 'after'"),
        (lambda d: d.update(operation="delete", before=None), "needs 'before'"),
        (lambda d: d.update(sequence=-1), "sequence"),
        (lambda d: d.update(service=""), "service"),
        (lambda d: d.update(changed_columns="name"), "changed_columns"),
        (lambda d: d.update(actor={"name": "x"}), "actor"),
        (lambda d: d.update(event_id="nope"), "invalid change event"),
        (lambda d: d.update(occurred_at="2026-01-31T12:00:00"), "invalid change event"),
    ],
)
def test_invalid_events_raise_decode_error(mutate: Any, error: str) -> None:
    """Each kind of malformed event is a DecodeError that says what is wrong."""
    data = json.loads(_event().to_json())
    mutate(data)
    with pytest.raises(DecodeError, match=error):
        ChangeEvent.from_dict(data)


def test_future_schema_version_is_reported_as_unsupported() -> None:
    """A newer schema_version raises UnsupportedSchemaVersion (a DecodeError)."""
    data = json.loads(_event().to_json())
    data["schema_version"] = 2
    with pytest.raises(UnsupportedSchemaVersion):
        ChangeEvent.from_dict(data)
    with pytest.raises(DecodeError, match="not JSON"):
        ChangeEvent.from_json("{nope")


def test_naive_timestamps_are_refused() -> None:
    """Envelope timestamps must be timezone-aware."""
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(dt.datetime(2026, 1, 1))
    assert parse_timestamp("2026-01-31T12:00:00.000001Z") == NOW


@pytest.mark.parametrize(
    ("values", "record_id"),
    [
        ([42], "42"),
        (["alice"], "alice"),
        ([uuid.UUID(int=1)], "00000000-0000-0000-0000-000000000001"),
        ([dt.date(2026, 1, 1)], "2026-01-01"),
        ([7, dt.date(2026, 1, 1)], "7:2026-01-01"),
        (["a:b", "50%"], "a%3Ab:50%25"),
        ([True, b"\x01"], "true:01"),
    ],
)
def test_record_id_canonical_forms(values: list[Any], record_id: str) -> None:
    """Record ids follow the documented canonical forms."""
    assert make_record_id(values) == record_id


@given(st.lists(st.text(), min_size=2, max_size=4))
def test_composite_record_ids_split_back(parts: list[str]) -> None:
    """A composite record id splits back into its component texts."""
    assert split_record_id(make_record_id(parts), len(parts)) == parts


def test_split_record_id_checks_arity() -> None:
    """Splitting with the wrong number of components is an error."""
    with pytest.raises(ValueError, match="components"):
        split_record_id("a:b", 3)
    assert split_record_id("a:b", 1) == ["a:b"]
    assert canonical_key_text(dt.time(1, 2)) == "01:02:00"


def test_event_ids_are_version_7_and_increase() -> None:
    """Event ids are UUIDv7, strictly increasing within the process, with their time."""
    ids = [new_event_id() for _ in range(2000)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert abs(uuid7_time(ids[0]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_event_id_batches_continue_one_increasing_sequence() -> None:
    """new_event_ids gives version 7 ids that keep increasing across batches and single ids."""
    ids = [new_event_id(), *new_event_ids(3000), new_event_id(), *new_event_ids(5)]
    assert new_event_ids(0) == []
    assert len(ids) == 3007
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert abs(uuid7_time(ids[-1]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_to_json_is_the_compact_text_of_to_dict() -> None:
    """to_json renders exactly to_dict(), compact and unescaped, whatever mappings it holds."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    other = dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=dt.UTC)
    events = [
        ChangeEvent(
            event_id=new_event_id(),
            occurred_at=when if n % 2 else other,
            committed_at=other,
            service="s",
            table="t",
            record_id=str(n),
            primary_key=MappingProxyType({"id": n}),
            operation=Operation.UPDATE,
            before={"name": "é", "n": [1, {"$type": "decimal", "v": "1.0"}]},
            after=MappingProxyType({"name": "ü"}),
            changed_columns=["name"],
            masked_columns=(),
            actor=Actor("a", {"role": "x"}),
            transaction_id=new_event_id(),
            sequence=n,
            metadata=MappingProxyType({"k": n}),
        )
        for n in range(4)
    ]
    for event in events:
        expected = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
        assert event.to_json() == expected
        assert ChangeEvent.from_json(event.to_json()) == ChangeEvent.from_dict(event.to_dict())
    assert json.loads(events[1].to_json())["occurred_at"] == "2026-01-02T03:04:05.000006Z"
    assert json.loads(events[2].to_json())["occurred_at"] == "2026-01-02T03:04:05.000007Z"


def test_build_events_numbers_one_transaction() -> None:
    """build_events gives one transaction id and commit time, sequence 0..n-1, own ids."""
    changes = [
        RowChange(
            table="t",
            operation=Operation.INSERT,
            record_id=str(n),
            primary_key={"id": n},
            before=None,
            after={"id": n},
            changed_columns=("id",),
            occurred_at=NOW,
        )
        for n in range(3)
    ]
    events = build_events(changes, service="svc", committed_at=NOW)
    assert [e.sequence for e in events] == [0, 1, 2]
    assert len({e.transaction_id for e in events}) == 1
    assert len({e.event_id for e in events}) == 3
    assert {e.committed_at for e in events} == {NOW}
    for event in events:
        assert_valid_event(event.to_dict())
    assert build_events([], service="svc") == []


def test_assert_valid_event_explains_schema_violations() -> None:
    """assert_valid_event names the offending field."""
    data = json.loads(_event().to_json())
    data["sequence"] = "first"
    with pytest.raises(AssertionError, match="sequence"):
        assert_valid_event(data)


# --------------------------------------------------------------------------- strict decode


def _wire(**overrides: Any) -> dict[str, Any]:
    data = json.loads(_event().to_json())
    data.update(overrides)
    return data


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sequence": 2**70}, "sequence"),
        ({"sequence": 2**31}, "sequence"),
        ({"sequence": True}, "sequence"),
        ({"sequence": 1.0}, "sequence"),
        ({"schema_version": True}, "schema_version"),
        ({"previous_record_id": {"id": 1}}, "previous_record_id"),
        ({"previous_record_id": ""}, "previous_record_id"),
        ({"request_id": ["a"]}, "request_id"),
        ({"request_id": 7}, "request_id"),
        ({"masked_columns": "secret"}, "masked_columns"),
        ({"masked_columns": [1]}, "masked_columns"),
        ({"masked_columns": {}}, "masked_columns"),
        ({"changed_columns": ["a", None]}, "changed_columns"),
        ({"metadata": []}, "metadata"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": 0}, "metadata"),
        ({"primary_key": None}, "primary_key"),
        ({"primary_key": [1]}, "primary_key"),
        ({"actor": {"id": "a", "attributes": []}}, "actor.attributes"),
        ({"actor": {"id": "a", "attributes": "x"}}, "actor.attributes"),
        ({"actor": {"id": ""}}, "actor.id"),
        ({"actor": {"id": 7}}, "actor"),
        ({"actor": "alice"}, "actor"),
        ({"event_id": 12}, "event_id"),
        ({"transaction_id": None}, "transaction_id"),
        ({"occurred_at": 0}, "occurred_at"),
        ({"committed_at": "9999-12-31T23:00:00-05:00"}, "committed_at"),
        ({"committed_at": "0001-01-01T00:00:00+01:00"}, "committed_at"),
        ({"occurred_at": "1969-12-31T23:59:59.999999Z"}, "occurred_at"),
        ({"committed_at": "9999-06-01T00:00:00.000000Z"}, "committed_at"),
        ({"table": "users\ud800"}, "table"),
        ({"service": "\udfff"}, "service"),
        ({"record_id": "1\ud800"}, "record_id"),
        ({"previous_record_id": "\ud800"}, "previous_record_id"),
        ({"request_id": "r\udc00"}, "request_id"),
        ({"changed_columns": ["na\ud800me"]}, "changed_columns"),
        ({"masked_columns": ["\ud800"]}, "masked_columns"),
        ({"after": {"id": 1, "name": "b\ud800"}}, "after"),
        ({"after": {"id": 1, "n\ud800": "b"}}, "after"),
        ({"before": {"id": 1, "doc": {"a": ["x", "\ud800"]}}}, "before"),
        ({"primary_key": {"id": "\ud800"}}, "primary_key"),
        ({"metadata": {"k": {"deep": "\udbff"}}}, "metadata"),
        ({"actor": {"id": "\ud800"}}, "actor"),
        ({"actor": {"id": "a", "attributes": {"r": ["\ud800"]}}}, "actor"),
        ({"after": {"id": 1, "x": float("nan")}}, "after"),
        ({"after": {"id": 1, "x": float("inf")}}, "after"),
        ({"after": {"id": 1, "doc": _deep(200)}}, "after"),
        ({"metadata": {"m": _deep(200)}}, "metadata"),
        ({"table": "t" * 100_000}, "table"),
        ({"service": "s" * 100_000}, "service"),
        ({"record_id": "1" * 100_000}, "record_id"),
        ({"actor": {"id": "a" * 100_000}}, "actor"),
        ({"request_id": "r" * 100_000}, "request_id"),
    ],
)
def test_values_no_store_can_hold_are_decode_errors(overrides: dict[str, Any], field: str) -> None:
    """Wrong types, out-of-range numbers and times, lone surrogates and oversize names are
    DecodeErrors that name the field."""
    with pytest.raises(DecodeError, match=field.replace(".", r"\.")):
        ChangeEvent.from_dict(_wire(**overrides))


def test_strict_decode_accepts_the_edges_of_every_range() -> None:
    """Values at the documented limits, astral characters and null optionals decode."""
    from sqla_audit import wire_limits  # noqa: PLC0415

    event = ChangeEvent.from_dict(
        _wire(
            sequence=wire_limits.MAX_SEQUENCE,
            table="t" * wire_limits.MAX_NAME_CHARS,
            record_id="😀" * wire_limits.MAX_RECORD_ID_CHARS,
            previous_record_id=None,
            request_id=None,
            masked_columns=None,
            metadata=None,
            actor={"id": "a", "attributes": None},
            after={"id": 1, "name": "b 😀 \u2028", "doc": _deep(wire_limits.MAX_VALUE_DEPTH)},
            committed_at="1970-01-01T00:00:00.000000Z",
            occurred_at="9998-12-31T23:59:59.999999Z",
        )
    )
    assert event.sequence == wire_limits.MAX_SEQUENCE
    assert event.masked_columns == ()
    assert event.metadata == {}
