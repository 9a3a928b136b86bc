"""The differ: a pure function from a row's ``before`` and ``after`` to its field changes.

Most audited columns are scalars (numbers, strings, timestamps), and most updates touch one
or two of ten-odd columns. Running a general structural diff over the whole row costs about
600 µs per update; comparing column by column costs a few microseconds. So:

* every column is first compared by type and value (wire-encoded values are plain JSON data,
  so ``==`` on them is exact: ``1`` and ``1.0`` and ``true`` are told apart by type);
* only when both sides of a differing column are *nested* -- a JSON object or an array, the
  values of JSON and ARRAY columns -- are the elements that changed looked for, and kept as
  :class:`~consumer.records.NestedChange` detail.

Nested detail is DeepDiff's answer (:func:`deepdiff_detail`, the reference), but DeepDiff
costs about a millisecond on a small document -- more than everything else the consumer
does for an event. :func:`nested_detail`, the default, walks the two JSON values directly
and reproduces that answer exactly, DeepDiff's conventions included (objects sharing under a
third of their keys change whole, ``__`` keys are skipped, arrays of scalars are matched with
:mod:`difflib`), for a few percent of the cost; a property test holds the two equal. Pass
``nested=deepdiff_detail`` to use the reference.

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

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final

from consumer.records import (
    MOVE_EVENT_KEY,
    MOVED_TO_KEY,
    AuditRecord,
    FieldChange,
    NestedChange,
    departure_event_id,
)
from consumer.seal import Seal
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
    kind = type(old)
    if kind is not type(new):
        return False
    if kind is dict:
        if old.keys() != new.keys():
            return False
        pairs: Iterable[tuple[Any, Any]] = ((value, new[key]) for key, value in old.items())
    elif kind is list:
        if len(old) != len(new):
            return False
        pairs = zip(old, new, strict=True)
    else:
        return bool(old == new)
    for a, b in pairs:  # scalars inline: this runs over every unchanged JSON column
        item = type(a)
        if item is not type(b):
            return False
        if item is dict or item is list:
            if not _strictly_equal(a, b):
                return False
        elif a != b:
            return False
    return True


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
    return value, path


#: A nested-detail function: the element-level differences between two nested values.
NestedDiff = Callable[[JSONValue, JSONValue], tuple[NestedChange, ...]]


def _detail_from_paths(
    old: Any, new: Any, raw_paths: Iterable[tuple[str | int, ...]]
) -> tuple[NestedChange, ...]:
    """Turn the paths DeepDiff reports into :class:`NestedChange` items.

    Each path is cut at the first tagged value (or absent element) on either side, the
    values at the cut are read from both sides, and duplicates collapse: the answer depends
    only on the set of reported paths, never on the order they come in.
    """
    found: dict[tuple[str | int, ...], NestedChange] = {}
    for raw_path in raw_paths:
        old_value, old_path = _resolve(old, raw_path)
        new_value, new_path = _resolve(new, raw_path)
        path = old_path if len(old_path) <= len(new_path) else new_path
        if path != raw_path:  # stopped at a tagged value or a container: re-resolve
            old_value, _ = _resolve(old, path)
            new_value, _ = _resolve(new, path)
        if path in found:
            continue
        if old_value is _MISSING:
            found[path] = NestedChange("added", path, None, new_value)
        elif new_value is _MISSING:
            found[path] = NestedChange("removed", path, old_value, None)
        else:
            found[path] = NestedChange("changed", path, old_value, new_value)
    if len(found) == 1:
        return tuple(found.values())
    return tuple(sorted(found.values(), key=lambda c: [(type(p).__name__, p) for p in c.path]))


def deepdiff_detail(old: JSONValue, new: JSONValue) -> tuple[NestedChange, ...]:
    """The reference nested detail: :mod:`deepdiff` (its default options) decides what changed.

    :func:`nested_detail` gives the same answer without DeepDiff; this one stays as the
    reference it is tested against, and can be chosen with ``nested=deepdiff_detail``.
    """
    from deepdiff import DeepDiff  # noqa: PLC0415 -- only this reference needs it (consumer extra)

    tree = DeepDiff(old, new, view="tree")
    return _detail_from_paths(
        old,
        new,
        (
            tuple(item.path(output_format="list"))
            for kind in tree
            if kind in _KINDS
            for item in tree[kind]
        ),
    )


class _Unsupported(Exception):
    """A value that is not plain JSON data: :func:`nested_detail` asks DeepDiff instead."""


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_JSON_TYPES: Final = _SCALARS | {dict, list}
#: DeepDiff's ``threshold_to_diff_deeper``: objects sharing fewer than this fraction of
#: their keys are reported as one change of the whole object.
_DIFF_DEEPER: Final = 0.33


def _visible(keys: Iterable[Any]) -> list[Any]:
    """The keys DeepDiff compares: it skips ``__``-prefixed ones (``ignore_private_variables``)."""
    return [key for key in keys if not _private(key)]


def _walk(old: Any, new: Any, path: tuple[str | int, ...], out: list[Any]) -> None:
    """Append to ``out`` the paths DeepDiff reports between ``old`` and ``new``."""
    if old is new:
        return
    kind = type(old)
    if kind is not type(new):
        if kind not in _JSON_TYPES or type(new) not in _JSON_TYPES:
            raise _Unsupported
        out.append(path)
    elif kind is dict:
        _walk_dicts(old, new, path, out)
    elif kind is list:
        _walk_lists(old, new, path, out)
    elif kind not in _SCALARS:
        raise _Unsupported
    elif old != new:
        out.append(path)


def _private(key: Any) -> bool:
    return type(key) is str and key.startswith("__")


def _walk_dicts(
    old: dict[Any, Any], new: dict[Any, Any], path: tuple[Any, ...], out: list[Any]
) -> None:
    if len(old) != len(new) or old.keys() != new.keys():
        added = _visible(new.keys() - old.keys())
        removed = _visible(old.keys() - new.keys())
        if added or removed:
            common = len(_visible(key for key in old if key in new))
            union = common + len(added) + len(removed)
            if union > 1 and common / union < _DIFF_DEEPER:
                out.append(path)
                return
            out.extend((*path, key) for key in added)
            out.extend((*path, key) for key in removed)
    for key, value in old.items():
        other = new.get(key, _MISSING)
        if value is other or other is _MISSING:
            continue
        kind = type(value)
        if kind is type(other) and kind in _SCALARS:  # the common leaf, inline
            if value != other and not _private(key):
                out.append((*path, key))
        elif not _private(key):
            _walk(value, other, (*path, key), out)


def _all_scalars(items: list[Any]) -> bool:
    """True if every item is a JSON scalar (DeepDiff then compares the arrays with difflib)."""
    answer = True
    for item in items:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is not dict and kind is not list:
            raise _Unsupported
        answer = False
    return answer


def _pairwise(old: list[Any], new: list[Any], path: tuple[Any, ...], out: list[Any]) -> None:
    """DeepDiff's in-order comparison: position by position, then the longer tail."""
    for index, (a, b) in enumerate(zip(old, new, strict=False)):
        _walk(a, b, (*path, index), out)
    shorter = min(len(old), len(new))
    out.extend((*path, index) for index in range(shorter, max(len(old), len(new))))


def _walk_lists(old: list[Any], new: list[Any], path: tuple[Any, ...], out: list[Any]) -> None:
    if not (_all_scalars(old) & _all_scalars(new)):
        _pairwise(old, new, path, out)
        return
    if old == new:  # equal under ==, so difflib matches every item: nothing to report
        return
    # Arrays of scalars: DeepDiff matches them with difflib, and keeps the plain
    # position-by-position answer instead when that reports no more items.
    found: list[tuple[Any, ...] | None] = []  # None: an item moved (counted, not reported)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "delete":
            found.extend((*path, i) for i in range(i1, i2))
        elif tag == "insert":
            found.extend((*path, j) for j in range(j1, j2))
        else:  # replace: pairs, then the longer side's rest
            for k in range(max(i2 - i1, j2 - j1)):
                i, j = i1 + k, j1 + k
                if i >= i2:
                    found.append((*path, j))
                elif j >= j2:
                    found.append((*path, i))
                else:
                    a, b = old[i], new[j]
                    if i != j and a == b:
                        found.append(None)
                    elif a is not b and (type(a) is not type(b) or a != b):
                        found.append((*path, i))
    if len(found) > 1:
        plain: list[Any] = []
        _pairwise(old, new, path, plain)
        if len(found) >= len(plain):
            out.extend(plain)
            return
    out.extend(item for item in found if item is not None)


def nested_detail(old: JSONValue, new: JSONValue) -> tuple[NestedChange, ...]:
    """The element-level differences between two nested values, in a stable order.

    A direct walk over the two JSON values that reports exactly what
    :func:`deepdiff_detail` reports (DeepDiff's conventions included, see
    docs/consumer.md) at a fraction of its cost. Values that are not plain JSON data
    (tuples, decimals... never on the wire) are handed to DeepDiff.
    """
    paths: list[tuple[str | int, ...]] = []
    try:
        _walk(old, new, (), paths)
    except _Unsupported:
        return deepdiff_detail(old, new)
    return _detail_from_paths(old, new, paths) if paths else ()


def diff_rows(
    before: Mapping[str, JSONValue] | None,
    after: Mapping[str, JSONValue] | None,
    *,
    changed_masked: Collection[str] = (),
    nested: NestedDiff | None = None,
) -> dict[str, FieldChange]:
    """Field changes between two wire-encoded rows (``None`` for an absent side).

    ``changed_masked`` names masked columns the producer saw change: they are reported with
    the masked marker on both sides even though the encoded values are equal. ``nested``
    computes the detail of nested values (default :func:`nested_detail`;
    :func:`deepdiff_detail` is the reference it matches).
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
            changes[name] = FieldChange(old, new, (nested or nested_detail)(old, new))
        else:
            changes[name] = FieldChange(old, new)
    if len(before) != len(after) or any(name not in after for name in before):
        for name, old in before.items():
            if name not in after:
                changes[name] = FieldChange(old, None)
    return changes


def diff_event(event: ChangeEvent, *, nested: NestedDiff | None = None) -> dict[str, FieldChange]:
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
    return diff_rows(event.before, event.after, changed_masked=masked, nested=nested)


def _record(
    event: ChangeEvent, *, changes: Mapping[str, FieldChange], **overrides: Any
) -> AuditRecord:
    """An :class:`AuditRecord` with ``changes`` and every other field taken from ``event``,
    except those given in ``overrides``."""
    actor = event.actor
    fields: dict[str, Any] = {
        "table": event.table,
        "record_id": event.record_id,
        "event_id": event.event_id,
        "event_time": event.committed_at,
        "occurred_at": event.occurred_at,
        "operation": event.operation,
        "service": event.service,
        "transaction_id": event.transaction_id,
        "sequence": event.sequence,
        "before": event.before,
        "after": event.after,
        "actor_id": None if actor is None else actor.id,
        "actor_attributes": {} if actor is None else actor.attributes,
        "request_id": event.request_id,
        "previous_record_id": event.previous_record_id,
        "masked_columns": tuple(event.masked_columns),
        "metadata": event.metadata,
        "seal": Seal.of_event(event),
    }
    fields.update(overrides)
    return AuditRecord(changes=changes, **fields)


def record_for_event(event: ChangeEvent, *, nested: NestedDiff | None = None) -> AuditRecord | None:
    """The record to store for ``event``, or ``None`` for an update that changed nothing.

    A bulk-statement marker (``record_id`` ``"*"``: rows changed but not itemized) has no
    field changes and is stored all the same, under its table's ``"*"`` record.
    """
    changes = diff_event(event, nested=nested)
    if (
        not changes
        and event.operation is Operation.UPDATE
        and not event.is_marker
        and event.signature is None  # a signed event is kept: its transaction stays whole
    ):
        return None
    return _record(event, changes=changes)


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
    return _record(
        event,
        changes=diff_rows(event.before, None),
        record_id=old_id,
        event_id=departure_event_id(event.event_id),
        operation=Operation.DELETE,
        after=None,
        previous_record_id=None,
        seal=None,
        metadata={
            **event.metadata,
            MOVED_TO_KEY: event.record_id,
            MOVE_EVENT_KEY: str(event.event_id),
        },
    )


def records_for_event(event: ChangeEvent, *, nested: NestedDiff | None = None) -> list[AuditRecord]:
    """Everything to store for ``event``, in order: its own record (unless it changed
    nothing), then the departure record under the old id if the update moved the row.
    """
    records: list[AuditRecord] = []
    record = record_for_event(event, nested=nested)
    if record is not None:
        records.append(record)
    departure = departure_for_event(event)
    if departure is not None:
        records.append(departure)
    return records


__all__ = [
    "NestedDiff",
    "deepdiff_detail",
    "departure_for_event",
    "diff_event",
    "diff_rows",
    "nested_detail",
    "record_for_event",
    "records_for_event",
]
