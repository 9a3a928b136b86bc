"""row_change: the fast maker of RowChange gives what the constructor gives."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
from types import MappingProxyType

import pytest

from sqla_audit.changes import RowChange, row_change
from sqla_audit.events import Actor, Operation


def test_row_change_equals_the_constructor_for_every_field() -> None:
    """Every field given to row_change ends up where the constructor puts it."""
    values = {
        "table": "t",
        "operation": Operation.UPDATE,
        "record_id": "2",
        "primary_key": {"id": 2},
        "before": {"id": 1, "a": "x"},
        "after": {"id": 2, "a": "y"},
        "changed_columns": ("id", "a"),
        "occurred_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "previous_record_id": "1",
        "previous_primary_key": {"id": 1},
        "masked_columns": ("a",),
        "actor": Actor("alice"),
        "request_id": "r",
        "metadata": MappingProxyType({"k": 1}),
    }
    made = row_change(**values)  # type: ignore[arg-type]
    assert made == RowChange(**values)  # type: ignore[arg-type]
    assert {name: getattr(made, name) for name in values} == values
    assert type(made) is RowChange


def test_row_change_takes_every_field_in_order_and_stays_frozen() -> None:
    """row_change's parameters are RowChange's fields in order; its result is frozen."""
    names = [spec.name for spec in dataclasses.fields(RowChange)]
    assert list(inspect.signature(row_change).parameters) == names
    made = row_change(
        "t", Operation.DELETE, "1", {}, {}, None, (), dt.datetime.now(dt.UTC), None, None, (),
        None, None, {},
    )  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.record_id = "2"  # type: ignore[misc]
