"""The differ: (before, after) -> field changes, with a scalar fast path."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.differ import (
    deepdiff_detail,
    departure_for_event,
    diff_event,
    diff_rows,
    nested_detail,
    record_for_event,
    records_for_event,
)
from consumer.records import (
    MOVE_EVENT_KEY,
    MOVED_TO_KEY,
    FieldChange,
    NestedChange,
    departure_event_id,
    record_from_row,
    record_to_row,
)
from consumer.testing import make_event
from sqla_audit.events import Actor, ChangeEvent, Operation, new_event_id
from sqla_audit.serialization import MASKED_VALUE, JSONValue, encode_value


def test_insert_is_every_column_new() -> None:
    """An insert lists every column with old None, nulls included."""
    changes = diff_rows(None, {"id": 1, "name": "a", "note": None})
    assert changes == {
        "id": FieldChange(None, 1),
        "name": FieldChange(None, "a"),
        "note": FieldChange(None, None),
    }


def test_delete_is_every_column_old() -> None:
    """A delete lists every column with new None."""
    assert diff_rows({"id": 1, "name": "a"}, None) == {
        "id": FieldChange(1, None),
        "name": FieldChange("a", None),
    }


def test_update_lists_only_changed_columns() -> None:
    """An update reports only the columns whose values differ."""
    before = {"id": 1, "name": "a", "balance": 10, "tags": ["x"]}
    after = {"id": 1, "name": "b", "balance": 10, "tags": ["x"]}
    assert diff_rows(before, after) == {"name": FieldChange("a", "b")}


def test_update_without_real_change_is_empty_and_writes_nothing() -> None:
    """An update whose values are all equal has no changes and no record."""
    event = make_event(before={"id": "1", "a": 1}, after={"id": "1", "a": 1})
    assert diff_event(event) == {}
    assert record_for_event(event) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [(1, 1.0), (1, True), (0, False), ("1", 1), (None, 0), ([1], [True]), ({"a": 1}, {"a": 1.0})],
)
def test_values_of_different_json_types_differ(old: JSONValue, new: JSONValue) -> None:
    """1, 1.0, true and "1" are different values, at the top level and nested."""
    assert "c" in diff_rows({"c": old}, {"c": new})


def test_tagged_values_compare_by_encoding() -> None:
    """Decimals, datetimes and other tagged values are compared as encoded."""
    before = {
        "price": encode_value(decimal.Decimal("1.50")),
        "at": encode_value(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    }
    after = {
        "price": encode_value(decimal.Decimal("2.50")),
        "at": encode_value(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    }
    changes = diff_rows(before, after)
    assert list(changes) == ["price"]
    assert changes["price"].detail == ()


def test_nested_values_get_element_detail() -> None:
    """JSON objects and arrays that differ carry element-level detail."""
    before = {"doc": {"a": [1, 2], "b": 1, "keep": {"x": 1}}}
    after = {"doc": {"a": [1, 3, 4], "c": True, "keep": {"x": 1}}}
    detail = diff_rows(before, after)["doc"].detail
    assert set(detail) == {
        NestedChange("changed", ("a", 1), 2, 3),
        NestedChange("added", ("a", 2), None, 4),
        NestedChange("removed", ("b",), 1, None),
        NestedChange("added", ("c",), None, True),
    }


def test_nested_detail_stops_at_tagged_values() -> None:
    """Detail never points inside a tagged value; it reports the value whole."""
    old = [{"$type": "decimal", "v": "1.0"}]
    new = [{"$type": "decimal", "v": "2.0"}]
    assert nested_detail(old, new) == (NestedChange("changed", (0,), old[0], new[0]),)


def test_nested_vs_scalar_has_no_detail() -> None:
    """A value that turns from an object into null has old/new but no detail."""
    change = diff_rows({"doc": {"a": 1}}, {"doc": None})["doc"]
    assert change == FieldChange({"a": 1}, None)


def test_columns_present_on_one_side_only() -> None:
    """A column missing from before or after is reported against None."""
    changes = diff_rows({"gone": 1, "same": 2}, {"same": 2, "new": 3})
    assert changes == {"gone": FieldChange(1, None), "new": FieldChange(None, 3)}


def test_masked_column_reported_when_producer_saw_it_change() -> None:
    """A masked column listed in changed_columns is a change with masked values."""
    masked = dict(MASKED_VALUE)
    event = make_event(
        before={"id": "1", "password": masked},
        after={"id": "1", "password": masked},
        masked_columns=("password",),
        changed_columns=("password",),
    )
    assert diff_event(event) == {"password": FieldChange(masked, masked)}
    quiet = make_event(
        before={"id": "1", "password": masked},
        after={"id": "1", "password": masked},
        masked_columns=("password",),
        changed_columns=(),
    )
    assert record_for_event(quiet) is None


def test_record_carries_envelope_fields() -> None:
    """The record keeps actor, transaction, times, rows and metadata of the event."""
    event = make_event(
        operation=Operation.INSERT,
        actor=Actor("bob", {"role": "admin"}),
        metadata={"source": "api"},
        previous_record_id=None,
    )
    record = record_for_event(event)
    assert record is not None
    assert record.actor_id == "bob"
    assert record.actor_attributes == {"role": "admin"}
    assert record.event_time == event.committed_at
    assert record.transaction_id == event.transaction_id
    assert record.after == event.after
    assert record.before is None
    assert record.metadata == {"source": "api"}
    assert set(record.changes) == set(event.after or {})


def test_record_without_actor() -> None:
    """An event without an actor makes a record with actor_id None."""
    record = record_for_event(make_event(actor=None))
    assert record is not None
    assert record.actor_id is None
    assert record.actor_attributes == {}


def _move(**kwargs: object) -> ChangeEvent:
    """Account 1 renamed to key 7 (with a balance change) in one update."""
    fields: dict[str, object] = {
        "record_id": "7",
        "previous_record_id": "1",
        "primary_key": {"id": "7"},
        "before": {"id": "1", "owner": "alice", "balance": 10},
        "after": {"id": "7", "owner": "alice", "balance": 20},
        "actor": Actor("bob", {"role": "admin"}),
        "metadata": {"tenant": "acme"},
        "sequence": 3,
    }
    fields.update(kwargs)
    return make_event(**fields)  # type: ignore[arg-type]


def test_key_change_also_makes_a_departure_under_the_old_id() -> None:
    """A moving update gives its record under the new id and a departure under the old id."""
    event = _move()
    record, departure = records_for_event(event)
    assert record == record_for_event(event)
    assert (record.record_id, record.previous_record_id, record.moved_to) == ("7", "1", None)
    assert departure.table == event.table
    assert departure.record_id == "1"
    assert departure.operation is Operation.DELETE
    assert departure.before == event.before
    assert departure.after is None
    assert departure.changes == {
        "id": FieldChange("1", None),
        "owner": FieldChange("alice", None),
        "balance": FieldChange(10, None),
    }
    assert departure.moved_to == "7"
    assert departure.is_departure
    assert not record.is_departure
    assert departure.metadata == {
        "tenant": "acme",
        MOVED_TO_KEY: "7",
        MOVE_EVENT_KEY: str(event.event_id),
    }
    assert departure.event_id == departure_event_id(event.event_id) != event.event_id
    assert departure.previous_record_id is None
    for name in ("event_time", "occurred_at", "transaction_id", "sequence", "service"):
        assert getattr(departure, name) == getattr(record, name), name
    assert (departure.actor_id, departure.actor_attributes) == ("bob", {"role": "admin"})
    assert departure.request_id == event.request_id


def test_departure_survives_the_stored_form() -> None:
    """A departure read back from its flat row is still recognised, with its new id."""
    departure = departure_for_event(_move())
    assert departure is not None
    again = record_from_row(record_to_row(departure))
    assert again == departure
    assert again.moved_to == "7"


@pytest.mark.parametrize(
    "event",
    [
        make_event(),  # an update that keeps its key
        make_event(previous_record_id="1"),  # previous id equal to the id: not a move
        make_event(operation="insert", previous_record_id="0"),  # only updates move rows
        make_event(operation="delete", previous_record_id="0"),
    ],
)
def test_no_departure_without_a_key_change(event: ChangeEvent) -> None:
    """Updates that keep their key, inserts and deletes yield their own record only."""
    assert departure_for_event(event) is None
    assert records_for_event(event) == [record_for_event(event)]


def test_records_for_an_update_that_changed_nothing_is_empty() -> None:
    """An update without a real change and without a key change yields no record."""
    row = {"id": "1", "balance": 10}
    assert records_for_event(make_event(before=row, after=row)) == []


def test_departure_id_is_deterministic_and_keeps_the_uuid7_order() -> None:
    """The derived id is stable, distinct, version 7, and keeps the original's ms and counter."""
    original = new_event_id()
    derived = departure_event_id(original)
    assert derived == departure_event_id(original)
    assert derived != original
    assert derived.version == 7
    assert derived.variant == uuid.RFC_4122
    assert derived.int >> 64 == original.int >> 64
    later = new_event_id()
    assert original < later
    assert departure_event_id(original) < later  # ordered like the original


def test_departure_id_of_a_non_uuid7_event_is_name_based() -> None:
    """An event id that is not version 7 gives a stable version 5 departure id."""
    original = uuid.uuid4()
    derived = departure_event_id(original)
    assert derived == departure_event_id(original)
    assert derived.version == 5
    assert derived != original


def test_metadata_that_only_looks_like_a_departure_is_not_one() -> None:
    """Producer metadata with the departure keys does not make a record a departure."""
    forged = {MOVED_TO_KEY: "7", MOVE_EVENT_KEY: str(uuid.uuid4())}
    for event in (
        make_event(operation="delete", metadata=forged),
        make_event(operation="delete", metadata={MOVED_TO_KEY: "7", MOVE_EVENT_KEY: "junk"}),
        make_event(operation="delete", metadata={MOVED_TO_KEY: 7}),
        make_event(metadata=forged),
    ):
        record = record_for_event(event)
        assert record is not None
        assert record.moved_to is None
        assert not record.is_departure
    # the real derivation on a record that is not a delete is not a departure either
    source = new_event_id()
    update = record_for_event(
        make_event(
            event_id=departure_event_id(source),
            metadata={MOVED_TO_KEY: "7", MOVE_EVENT_KEY: str(source)},
        )
    )
    assert update is not None
    assert update.moved_to is None


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False).map(lambda f: f + 0.0),
    st.text(max_size=5),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)
rows = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_values, max_size=4)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, rows)
def test_diff_matches_strict_equality(
    before: dict[str, JSONValue], after: dict[str, JSONValue]
) -> None:
    """A column is reported exactly when its encoded JSON differs (types included, -0.0 aside)."""
    changes = diff_rows(before, after)
    for name in set(before) | set(after):
        differs = (
            name not in before
            or name not in after
            or (json.dumps(before[name], sort_keys=True) != json.dumps(after[name], sort_keys=True))
        )
        assert (name in changes) == differs, name
    for name, change in changes.items():
        assert change.old == before.get(name)
        assert change.new == after.get(name)


# --------------------------------------------------------------------------- nested detail:
# the direct walk (the default) against DeepDiff (the reference)

nested_keys = st.one_of(
    st.sampled_from(["a", "b", "c", "$type", "v", "__p", "0"]), st.text(max_size=2)
)
nested_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 3),
    st.sampled_from([0.0, -0.0, 1.0, 2.5]),
    st.text(alphabet="ab", max_size=2),
)
nested_values = st.recursive(
    nested_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(nested_keys, inner, max_size=5)
    ),
    max_leaves=25,
)
documents = st.one_of(
    st.lists(nested_values, max_size=6), st.dictionaries(nested_keys, nested_values, max_size=6)
)


def _edited(value: JSONValue) -> st.SearchStrategy[JSONValue]:
    """``value`` with one random edit somewhere inside (replace, insert or drop an item)."""
    if isinstance(value, dict) and value:
        return st.sampled_from(sorted(value)).flatmap(
            lambda key: st.one_of(
                nested_values.map(lambda new: {**value, key: new}),
                _edited(value[key]).map(lambda new: {**value, key: new}),
                st.just({k: v for k, v in value.items() if k != key}),
            )
        )
    if isinstance(value, list) and value:
        return st.integers(0, len(value) - 1).flatmap(
            lambda i: st.one_of(
                _edited(value[i]).map(lambda new: [*value[:i], new, *value[i + 1 :]]),
                nested_values.map(lambda new: [*value[:i], new, *value[i:]]),
                st.just([*value[:i], *value[i + 1 :]]),
            )
        )
    return nested_values


@st.composite
def document_pairs(draw: st.DrawFn) -> tuple[JSONValue, JSONValue]:
    """Two JSON documents of the same kind: unrelated, or the second a few edits away."""
    old = draw(documents)
    new = draw(st.one_of(documents, _edited(old), _edited(old).flatmap(_edited)))
    # through the wire form, as the consumer sees them
    return json.loads(json.dumps(old)), json.loads(json.dumps(new))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document_pairs())
def test_walk_gives_the_deepdiff_answer(pair: tuple[JSONValue, JSONValue]) -> None:
    """The direct walk returns exactly DeepDiff's nested detail on random JSON documents."""
    old, new = pair
    if type(old) is type(new):
        assert nested_detail(old, new) == deepdiff_detail(old, new)


arrays_of_scalars = st.lists(
    st.one_of(st.integers(0, 3), st.booleans(), st.sampled_from([0.0, 1.0, None, "a", "b"])),
    max_size=10,
)


@settings(max_examples=400, deadline=None)
@given(arrays_of_scalars, arrays_of_scalars)
def test_walk_matches_deepdiff_on_arrays_of_scalars(
    old: list[JSONValue], new: list[JSONValue]
) -> None:
    """Arrays of scalars (which DeepDiff matches with difflib) get DeepDiff's answer too."""
    assert nested_detail(old, new) == deepdiff_detail(old, new)


def test_detail_follows_deepdiff_conventions() -> None:
    """The walk keeps DeepDiff's conventions (documented in docs/consumer.md), quirks included."""
    replaced_old = {"a": 1, "b": 2, "c": 3}
    replaced_new = {"x": 1, "y": 2, "c": 3}
    cases: list[tuple[JSONValue, JSONValue, tuple[NestedChange, ...]]] = [
        # objects sharing under a third of their keys change as a whole
        (replaced_old, replaced_new, (NestedChange("changed", (), replaced_old, replaced_new),)),
        # keys starting with '__' are not compared
        ({"a": 1, "__rev": 1}, {"a": 1, "__rev": 2}, ()),
        # arrays of scalars are matched with difflib, where 1 == true
        ([1, 2], [True, 2], ()),
        # difflib's positions (0 removed, 2 added), read back at those positions
        (
            ["a", "b", "c"],
            ["b", "c", "d"],
            (NestedChange("changed", (0,), "a", "b"), NestedChange("changed", (2,), "c", "d")),
        ),
    ]
    for old, new, expected in cases:
        assert nested_detail(old, new) == expected
        assert deepdiff_detail(old, new) == expected


def test_values_that_are_not_json_data_go_to_deepdiff() -> None:
    """A tuple or a Decimal inside a nested value is diffed by DeepDiff, not the walk."""
    old: Any = {"a": (1, 2), "b": decimal.Decimal("1.0")}
    new: Any = {"a": (1, 3), "b": decimal.Decimal("1.5")}
    assert nested_detail(old, new) == deepdiff_detail(old, new)
    assert {change.path for change in nested_detail(old, new)} == {("a",), ("b",)}


def test_the_nested_diff_is_switchable() -> None:
    """``nested=`` chooses the detail function all the way from the event to the record."""
    calls: list[tuple[JSONValue, JSONValue]] = []

    def spy(old: JSONValue, new: JSONValue) -> tuple[NestedChange, ...]:
        calls.append((old, new))
        return deepdiff_detail(old, new)

    event = make_event(before={"id": "1", "doc": {"a": 1}}, after={"id": "1", "doc": {"a": 2}})
    records = records_for_event(event, nested=spy)
    assert calls == [({"a": 1}, {"a": 2})]
    assert records[0].changes["doc"].detail == (NestedChange("changed", ("a",), 1, 2),)
    assert records == records_for_event(event)
