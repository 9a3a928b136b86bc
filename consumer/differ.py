"""The differ: a pure function from a row's ``before`` and ``after`` to its field changes.

Most audited columns are scalars (numbers, strings, timestamps), and most updates touch one
or two of ten-odd columns. Running a general structural diff over the whole row costs about
600 µs per update; comparing column by column costs a few microseconds. So:

* every column is first compared by type and value (wire-encoded values are plain JSON data,
  so ``==`` on them is exact: ``1`` and ``1.0`` and ``true`` are told apart by type);
* only when both sides of a differing column are *nested* -- a JSON object or an array, the
  values of JSON and ARRAY columns -- is :mod:`deepdiff` asked which elements changed, and
  its answer is kept as :class:`~consumer.records.NestedChange` detail.

Rules: an insert is every column new (``old`` is ``None``); a delete is every column old
(``new`` is ``None``); an update lists only the columns whose value really differs, plus
masked columns the producer reported as changed (their values are withheld, the fact of
the change is not). An update with no real change yields no changes, and
:func:`record_for_event` then returns ``None``: nothing is written.

Type-tagged values (``{"$type": "decimal", "v": "1.50"}``) are atoms: nested detail never
points inside one, it stops at the tagged value and reports it whole.

Changed primary keys. An update whose ``previous_record_id`` differs from its ``record_id``
moved the row. :func:`records_for_event` then returns, besides the event's own record under
the new id, a *departure* record under the old id (see :mod:`consumer.records`): without
it the old id's history would end with the row still there, and "state as of" after the
move would show a row that had left. The worker writes what :func:`records_for_event`
returns; :func:`record_for_event` is the event's own record only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from consumer.records import (
    MOVE_EVENT_KEY,
    MOVED_TO_KEY,
    AuditRecord,
    FieldChange,
    NestedChange,
    departure_event_id,
)
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.serialization import MASKED_VALUE, TAG, JSONValue

_MISSING: Final[Any] = object()

_KINDS: Final = {
    "values_changed": "changed",
    "type_changes": "changed",
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
}


def _is_nested(value: object) -> bool:
    return type(value) is list or (type(value) is dict and TAG not in value)


def _strictly_equal(old: Any, new: Any) -> bool:
    """Equality that also tells ``1``, ``1.0`` and ``true`` apart inside nested values."""
    if type(old) is not type(new):
        return False
    if type(old) is dict:
        return old.keys() == new.keys() and all(
            _strictly_equal(value, new[key]) for key, value in old.items()
        )
    if type(old) is list:
        return len(old) == len(new) and all(map(_strictly_equal, old, new))
    return bool(old == new)


def _resolve(value: Any, path: tuple[str | int, ...]) -> tuple[Any, tuple[str | int, ...]]:
    """Follow ``path`` into ``value``, stopping at a tagged value; ``_MISSING`` if absent."""
    for depth, step in enumerate(path):
        if type(value) is dict:
            if TAG in value:
                return value, path[:depth]
            if step not in value:
                return _MISSING, path[: depth + 1]
            value = value[step]
        elif type(value) is list:
            if not isinstance(step, int) or not -len(value) <= step < len(value):
                return _MISSING, path[: depth + 1]
            value = value[step]
        else:
            return value, path[:depth]
    if type(value) is dict and TAG in value:
        return value, path
    return value, path


def nested_detail(old: JSONValue, new: JSONValue) -> tuple[NestedChange, ...]:
    """The element-level differences between two nested values, in a stable order."""
    from deepdiff import DeepDiff  # noqa: PLC0415 -- only nested values need it (consumer extra)
    from deepdiff.helper import notpresent  # noqa: PLC0415

    tree = DeepDiff(old, new, view="tree")
    found: dict[tuple[str | int, ...], NestedChange] = {}
    for kind in tree:
        if kind not in _KINDS:  # pragma: no cover - other kinds need options we do not use
            continue
        for item in tree[kind]:
            raw_path = tuple(item.path(output_format="list"))
            old_value, old_path = _resolve(old, raw_path)
            new_value, new_path = _resolve(new, raw_path)
            path = old_path if len(old_path) <= len(new_path) else new_path
            if path != raw_path:  # stopped at a tagged value or a container: re-resolve
                old_value, _ = _resolve(old, path)
                new_value, _ = _resolve(new, path)
            if path in found:
                continue
            if old_value is _MISSING or old_value is notpresent:
                found[path] = NestedChange("added", path, None, new_value)
            elif new_value is _MISSING or new_value is notpresent:
                found[path] = NestedChange("removed", path, old_value, None)
            else:
                found[path] = NestedChange("changed", path, old_value, new_value)
    return tuple(sorted(found.values(), key=lambda c: [(type(p).__name__, p) for p in c.path]))


def diff_rows(
    before: Mapping[str, JSONValue] | None,
    after: Mapping[str, JSONValue] | None,
    *,
    changed_masked: Collection[str] = (),
) -> dict[str, FieldChange]:
    """Field changes between two wire-encoded rows (``None`` for an absent side).

    ``changed_masked`` names masked columns the producer saw change: they are reported with
    the masked marker on both sides even though the encoded values are equal.
    """
    if before is None:
        if after is None:
            return {}
        return {name: FieldChange(None, value) for name, value in after.items()}
    if after is None:
        return {name: FieldChange(value, None) for name, value in before.items()}
    changes: dict[str, FieldChange] = {}
    for name, new in after.items():
        old = before.get(name, _MISSING)
        if old is new or (
            type(old) is type(new)
            and old == new
            and (type(old) not in (list, dict) or _strictly_equal(old, new))
        ):
            if changed_masked and name in changed_masked and new == MASKED_VALUE:
                changes[name] = FieldChange(old, new)
            continue
        if old is _MISSING:
            changes[name] = FieldChange(None, new)
        elif _is_nested(old) and _is_nested(new) and type(old) is type(new):
            changes[name] = FieldChange(old, new, nested_detail(old, new))
        else:
            changes[name] = FieldChange(old, new)
    if len(before) != len(after) or any(name not in after for name in before):
        for name, old in before.items():
            if name not in after:
                changes[name] = FieldChange(old, None)
    return changes


def diff_event(event: ChangeEvent) -> dict[str, FieldChange]:
    """The field changes one event describes (see the module rules)."""
    if event.operation is Operation.INSERT:
        return diff_rows(None, event.after)
    if event.operation is Operation.DELETE:
        return diff_rows(event.before, None)
    masked = (
        [name for name in event.masked_columns if name in event.changed_columns]
        if event.masked_columns
        else ()
    )
    return diff_rows(event.before, event.after, changed_masked=masked)


def record_for_event(event: ChangeEvent) -> AuditRecord | None:
    """The record to store for ``event``, or ``None`` for an update that changed nothing.

    A bulk-statement marker (``record_id`` ``"*"``: rows changed but not itemized) has no
    field changes and is stored all the same, under its table's ``"*"`` record.
    """
    changes = diff_event(event)
    if not changes and event.operation is Operation.UPDATE and not event.is_marker:
        return None
    actor = event.actor
    return AuditRecord(
        table=event.table,
        record_id=event.record_id,
        event_id=event.event_id,
        event_time=event.committed_at,
        occurred_at=event.occurred_at,
        operation=event.operation,
        service=event.service,
        transaction_id=event.transaction_id,
        sequence=event.sequence,
        changes=changes,
        before=event.before,
        after=event.after,
        actor_id=None if actor is None else actor.id,
        actor_attributes={} if actor is None else actor.attributes,
        request_id=event.request_id,
        previous_record_id=event.previous_record_id,
        masked_columns=tuple(event.masked_columns),
        metadata=event.metadata,
    )


def departure_for_event(event: ChangeEvent) -> AuditRecord | None:
    """The record a key-changing update leaves under the old id, or ``None`` if not a move.

    A move is an ``update`` with a ``previous_record_id`` different from its ``record_id``
    (the producer sets it on updates only; it is ignored on inserts and deletes). The
    record reads as the row leaving the old id: operation ``delete``, ``before`` the old
    row, ``after`` ``None``, every column going to ``None``; the same time, transaction,
    sequence and actor as the event; metadata gains the new id and the event's id.
    """
    old_id = event.previous_record_id
    if event.operation is not Operation.UPDATE or not old_id or old_id == event.record_id:
        return None
    actor = event.actor
    return AuditRecord(
        table=event.table,
        record_id=old_id,
        event_id=departure_event_id(event.event_id),
        event_time=event.committed_at,
        occurred_at=event.occurred_at,
        operation=Operation.DELETE,
        service=event.service,
        transaction_id=event.transaction_id,
        sequence=event.sequence,
        changes=diff_rows(event.before, None),
        before=event.before,
        after=None,
        actor_id=None if actor is None else actor.id,
        actor_attributes={} if actor is None else actor.attributes,
        request_id=event.request_id,
        previous_record_id=None,
        masked_columns=tuple(event.masked_columns),
        metadata={
            **event.metadata,
            MOVED_TO_KEY: event.record_id,
            MOVE_EVENT_KEY: str(event.event_id),
        },
    )


def records_for_event(event: ChangeEvent) -> list[AuditRecord]:
    """Everything to store for ``event``, in order: its own record (unless it changed
    nothing), then the departure record under the old id if the update moved the row.
    """
    records: list[AuditRecord] = []
    record = record_for_event(event)
    if record is not None:
        records.append(record)
    departure = departure_for_event(event)
    if departure is not None:
        records.append(departure)
    return records


__all__ = [
    "departure_for_event",
    "diff_event",
    "diff_rows",
    "nested_detail",
    "record_for_event",
    "records_for_event",
]
