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
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from consumer.records import AuditRecord, FieldChange, NestedChange
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
    """The record to store for ``event``, or ``None`` for an update that changed nothing."""
    changes = diff_event(event)
    if not changes and event.operation is Operation.UPDATE:
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


__all__ = ["diff_event", "diff_rows", "nested_detail", "record_for_event"]
