"""The record of one captured row change, shared by capture, bulk capture, the buffer and
delivery (kept apart so configuration can name it without importing capture)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final

from sqla_audit.events import Actor, Operation
from sqla_audit.serialization import JSONValue

_EMPTY_MAPPING: Final[Mapping[str, JSONValue]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RowChange:
    """One change to one row, captured during a flush (values already type-tagged).

    ``record_id``/``primary_key`` identify the row after the change (for a delete: the
    deleted row). When the change moved the row to a new primary key,
    ``previous_record_id``/``previous_primary_key`` name the old one. ``before`` and
    ``after`` map *column* names to encoded values; a column whose old value could not be
    known is absent from ``before`` but listed in ``changed_columns``.

    An image may be a :class:`~sqla_audit.lazy_images.LazyImage`: a read-only mapping that
    holds values of immutable types as the database or the session returned them and
    encodes them when first read (where the events are built: in SNS mode on the
    publisher's thread). Reading it gives exactly what eager encoding gives; a metadata
    hook that reads an image only makes it encode earlier. Values that could change or fail
    later (JSON containers, enums, unknown types) are encoded when the change is captured.

    Ownership: ``primary_key``, ``before`` and ``after`` belong to this change alone (an
    unchanged value may be one object in both images) and are treated as read-only once
    the change is recorded; :func:`sqla_audit.delivery.build_events` hands them over to the
    event without copying. Code that records its own changes must pass mappings it will
    not touch again.
    """

    table: str
    operation: Operation
    record_id: str
    primary_key: Mapping[str, JSONValue]
    before: Mapping[str, JSONValue] | None
    after: Mapping[str, JSONValue] | None
    changed_columns: tuple[str, ...]
    occurred_at: dt.datetime
    previous_record_id: str | None = None
    previous_primary_key: Mapping[str, JSONValue] | None = None
    masked_columns: tuple[str, ...] = ()
    actor: Actor | None = None
    request_id: str | None = None
    metadata: Mapping[str, JSONValue] = field(default_factory=lambda: _EMPTY_MAPPING)


def _setters() -> list[Callable[[RowChange, Any], None]]:
    """The slot setters of :class:`RowChange`'s fields, in field order."""
    return [getattr(RowChange, spec.name).__set__ for spec in fields(RowChange)]


(
    _table,
    _operation,
    _record_id,
    _primary_key,
    _before,
    _after,
    _changed_columns,
    _occurred_at,
    _previous_record_id,
    _previous_primary_key,
    _masked_columns,
    _actor,
    _request_id,
    _metadata,
) = _setters()
_new = object.__new__


def row_change(  # noqa: PLR0917 -- every field in order: one call per captured row
    table: str,
    operation: Operation,
    record_id: str,
    primary_key: Mapping[str, JSONValue],
    before: Mapping[str, JSONValue] | None,
    after: Mapping[str, JSONValue] | None,
    changed_columns: tuple[str, ...],
    occurred_at: dt.datetime,
    previous_record_id: str | None,
    previous_primary_key: Mapping[str, JSONValue] | None,
    masked_columns: tuple[str, ...],
    actor: Actor | None,
    request_id: str | None,
    metadata: Mapping[str, JSONValue],
) -> RowChange:
    """The :class:`RowChange` of these fields (every one, in field order), equal to what
    the constructor makes, about five times faster: the frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``; this sets the slots directly. For
    capture paths that make one change per row."""
    change: RowChange = _new(RowChange)
    _table(change, table)
    _operation(change, operation)
    _record_id(change, record_id)
    _primary_key(change, primary_key)
    _before(change, before)
    _after(change, after)
    _changed_columns(change, changed_columns)
    _occurred_at(change, occurred_at)
    _previous_record_id(change, previous_record_id)
    _previous_primary_key(change, previous_primary_key)
    _masked_columns(change, masked_columns)
    _actor(change, actor)
    _request_id(change, request_id)
    _metadata(change, metadata)
    return change


__all__ = ["RowChange", "row_change"]
