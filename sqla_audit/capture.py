"""Turn each unit-of-work flush into :class:`RowChange` records (no I/O but SELECTs).

The approach follows SQLAlchemy's own ``examples/versioned_history``: old values come from
attribute history, and objects that sit in ``session.dirty`` without a real change are
dropped. Three session events cooperate, all inside ``Session.flush()``:

``before_flush``
    For modified and deleted objects, take the *before image* now, before any SQL runs
    (the flush expires what it hands to the database -- SQL expressions, ``onupdate``
    values -- and their history with it). Old values come from attribute history; the
    audited columns whose old value the session does not hold -- expired after a commit,
    deferred and never loaded, assigned while unloaded, flagged as mutated in place -- are
    read with one SELECT per mapper (keys batched in ``IN`` lists) through the flush's own
    connection. Nothing on the objects is touched, so pending changes are never clobbered.
``after_flush``
    The rows are written but the session still shows its pre-flush state: ``state.key``
    is the old identity (a changed primary key stays recoverable) and the unit of work's
    collection history holds the many-to-many rows it just wrote. Deletes and association
    rows are complete here; inserts and updates are remembered. An object changed only by
    the flush itself (a foreign key synchronized from a relationship) gets its before image
    from history here.
``after_flush_postexec``
    Objects are persistent with their new identity: generated keys, server defaults and
    ``onupdate`` values can be read (expired ones are loaded), so the after images of
    inserts and updates are taken here, compared with the before images (Python
    equality, like the ORM's own history), encoded and handed to the sink.

Values are encoded with :func:`sqla_audit.serialization.encode_value`: those of immutable
types when the change's image is first read (where the events are built, see
:mod:`sqla_audit.flush_images`), the others -- a mutable JSON or ARRAY value, which the
transaction may still change, an enum, an unknown type -- at capture time.
Masked columns are compared in process and leave it only as ``MASKED_VALUE``.

An update whose audited values did not change produces nothing. Rows are ordered inside one
flush as: inserts (in ``Session.add`` order), then updates, association-table rows
(inserts before deletes) and deletes, each group by table and record id.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect
from sqlalchemy.orm import InstanceState, Mapper, RelationshipProperty, Session
from sqlalchemy.orm import attributes as orm_attributes
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.orm.base import NO_VALUE, PASSIVE_NO_RESULT, PassiveFlag
from sqlalchemy.orm.unitofwork import UOWTransaction

from sqla_audit.changes import RowChange, row_change
from sqla_audit.config import (
    AssociationPlan,
    AuditConfig,
    ColumnSpec,
    ModelPlan,
    plan_association,
    plan_model,
)
from sqla_audit.context import AuditContext, current_context
from sqla_audit.events import Operation, make_record_id, utcnow
from sqla_audit.flush_images import FlushImages
from sqla_audit.serialization import JSONValue, encode_mapping, encode_value

logger = logging.getLogger(__name__)

#: Prefixes of the per-flush state a :class:`Capturer` keeps in ``flush_context.attributes``;
#: each capturer adds its own id, so installations covering one session never share state.
_SNAPSHOTS: Final = "sqla_audit.snapshots"
_PENDING: Final = "sqla_audit.pending"
_MISSING: Final[Any] = object()

#: Largest number of keys per ``IN`` clause of a prefetch SELECT.
PREFETCH_CHUNK: Final = 500

_EMPTY_MAPPING: Final[Mapping[str, JSONValue]] = MappingProxyType({})
_NO_KEYS: Final[frozenset[str]] = frozenset()

#: Key in ``InstanceState.info``: the attribute keys whose loaded values a bulk UPDATE that
#: did not synchronize the session made stale (set by :mod:`sqla_audit.bulk`). A flush reads
#: them from the database instead of trusting the object.
STALE_KEYS: Final = "sqla_audit.stale_keys"
#: Key in ``InstanceState.info``: the stale values a flush saw loaded (to tell, after it,
#: the columns it did not write from those it wrote).
_STALE_SEEN: Final = "sqla_audit.stale_seen"


#: Receives every change captured from a flush, in order.
ChangeSink = Callable[[Session, RowChange], None]

#: Receives the changes of one flush together, in order (same meaning as a ``ChangeSink``).
ChangesSink = Callable[[Session, Sequence[RowChange]], None]

#: Told about a failure that must not stop the flush (a metadata hook that raised).
ErrorReporter = Callable[[BaseException], None]


class Planner:
    """Caches the :class:`ModelPlan` of each mapper and the association plans it owns."""

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self._models: dict[Mapper[Any], ModelPlan] = {}
        self._associations: dict[
            Mapper[Any], tuple[tuple[RelationshipProperty[Any], AssociationPlan], ...]
        ] = {}

    def model(self, mapper: Mapper[Any]) -> ModelPlan:
        plan = self._models.get(mapper)
        if plan is None:
            plan = plan_model(mapper, self.config)
            self._models[mapper] = plan
        return plan

    def associations(
        self, mapper: Mapper[Any]
    ) -> tuple[tuple[RelationshipProperty[Any], AssociationPlan], ...]:
        found = self._associations.get(mapper)
        if found is None:
            items = []
            for prop in mapper.relationships:
                plan = plan_association(prop, self.config)
                if plan is not None:
                    items.append((prop, plan))
            found = tuple(items)
            self._associations[mapper] = found
        return found

    def validate(self, mappers: Iterable[Mapper[Any]]) -> None:
        """Plan every given mapper now, so configuration errors surface at install time."""
        for mapper in mappers:
            self.model(mapper)
            self.associations(mapper)


# --------------------------------------------------------------------------- helpers


def _history(state: InstanceState[Any], key: str) -> orm_attributes.History:
    return state.attrs[key].history


def _old_value(state: InstanceState[Any], key: str) -> Any:
    """The pre-flush committed value the session holds, or ``_MISSING``.

    The same answer as ``History`` (the old value of a changed attribute, else its current
    value), read straight from ``committed_state`` because this runs for every audited
    column of every changed object.
    """
    committed = state.committed_state
    if key in committed:
        original = committed[key]
        if original is NO_VALUE or original is PASSIVE_NO_RESULT:
            return _MISSING  # assigned while unloaded, or flagged as mutated in place
        return original
    return state.dict.get(key, _MISSING)


def _present(names: tuple[str, ...], row: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``names`` that are keys of ``row``, in order (usually none to look at)."""
    return tuple(name for name in names if name in row) if names else ()


def has_changes(state: InstanceState[Any]) -> bool:
    """``Session.is_modified(obj, include_collections=False)``, from the changed attributes.

    ``is_modified`` asks every attribute of the class for its history. Only attributes in
    ``committed_state`` (the ones set, deleted or flagged since the last flush) can have
    any: the history of a scalar or object attribute that is not there has nothing added
    or deleted. So the same answer comes from asking just those.
    """
    if not state.modified:
        return False
    manager, loaded = state.manager, state.dict
    for key in list(state.committed_state):
        attribute = manager.get(key)
        if attribute is None:
            continue
        impl = attribute.impl
        if hasattr(impl, "get_collection") or not hasattr(impl, "get_history"):
            continue
        added, _unchanged, deleted = impl.get_history(state, loaded, passive=PassiveFlag.NO_CHANGE)
        if added or deleted:
            return True
    return False


def _assigned(state: InstanceState[Any], key: str) -> bool:
    hist = _history(state, key)
    return bool(hist.added or hist.deleted)


def same_value(a: Any, b: Any) -> bool:
    """Python equality as the ORM's history uses it; an ``__eq__`` that fails means "changed"."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 -- an odd __eq__ means "cannot tell": treat as changed
        return False


def _same_key_values(old: Sequence[Any], new: Sequence[Any]) -> bool:
    """True when both key value sequences certainly give the same record id and key.

    Identical objects, or equal ``int``/``str`` values (whose canonical text and encoding
    depend on the value only); anything else (``Decimal("1.0")`` vs ``Decimal("1.00")``)
    is left to the full computation.
    """
    if len(old) != len(new):
        return False
    for a, b in zip(old, new, strict=True):
        if a is b:
            continue
        kind = type(a)
        if kind is not type(b) or kind not in (int, str) or a != b:
            return False
    return True


@dataclass(slots=True)
class _PendingRow:
    state: InstanceState[Any]
    obj: Any
    plan: ModelPlan
    operation: Operation
    before: dict[str, Any] = field(default_factory=dict)
    old_identity: tuple[Any, ...] | None = None
    untouched_unloaded: frozenset[str] = frozenset()
    fetched: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What a modified or deleted object looked like before the flush wrote it."""

    before: dict[str, Any]
    untouched_unloaded: frozenset[str]


@dataclass(slots=True)
class _FlushRecord:
    occurred_at: dt.datetime
    context: AuditContext
    inserts: list[_PendingRow] = field(default_factory=list)
    updates: list[_PendingRow] = field(default_factory=list)
    ready: list[RowChange] = field(default_factory=list)


class Capturer:
    """The flush listeners' bodies; changes go to ``sink`` (normally the buffer)."""

    def __init__(
        self,
        planner: Planner,
        sink: ChangeSink,
        report: ErrorReporter,
        *,
        sink_all: ChangesSink | None = None,
    ) -> None:
        self.planner = planner
        self.config = planner.config
        self.sink = sink
        #: Receives all changes of one flush at once when given (one buffer lookup per
        #: flush instead of per row); otherwise ``sink`` gets them one by one.
        self.sink_all = sink_all
        self.report = report
        self._fallback = self.config.unknown_types
        #: Row images encoded when first read (see :mod:`sqla_audit.flush_images`).
        self.images = FlushImages(self._fallback)
        # Per-flush state of this capturer alone (another installation may cover the same
        # session with other settings: it keeps its state under its own keys).
        self._snapshots_key = f"{_SNAPSHOTS}.{id(self)}"
        self._pending_key = f"{_PENDING}.{id(self)}"

    # -- encoding ----------------------------------------------------------------------

    def _encode_key(
        self,
        plan: ModelPlan,
        values: Sequence[Any],
        raw: Mapping[str, Any] = _EMPTY_MAPPING,
        encoded: Mapping[str, JSONValue] = _EMPTY_MAPPING,
    ) -> dict[str, JSONValue]:
        """The encoded ``primary_key`` of ``values``, reusing the row's encoding of a key
        value taken from ``raw`` (key columns are never masked, so the encoded row holds
        exactly what encoding the value would give).
        """
        fallback = self._fallback
        key: dict[str, JSONValue] = {}
        for attr, name, value in zip(plan.pk_keys, plan.pk_names, values, strict=True):
            if name in encoded and raw.get(attr, _MISSING) is value:
                key[name] = encoded[name]
            else:
                key[name] = encode_value(value, fallback=fallback)
        return key

    # -- before_flush: make every needed old value known --------------------------------

    def before_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        """Snapshot the before image of every modified or deleted audited object.

        Taken before any SQL runs: the flush itself expires attributes it hands to the
        database (SQL expressions, ``onupdate`` values), and their history with them.
        ``session.dirty`` is filtered with :func:`has_changes` (``is_modified`` asked only
        of the attributes that were changed), and each object's old values, unknown keys
        and untouched unloaded columns come from one pass over its audited columns.
        """
        wanted: dict[Mapper[Any], list[tuple[InstanceState[Any], list[str]]]] = defaultdict(list)
        images: list[tuple[InstanceState[Any], dict[str, Any], frozenset[str]]] = []
        instance_state = orm_attributes.instance_state
        states = [instance_state(obj) for obj in session.dirty]
        modified = len(states)
        states.extend(instance_state(obj) for obj in session.deleted)
        for index, state in enumerate(states):
            if state.key is None:
                continue
            plan = self.planner.model(state.mapper)
            if not plan.enabled or (index < modified and not has_changes(state)):
                continue
            # One pass per object: the old values the session holds, the keys it does not
            # hold (read below), and the columns neither loaded nor assigned.
            loaded, committed = state.dict, state.committed_state
            before: dict[str, Any] = {}
            missing: list[str] = []
            untouched: list[str] = []
            stale = state.info.get(STALE_KEYS, _NO_KEYS)
            if stale:
                state.info[_STALE_SEEN] = {k: loaded[k] for k in stale if k in loaded}
            for key, _name, _masked, _spec in plan.column_rows:
                if key in committed:
                    original = committed[key]
                    if original is NO_VALUE or original is PASSIVE_NO_RESULT:
                        missing.append(key)  # assigned while unloaded, or mutated in place
                    else:
                        before[key] = original
                elif key in loaded and key not in stale:
                    before[key] = loaded[key]
                else:
                    missing.append(key)
                    untouched.append(key)
            if missing:
                wanted[state.mapper].append((state, missing))
            images.append((state, before, frozenset(untouched) if untouched else _NO_KEYS))
        prefetched: dict[InstanceState[Any], dict[str, Any]] = {}
        for mapper, items in wanted.items():
            prefetched.update(self._prefetch(session, mapper, items))
        snapshots: dict[InstanceState[Any], _Snapshot] = {}
        for state, before, untouched_unloaded in images:
            fetched = prefetched.get(state)
            if fetched:
                before.update(fetched)  # only keys that were missing; order does not matter
            snapshots[state] = _Snapshot(before=before, untouched_unloaded=untouched_unloaded)
        flush_context.attributes[self._snapshots_key] = snapshots

    def _prefetch(
        self,
        session: Session,
        mapper: Mapper[Any],
        items: list[tuple[InstanceState[Any], list[str]]],
    ) -> dict[InstanceState[Any], dict[str, Any]]:
        plan = self.planner.model(mapper)
        needed = {key for _state, keys in items for key in keys}
        specs = [spec for spec in plan.columns if spec.key in needed]
        pk_cols = list(mapper.primary_key)
        columns = [col.label(f"k{i}") for i, col in enumerate(pk_cols)]
        columns += [spec.column.label(f"c{i}") for i, spec in enumerate(specs)]
        by_identity: dict[tuple[Any, ...], InstanceState[Any]] = {}
        for state, _keys in items:
            assert state.key is not None
            by_identity[tuple(state.key[1])] = state
        connection = session.connection(bind_arguments={"mapper": mapper})
        identities = list(by_identity)
        found: dict[InstanceState[Any], dict[str, Any]] = {}
        for start in range(0, len(identities), PREFETCH_CHUNK):
            chunk = identities[start : start + PREFETCH_CHUNK]
            if len(pk_cols) == 1:
                where = pk_cols[0].in_([ident[0] for ident in chunk])
            else:
                where = sa.tuple_(*pk_cols).in_(chunk)
            stmt = sa.select(*columns).select_from(mapper.persist_selectable).where(where)
            for row in connection.execute(stmt):
                fields = tuple(row)
                target = by_identity.get(fields[: len(pk_cols)])
                if target is None:
                    continue
                values = fields[len(pk_cols) :]
                found[target] = {spec.key: value for spec, value in zip(specs, values, strict=True)}
        return found

    # -- after_flush: old values, identities, deletes, association rows ----------------

    def after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        snapshots: dict[InstanceState[Any], _Snapshot] = flush_context.attributes.get(
            self._snapshots_key, {}
        )
        record = _FlushRecord(occurred_at=utcnow(), context=current_context())
        deletes: list[RowChange] = []
        association: dict[tuple[str, Operation, str], RowChange] = {}
        for state, (isdelete, listonly) in list(flush_context.states.items()):
            self._collect_associations(state, isdelete, flush_context, record, association)
            if listonly:
                continue
            plan = self.planner.model(state.mapper)
            if not plan.enabled:
                continue
            if isdelete:
                if state.key is not None:
                    change = self._delete(state, plan, snapshots.get(state), record)
                    deletes.append(change)
            elif state.key is None:
                record.inserts.append(
                    _PendingRow(
                        state=state,
                        obj=state.obj(),
                        plan=plan,
                        operation=Operation.INSERT,
                    )
                )
            else:
                pending = self._update_pending(state, plan, snapshots.get(state), session)
                if pending is not None:
                    record.updates.append(pending)
        record.inserts.sort(key=lambda row: row.state.insert_order or 0)
        record.ready.extend(
            sorted(
                association.values(),
                key=lambda c: (c.table, c.operation != Operation.INSERT, c.record_id),
            )
        )
        record.ready.extend(sorted(deletes, key=lambda c: (c.table, c.record_id)))
        flush_context.attributes[self._pending_key] = record

    def _before_image(
        self, state: InstanceState[Any], plan: ModelPlan, fetched: Mapping[str, Any]
    ) -> dict[str, Any]:
        before: dict[str, Any] = {}
        for spec in plan.columns:
            value = _old_value(state, spec.key)
            if value is _MISSING:
                value = fetched.get(spec.key, _MISSING)
            if value is not _MISSING:
                before[spec.key] = value
        return before

    def _delete(
        self,
        state: InstanceState[Any],
        plan: ModelPlan,
        snapshot: _Snapshot | None,
        record: _FlushRecord,
    ) -> RowChange:
        assert state.key is not None
        before = snapshot.before if snapshot else self._before_image(state, plan, {})
        image, keys = self.images.image(plan, before)
        key_values = state.key[1]
        context = record.context
        return row_change(
            plan.table,
            Operation.DELETE,
            make_record_id(key_values),
            self._encode_key(plan, key_values, before, keys),
            image,
            None,
            tuple(image),
            record.occurred_at,
            None,
            None,
            _present(plan.masked_names, image),
            context.actor,
            context.request_id,
            context.metadata,
        )

    def _update_pending(
        self,
        state: InstanceState[Any],
        plan: ModelPlan,
        snapshot: _Snapshot | None,
        session: Session,
    ) -> _PendingRow | None:
        if snapshot is None:
            # Not modified before the flush: only the flush itself changed it (a foreign
            # key synchronized from a relationship). History still holds those values.
            if not any(_assigned(state, spec.key) for spec in plan.columns):
                return None
            # Columns a bulk UPDATE made stale were not written by this flush: the
            # database holds their value before and after it.
            stale = [
                key for key in state.info.get(STALE_KEYS, _NO_KEYS) if not _assigned(state, key)
            ]
            fetched = (
                self._prefetch(session, state.mapper, [(state, stale)]).get(state, {})
                if stale
                else {}
            )
            if fetched:
                state.info[_STALE_SEEN] = {k: state.dict[k] for k in fetched if k in state.dict}
            snapshot = _Snapshot(
                before={**self._before_image(state, plan, {}), **fetched},
                untouched_unloaded=frozenset(
                    spec.key
                    for spec in plan.columns
                    if (spec.key not in state.dict or spec.key in fetched)
                    and not _assigned(state, spec.key)
                ),
            )
        assert state.key is not None
        return _PendingRow(
            state=state,
            obj=state.obj(),
            plan=plan,
            operation=Operation.UPDATE,
            before=snapshot.before,
            old_identity=tuple(state.key[1]),
            untouched_unloaded=snapshot.untouched_unloaded,
        )

    def _collect_associations(
        self,
        state: InstanceState[Any],
        isdelete: bool,
        flush_context: UOWTransaction,
        record: _FlushRecord,
        out: dict[tuple[str, Operation, str], RowChange],
    ) -> None:
        for prop, plan in self.planner.associations(state.mapper):
            hist: orm_attributes.History = flush_context.get_attribute_history(  # type: ignore[no-untyped-call]
                state, prop.key, PassiveFlag.PASSIVE_NO_INITIALIZE
            )
            if not hist:
                continue
            added: Sequence[Any] = ()
            removed: Sequence[Any] = ()
            if isdelete:
                removed = [*(hist.unchanged or ()), *(hist.deleted or ())]
            else:
                added, removed = hist.added or (), hist.deleted or ()
            for operation, children in ((Operation.INSERT, added), (Operation.DELETE, removed)):
                for child in children:
                    if child is None:
                        continue
                    change = self._association_row(
                        state, child, plan=plan, operation=operation, record=record
                    )
                    if change is not None:
                        out.setdefault((change.table, operation, change.record_id), change)

    def _association_row(
        self,
        state: InstanceState[Any],
        child: Any,
        *,
        plan: AssociationPlan,
        operation: Operation,
        record: _FlushRecord,
    ) -> RowChange | None:
        values: dict[sa.Column[Any], Any] = {}
        child_state: InstanceState[Any] = inspect(child)
        for source_state, pairs in ((state, plan.parent_pairs), (child_state, plan.child_pairs)):
            mapper = source_state.mapper
            for source_col, target_col in pairs:
                key = mapper.get_property_by_column(source_col).key
                value = source_state.dict.get(key, _MISSING)
                if value is _MISSING:
                    obj = source_state.obj()
                    if obj is None:
                        return None
                    value = getattr(obj, key)
                values[target_col] = value
        key_values = [values[col] for col in plan.key_columns]
        row = {
            col.name: encode_value(values[col], fallback=self.config.unknown_types)
            for col in plan.columns
        }
        primary_key = {col.name: row[col.name] for col in plan.key_columns}
        insert = operation is Operation.INSERT
        return self._row_change(
            record,
            table=plan.table,
            operation=operation,
            record_id=make_record_id(key_values),
            primary_key=primary_key,
            before=None if insert else row,
            after=row if insert else None,
            changed_columns=tuple(row),
        )

    # -- after_flush_postexec: after images ---------------------------------------------

    def after_flush_postexec(self, session: Session, flush_context: UOWTransaction) -> None:
        record: _FlushRecord | None = flush_context.attributes.pop(self._pending_key, None)
        flush_context.attributes.pop(self._snapshots_key, None)
        if record is None:
            return
        self._fetch_after(session, [*record.inserts, *record.updates])
        changes: list[RowChange] = []
        for pending in record.inserts:
            change = self._insert(pending, record)
            if change is not None:
                changes.append(change)
        updates = [self._update(pending, record) for pending in record.updates]
        changes.extend(
            sorted((c for c in updates if c is not None), key=lambda c: (c.table, c.record_id))
        )
        changes.extend(record.ready)
        if self.config.metadata_hook is not None:
            changes = [self.with_hook_metadata(session, change) for change in changes]
        if self.sink_all is not None:
            self.sink_all(session, changes)
        else:
            for change in changes:
                self.sink(session, change)

    @staticmethod
    def _unchanged_unloaded(pending: _PendingRow, spec: ColumnSpec) -> bool:
        """An update left this unloaded column alone: its before value is its after value."""
        return (
            pending.operation is Operation.UPDATE
            and spec.key in pending.untouched_unloaded
            and spec.key in pending.before
            and not spec.server_updates
            and spec.key != pending.plan.version_key
        )

    def _fetch_after(self, session: Session, rows: list[_PendingRow]) -> None:
        """Read the after values the session does not hold, one SELECT per mapper.

        Server defaults not returned by the INSERT, ``onupdate`` and SQL-expression values
        were expired by the flush; deferred columns may never have been loaded. Reading them
        with the flush's connection does not touch the objects.
        """
        wanted: dict[Mapper[Any], list[tuple[InstanceState[Any], list[str]]]] = defaultdict(list)
        by_state: dict[InstanceState[Any], _PendingRow] = {}
        for row in rows:
            state = row.state
            if state.key is None or row.plan.column_keys.issubset(state.dict):
                continue  # every audited value is loaded: nothing to read
            keys = [
                spec.key
                for spec in row.plan.columns
                if spec.key not in state.dict and not self._unchanged_unloaded(row, spec)
            ]
            if keys:
                wanted[state.mapper].append((state, keys))
                by_state[state] = row
        for mapper, items in wanted.items():
            for state, values in self._prefetch(session, mapper, items).items():
                by_state[state].fetched = values

    def _current(self, pending: _PendingRow, spec: ColumnSpec) -> Any:
        state = pending.state
        if spec.key in state.dict:
            return state.dict[spec.key]
        if self._unchanged_unloaded(pending, spec):
            return pending.before[spec.key]
        if spec.key in pending.fetched:
            return pending.fetched[spec.key]
        if pending.obj is None:
            return _MISSING
        try:
            return getattr(pending.obj, spec.key)
        except (orm_exc.ObjectDeletedError, sa_exc.InvalidRequestError) as exc:
            logger.debug("cannot read %s.%s after flush: %s", pending.plan.table, spec.key, exc)
            return _MISSING

    def _after_image(self, pending: _PendingRow) -> dict[str, Any]:
        loaded = pending.state.dict
        untouched = pending.untouched_unloaded
        seen = pending.state.info.get(_STALE_SEEN) if untouched else None
        after: dict[str, Any] = {}
        for key, _name, _masked, spec in pending.plan.column_rows:
            if key in loaded:  # the common case, without a call
                value = loaded[key]
                if seen and key in untouched and seen.get(key, _MISSING) is value:
                    # stale, and not written by the flush: the database's value is before's
                    value = pending.before.get(key, value)
                after[key] = value
                continue
            value = self._current(pending, spec)
            if value is not _MISSING:
                after[key] = value
        return after

    def _insert(self, pending: _PendingRow, record: _FlushRecord) -> RowChange | None:
        plan = pending.plan
        after = self._after_image(pending)
        if any(key not in after for key in plan.pk_keys):
            logger.warning("insert into %s without a readable primary key: not audited", plan.table)
            return None
        image, keys = self.images.image(plan, after)
        key_values = [after[key] for key in plan.pk_keys]
        context = record.context
        return row_change(
            plan.table,
            Operation.INSERT,
            make_record_id(key_values),
            self._encode_key(plan, key_values, after, keys),
            None,
            image,
            tuple(image),
            record.occurred_at,
            None,
            None,
            _present(plan.masked_names, image),
            context.actor,
            context.request_id,
            context.metadata,
        )

    def _update(self, pending: _PendingRow, record: _FlushRecord) -> RowChange | None:
        plan = pending.plan
        before, after = pending.before, self._after_image(pending)
        changed: list[str] = []
        for key, name, _masked, _spec in plan.column_rows:
            if key in after:
                if key not in before:
                    changed.append(name)
                    continue
                old, new = before[key], after[key]
                if old is not new and not same_value(old, new):
                    changed.append(name)
        old_identity = pending.old_identity
        assert old_identity is not None
        new_identity: Sequence[Any] = [after.get(key, _MISSING) for key in plan.pk_keys]
        if any(value is _MISSING for value in new_identity):
            new_identity = old_identity
        # The identity rarely changes: then one record id serves both.
        same_identity = _same_key_values(old_identity, new_identity)
        old_id = None if same_identity else make_record_id(old_identity)
        new_id = make_record_id(new_identity)
        moved = old_id is not None and old_id != new_id
        if not changed and not moved:
            return None
        # Encoded when first read; an unchanged value shares the before image's encoding.
        encoded_before, old_keys = self.images.image(plan, before)
        encoded_after, new_keys = self.images.image(plan, after, encoded_before)
        new_key = self._encode_key(plan, new_identity, after, new_keys)
        old_key: dict[str, JSONValue] | None = None
        if moved:
            old_key = self._encode_key(plan, old_identity, before, old_keys)
        masked_names = plan.masked_names
        shown_masked = (
            [name for name in masked_names if name in encoded_before or name in encoded_after]
            if masked_names
            else []
        )
        context = record.context
        return row_change(
            plan.table,
            Operation.UPDATE,
            new_id,
            new_key,
            encoded_before,
            encoded_after,
            tuple(changed),
            record.occurred_at,
            old_id if moved else None,
            old_key,
            tuple(shown_masked),
            context.actor,
            context.request_id,
            context.metadata,
        )

    # -- common ------------------------------------------------------------------------

    def _row_change(self, record: _FlushRecord, **fields: Any) -> RowChange:
        context = record.context
        return RowChange(
            occurred_at=record.occurred_at,
            actor=context.actor,
            request_id=context.request_id,
            metadata=context.metadata,
            **fields,
        )

    def with_hook_metadata(self, session: Session, change: RowChange) -> RowChange:
        """``change`` with the metadata hook's output merged in (a failing hook is reported)."""
        hook = self.config.metadata_hook
        if hook is None:
            return change
        try:
            extra = hook(session, change)
            if not extra:
                return change
            encoded = encode_mapping(extra, fallback="repr")
        except Exception as exc:
            logger.exception("audit metadata_hook failed for %s %s", change.table, change.record_id)
            self.report(exc)
            return change
        return replace(change, metadata=MappingProxyType({**change.metadata, **encoded}))


__all__ = [
    "PREFETCH_CHUNK",
    "STALE_KEYS",
    "Capturer",
    "ChangeSink",
    "ChangesSink",
    "ErrorReporter",
    "Planner",
    "RowChange",
    "has_changes",
    "same_value",
]
