"""Per-transaction buffer of captured changes: savepoint-aware, coalescing.

Changes are kept per *session transaction* and leave the buffer only when the outermost
transaction commits; the buffer lives in ``session.info`` and a transaction's frames are
dropped when it ends, so a reused session always starts empty.

Savepoints. Each ``begin_nested()`` gets its own frame. Releasing the savepoint merges its
frame into the enclosing one; rolling it back (or closing it) discards only its frame.

Coalescing. Several flushes of one row inside a transaction become one change, keyed by
``(table, record_id)`` and following the row when its primary key changes:

===============  ===============  ===================================================
earlier          later            result
===============  ===============  ===================================================
insert           update           insert with the final values
insert           delete           nothing
update           update           update from the first before to the last after;
                                  nothing when no value differs in the end
update           delete           delete with the original before (and original key)
delete           insert           update from the deleted row to the new one
                                  (nothing when equal)
===============  ===============  ===================================================

The later change's after image wins only for the columns it changed; every other column
keeps the value of the earlier after image. A flush reports the session's value of a column
it did not write, which is stale after a bulk UPDATE with ``synchronize_session=False``: the
bulk change of that column survives.

Order. Changes leave the buffer in first-change order, except that a change moving a row off
a key comes before the change putting another row on it (see :func:`vacate_first`).

A coalesced change keeps the position of the row's first change (its ``sequence``), the
actor, request id and ``occurred_at`` of its last change, and merged metadata. Masked
columns cannot be compared, so they count as changed when any step changed them.

Anything that adds :class:`~sqla_audit.changes.RowChange` objects through
:meth:`TransactionBuffer.add` (the flush listeners and the ``do_orm_execute`` listener of
bulk statements, :mod:`sqla_audit.bulk`) gets the same savepoint and coalescing behaviour.

Markers (a bulk statement's rows that were not itemized, ``record_id`` ``"*"``) describe a
statement, not a row: they are kept in order and never coalesced, with each other or with
a row whose key happens to be ``"*"``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Protocol

from sqla_audit.changes import RowChange
from sqla_audit.events import MARKER_METADATA_KEY, MARKER_RECORD_ID, Operation
from sqla_audit.serialization import TAG, JSONValue, decode_value


class TransactionLike(Protocol):
    """What the buffer needs of a transaction (``sqlalchemy.orm.SessionTransaction``)."""

    @property
    def nested(self) -> bool: ...

    @property
    def parent(self) -> Any: ...


_MISSING: Any = object()


def _is_masked(value: JSONValue | Any) -> bool:
    return isinstance(value, dict) and value.get(TAG) == "masked"


def _equal(a: Any, b: Any) -> bool:
    if a is _MISSING or b is _MISSING:
        return False
    if a == b:
        return True
    try:
        return bool(decode_value(a) == decode_value(b))
    except Exception:  # noqa: BLE001 -- undecodable means "cannot tell": report a change
        return False


def _merge_names(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))


def _layered_after(first: RowChange, then: RowChange) -> Mapping[str, JSONValue]:
    """The row after ``first`` then ``then``: ``then`` wins only for the columns it changed.

    A column ``then`` did not change holds, in ``then``'s images, what its source believed
    (a flush's value of a column it did not write is the session's, stale after a bulk
    UPDATE with ``synchronize_session=False``); the earlier change's after image has the
    value the database holds, since every captured change in between is folded into it.
    """
    base = first.after
    later = then.after or {}
    if not base:
        return later
    changed = set(then.changed_columns)
    if all(name in changed or name not in base for name in later):
        return later
    merged = dict(later)
    for name, value in base.items():
        if name in merged and name not in changed:
            merged[name] = value
    return merged


def _net_update(first: RowChange, then: RowChange) -> RowChange | None:
    """``first`` (update or delete) followed by ``then`` (update or insert) as one update."""
    before = first.before or {}
    after = _layered_after(first, then)
    stepped = set(first.changed_columns) | set(then.changed_columns)
    changed = []
    for name in dict.fromkeys([*after, *before]):
        old, new = before.get(name, _MISSING), after.get(name, _MISSING)
        if name not in stepped:
            continue  # both images carry it unchanged
        if _is_masked(old) or _is_masked(new) or not _equal(old, new):
            changed.append(name)
    original_id = first.previous_record_id or first.record_id
    original_key = first.previous_primary_key or first.primary_key
    moved = original_id != then.record_id
    if not changed and not moved:
        return None
    return replace(
        then,
        operation=Operation.UPDATE,
        before=first.before,
        after=after,
        changed_columns=tuple(changed),
        previous_record_id=original_id if moved else None,
        previous_primary_key=original_key if moved else None,
        masked_columns=_merge_names(first.masked_columns, then.masked_columns),
        metadata=_merge_metadata(first.metadata, then.metadata),
    )


def _merge_metadata(
    first: Mapping[str, JSONValue], then: Mapping[str, JSONValue]
) -> Mapping[str, JSONValue]:
    if not first:
        return then
    if not then:
        return first
    return MappingProxyType({**first, **then})


def coalesce(first: RowChange, then: RowChange) -> RowChange | None:
    """Combine two successive changes of one row; ``None`` when nothing remains."""
    a, b = first.operation, then.operation
    if a is Operation.INSERT:
        if b is Operation.DELETE:
            return None
        after = _layered_after(first, then)
        return replace(
            then,
            operation=Operation.INSERT,
            before=None,
            after=after,
            changed_columns=tuple(after),
            previous_record_id=None,
            previous_primary_key=None,
            masked_columns=then.masked_columns,
            metadata=_merge_metadata(first.metadata, then.metadata),
        )
    if a is Operation.UPDATE and b is Operation.DELETE:
        return replace(
            then,
            before=first.before,
            record_id=first.previous_record_id or first.record_id,
            primary_key=first.previous_primary_key or first.primary_key,
            changed_columns=tuple(first.before or ()),
            previous_record_id=None,
            previous_primary_key=None,
            masked_columns=_merge_names(first.masked_columns, then.masked_columns),
            metadata=_merge_metadata(first.metadata, then.metadata),
        )
    if (a is Operation.UPDATE and b is Operation.UPDATE) or (
        a is Operation.DELETE and b is Operation.INSERT
    ):
        return _net_update(first, then)
    # Impossible sequences (update after delete, insert after insert): trust the latest.
    return then


def _no_op(change: RowChange) -> bool:
    """A row changed and changed back inside the transaction (see :meth:`Frame.apply`)."""
    return (
        change.operation is Operation.UPDATE
        and not change.changed_columns
        and change.previous_record_id is None
        and MARKER_METADATA_KEY not in change.metadata
    )


def vacate_first(changes: list[RowChange]) -> list[RowChange]:
    """``changes`` in order, except that a change moving a row off a key (or deleting it)
    comes before the change that puts another row on that key (row A moved 1 -> 10 or
    deleted, row B moved 3 -> 1: A's change first, whichever row the transaction touched
    first), so that applying the events
    in ``sequence`` order never finds two rows on one key. Keys swapped in a cycle cannot be
    ordered so: they keep first-change order.
    """
    vacating: dict[tuple[str, str], int] = {}
    for index, change in enumerate(changes):
        if change.previous_record_id is not None:
            vacating[(change.table, change.previous_record_id)] = index
        elif change.operation is Operation.DELETE and MARKER_METADATA_KEY not in change.metadata:
            vacating.setdefault((change.table, change.record_id), index)
    if not vacating:
        return changes
    waits: dict[int, int] = {}
    for index, change in enumerate(changes):
        blocker = vacating.get((change.table, change.record_id))
        if blocker is not None and blocker != index:
            waits[index] = blocker
    if all(blocker < index for index, blocker in waits.items()):
        return changes
    pending = [1 if index in waits else 0 for index in range(len(changes))]
    unblocks: dict[int, list[int]] = {}
    for index, blocker in waits.items():
        unblocks.setdefault(blocker, []).append(index)
    ready = [index for index, count in enumerate(pending) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for waiting in unblocks.get(index, ()):
            pending[waiting] -= 1
            if pending[waiting] == 0:
                heapq.heappush(ready, waiting)
    placed = set(order)
    order.extend(index for index in range(len(changes)) if index not in placed)  # cycles
    return [changes[index] for index in order]


@dataclass(slots=True)
class _Entry:
    position: int
    change: RowChange


class Frame:
    """The coalesced changes of one (sub)transaction, in first-change order."""

    __slots__ = ("_displaced", "_index")

    def __init__(self) -> None:
        self._index: dict[tuple[str, str], _Entry] = {}
        self._displaced: list[_Entry] = []

    def apply(self, change: RowChange, position: int) -> None:
        """Fold ``change`` into this frame; ``position`` orders a row seen for the first time."""
        if change.record_id == MARKER_RECORD_ID and MARKER_METADATA_KEY in change.metadata:
            self._displaced.append(_Entry(position, change))
            return
        lookup = (change.table, change.previous_record_id or change.record_id)
        entry = self._index.pop(lookup, None)
        if entry is None:
            entry = _Entry(position, change)
        else:
            merged = coalesce(entry.change, change)
            if merged is None:
                if entry.change.operation is Operation.INSERT:
                    return  # inserted, then deleted: nothing remains
                # Changed and changed back: kept as a no-op (dropped when drained) so that a
                # parent frame absorbing it still learns who changed the row last.
                merged = replace(
                    change,
                    operation=Operation.UPDATE,
                    before=entry.change.before,
                    after=_layered_after(entry.change, change),
                    changed_columns=(),
                    previous_record_id=None,
                    previous_primary_key=None,
                    masked_columns=_merge_names(entry.change.masked_columns, change.masked_columns),
                    metadata=_merge_metadata(entry.change.metadata, change.metadata),
                )
            entry.change = merged
        key = (entry.change.table, entry.change.record_id)
        occupant = self._index.get(key)
        if occupant is not None:
            # Another row already holds the key this one moved to (keys swapped within the
            # transaction): keep both changes, uncoalesced.
            self._displaced.append(occupant)
        self._index[key] = entry

    def absorb(self, child: Frame) -> None:
        """Merge a released savepoint's frame into this one."""
        for entry in child.entries():
            self.apply(entry.change, entry.position)

    def entries(self) -> list[_Entry]:
        return sorted([*self._index.values(), *self._displaced], key=lambda e: e.position)

    def changes(self) -> list[RowChange]:
        """The changes in first-change order, a row leaving a key before another takes it."""
        return vacate_first([entry.change for entry in self.entries() if not _no_op(entry.change)])

    def __len__(self) -> int:
        return len(self._index) + len(self._displaced)


class TransactionBuffer:
    """The frames of one session, keyed by their ``SessionTransaction``."""

    __slots__ = ("_committed", "_frames", "_positions")

    def __init__(self) -> None:
        self._frames: dict[Any, Frame] = {}
        self._committed: set[int] = set()
        self._positions = itertools.count()

    @staticmethod
    def frame_owner(transaction: TransactionLike) -> TransactionLike:
        """The savepoint or root transaction whose frame collects ``transaction``'s work."""
        current = transaction
        while not current.nested and current.parent is not None:
            current = current.parent
        return current

    def add(self, transaction: TransactionLike, change: RowChange) -> None:
        """Record ``change`` in the frame of ``transaction`` (a savepoint or the root)."""
        self.add_all(transaction, (change,))

    def add_all(self, transaction: TransactionLike, changes: Iterable[RowChange]) -> None:
        """Record ``changes`` in order, as :meth:`add` would one by one."""
        owner = self.frame_owner(transaction)
        frame = self._frames.get(owner)
        if frame is None:
            frame = self._frames[owner] = Frame()
        apply, positions = frame.apply, self._positions
        for change in changes:
            apply(change, next(positions))

    def mark_committed(self, transaction: TransactionLike) -> None:
        """A savepoint was released: its frame will merge into the parent when it ends."""
        if transaction in self._frames:
            self._committed.add(id(transaction))

    def end(self, transaction: TransactionLike) -> None:
        """``transaction`` ended: merge (released savepoint) or discard its frame."""
        frame = self._frames.pop(transaction, None)
        committed = id(transaction) in self._committed
        self._committed.discard(id(transaction))
        if frame is None or not committed or not transaction.nested:
            return
        parent = self.frame_owner(transaction.parent)
        target = self._frames.get(parent)
        if target is None:
            self._frames[parent] = frame
        else:
            target.absorb(frame)

    def drain(self, root: TransactionLike) -> list[RowChange]:
        """Remove and return the root frame's changes in order (at the outermost commit)."""
        frame = self._frames.pop(root, None)
        self._committed.discard(id(root))
        return [] if frame is None else frame.changes()

    def pending(self) -> int:
        """Number of changes held in all frames."""
        return sum(len(frame) for frame in self._frames.values())

    def clear(self) -> None:
        self._frames.clear()
        self._committed.clear()


__all__ = ["Frame", "TransactionBuffer", "TransactionLike", "coalesce", "vacate_first"]
