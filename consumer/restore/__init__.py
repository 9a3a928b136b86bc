"""Put records back the way the audit log says they were -- through the application's session.

Restoring needs two things: the audit trail (what the row looked like at a point, read with
:class:`~consumer.query.AuditQuery` over any :class:`~consumer.sinks.base.AuditStore`) and the
application's own audited :class:`~sqlalchemy.orm.Session` (so the restore is written by the
ORM and audited like any other change, with the actor of the current
:func:`~sqla_audit.audit_context`). It lives on the consumer side because the producer library
never imports the consumer; an application that restores installs the ``consumer`` extra.

Every function returns a :class:`RestorePlan` first -- a dry run that reads but never writes:

* :func:`plan_restore` -- one row of a mapped class, to its state at an instant (``at``) or
  right after one event (``event_id``): an update of the columns that differ, a re-insert
  when the row has since been deleted, a delete when it did not exist yet;
* :func:`plan_link_restore` -- one row of a many-to-many association table, through the
  relationship that writes it (the link is added to or removed from the collection);
* :func:`plan_undo_transaction` -- every change of one transaction, undone in reverse order.

:meth:`RestorePlan.apply` then writes the plan in the session's current transaction (it
flushes, the caller commits). It refuses, with a :class:`RestoreError`, when:

* :class:`StaleRecord` -- the row no longer matches what the caller last saw (``expected=``),
  what the plan read (checked again at apply time, under ``SELECT ... FOR UPDATE`` where the
  database has it), or -- when undoing a transaction -- what the transaction left;
* :class:`UnrestorableColumns` -- a masked or excluded column would need restoring (the log
  does not hold those values), or a value was logged only as text (``repr``);
* :class:`RecordMoved` -- the row's primary key changed, so the record lives under another id;
* :class:`UnknownState` -- the log knows nothing to restore to (no such event, no change).

``allow_unrestorable=True`` accepts what cannot be restored: such columns are left as they are
(or at their defaults on a re-insert), a moved record is restored under the id asked for, and a
key change inside an undone transaction is skipped (listed in :attr:`RestorePlan.skipped`).

Every change a plan writes carries ``metadata["sqla_audit.restore"]`` naming what was restored:
``event_id`` (the event whose state was restored), ``at`` (the instant asked for, ISO 8601)
and ``transaction_id`` (the transaction undone), each ``None`` when not applicable.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, RelationshipProperty, Session
from sqlalchemy.orm import registry as orm_registry

from consumer.query import AuditQuery, change_order
from consumer.records import AuditRecord
from sqla_audit.config import AssociationPlan, ModelPlan, plan_association
from sqla_audit.context import audit_context
from sqla_audit.errors import PermanentError
from sqla_audit.events import Operation, make_record_id
from sqla_audit.install import Installation, installation_for_session
from sqla_audit.serialization import (
    MASKED,
    MASKED_VALUE,
    EnumResolver,
    JSONValue,
    TaggedEnum,
    Unserializable,
    decode_value,
    encode_value,
    registry_resolver,
)

#: Metadata key naming what a restore restored (on every change it writes).
RESTORE_METADATA_KEY: Final = "sqla_audit.restore"

Action = Literal["update", "insert", "delete", "none"]


# --------------------------------------------------------------------------- errors


class RestoreError(PermanentError):
    """A restore was refused; nothing was written."""


class NotAudited(RestoreError):
    """The session or the model is not audited, so a restore would leave no trace."""


class UnknownState(RestoreError):
    """The audit log holds nothing to restore to (unknown event, record or transaction)."""


class StaleRecord(RestoreError):
    """The row in the database is not the one the restore was planned against."""

    def __init__(self, table: str, record_id: str, columns: Sequence[str], why: str) -> None:
        self.table = table
        self.record_id = record_id
        self.columns = tuple(columns)
        named = f" (columns: {', '.join(self.columns)})" if self.columns else ""
        super().__init__(f"{table} {record_id!r}: {why}{named}; plan the restore again")


class UnrestorableColumns(RestoreError):
    """Columns whose value at that point is not in the audit log (masked, excluded, repr)."""

    def __init__(self, table: str, record_id: str, columns: Sequence[str]) -> None:
        self.table = table
        self.record_id = record_id
        self.columns = tuple(columns)
        super().__init__(
            f"{table} {record_id!r}: cannot restore {', '.join(self.columns)} (masked, excluded "
            "or logged as text: the audit log does not hold the value); pass "
            "allow_unrestorable=True to leave them as they are"
        )


class RecordMoved(RestoreError):
    """The record's primary key changed: the row lives under another record id."""

    def __init__(self, table: str, record_id: str, moved_to: str | None) -> None:
        self.table = table
        self.record_id = record_id
        self.moved_to = moved_to
        where = f" to {moved_to!r}" if moved_to else ""
        super().__init__(
            f"{table} {record_id!r}: the record's key changed{where}; pass "
            "allow_unrestorable=True to restore it under this id anyway"
        )


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class ColumnRestore:
    """One column a restore changes: its value now and the value it gets back.

    ``None`` on one side for an insert or a delete; masked columns show :data:`MASKED`.
    """

    column: str
    current: Any
    restored: Any


class _Step(Protocol):
    def check(self, session: Session) -> None: ...

    def write(self, session: Session) -> None: ...


@dataclass(frozen=True, slots=True)
class RecordRestore:
    """What a restore does to one record: ``action`` and the column changes."""

    table: str
    record_id: str
    action: Action
    changes: tuple[ColumnRestore, ...]
    #: Columns that would need restoring but cannot be, left as they are (accepted).
    unrestorable: tuple[str, ...] = ()
    #: Excluded columns: not in the log, so never compared nor changed by an update.
    untracked: tuple[str, ...] = ()
    #: The event whose state is restored (``None``: the record did not exist yet).
    event_id: uuid.UUID | None = None
    _step: _Step | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """A dry run: the records a restore changes, in the order it changes them."""

    records: tuple[RecordRestore, ...]
    #: What the restore names in ``metadata["sqla_audit.restore"]``.
    metadata: Mapping[str, JSONValue]
    #: Changes deliberately left alone (key changes in an undone transaction, accepted).
    skipped: tuple[AuditRecord, ...] = ()

    @property
    def changes(self) -> list[tuple[str, str, ColumnRestore]]:
        """Every column change as ``(table, record_id, change)``."""
        return [(r.table, r.record_id, c) for r in self.records for c in r.changes]

    @property
    def empty(self) -> bool:
        """True when applying would write nothing."""
        return all(record.action == "none" for record in self.records)

    def apply(self, session: Session) -> None:
        """Write the plan through ``session`` (flushed, not committed).

        Every record is checked again first (:class:`StaleRecord` if it changed since the
        plan was made); nothing is written unless all pass. Changes are flushed one record
        at a time in plan order, inside :func:`~sqla_audit.audit_context` metadata naming
        the restore, so they are audited with the current actor. Commit to keep them; a
        failure leaves the transaction to be rolled back like any failed flush.
        """
        steps = [record._step for record in self.records if record._step is not None]
        session.flush()
        for step in steps:
            step.check(session)
        names: dict[str, Any] = {RESTORE_METADATA_KEY: dict(self.metadata)}
        with audit_context(**names):
            for step in steps:
                step.write(session)
                session.flush()


# --------------------------------------------------------------------------- helpers


def _installation(session: Session) -> Installation:
    installation = installation_for_session(session)
    if installation is None:
        raise NotAudited(
            "the session is not audited (install_audit on its sessionmaker or Session "
            "class): a restore through it would leave no trace"
        )
    return installation


def _model_plan(installation: Installation, model: type | Mapper[Any]) -> ModelPlan:
    mapper = model if isinstance(model, Mapper) else sa.inspect(model)
    if not isinstance(mapper, Mapper):
        raise NotAudited(f"{model!r} is not a mapped class")
    plan = installation.planner.model(mapper)
    if not plan.enabled:
        raise NotAudited(f"{mapper.class_.__qualname__} is not audited")
    return plan


def _resolver(mapper: Mapper[Any]) -> EnumResolver:
    enums: list[type[enum.Enum]] = []
    for column in mapper.columns:
        enum_class = getattr(column.type, "enum_class", None)
        if isinstance(enum_class, type) and issubclass(enum_class, enum.Enum):
            enums.append(enum_class)
    return registry_resolver(*enums)


def _restorable(value: Any) -> bool:
    return not isinstance(value, (Unserializable, TaggedEnum)) and value is not MASKED


def _excluded(plan: ModelPlan) -> tuple[str, ...]:
    return tuple(
        column.name
        for prop in plan.mapper.column_attrs
        if prop.key not in plan.column_keys
        for column in prop.columns[:1]
        if isinstance(column, sa.Column)
    )


def _record_id(key: object) -> str:
    if isinstance(key, str):
        return key
    values = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    return make_record_id(values)


def _find_event(
    query: AuditQuery, table: str, record_id: str, service: str, event_id: uuid.UUID | str
) -> AuditRecord:
    wanted = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
    for record in query.iter_history(table, record_id, service=service):
        if record.event_id == wanted:
            return record
    raise UnknownState(f"{table} {record_id!r}: no event {wanted} in its history")


def _metadata(
    event_id: uuid.UUID | None, at: dt.datetime | None, transaction_id: uuid.UUID | None
) -> dict[str, JSONValue]:
    return {
        "event_id": None if event_id is None else str(event_id),
        "at": None if at is None else at.isoformat(),
        "transaction_id": None if transaction_id is None else str(transaction_id),
    }


# --------------------------------------------------------------------------- mapped rows


@dataclass(slots=True)
class _RowStep:
    """Reads and writes one row of a mapped class by primary key."""

    plan: ModelPlan
    table: str
    record_id: str
    pk: tuple[Any, ...]
    unknown_types: Any
    #: The row as planned against: column name -> wire value (real values, also masked).
    seen: dict[str, JSONValue] | None = None
    action: Action = "none"
    #: attribute key -> value to set (update, insert)
    values: dict[str, Any] = field(default_factory=dict)

    def read(
        self, session: Session, *, lock: bool = True
    ) -> tuple[Any, dict[str, JSONValue] | None]:
        """The row now (re-read from the database), locked for the write when ``lock``."""
        obj = session.get(self.plan.mapper, self.pk, populate_existing=True, with_for_update=lock)
        if obj is None:
            return None, None
        row = {
            name: encode_value(getattr(obj, key), fallback=self.unknown_types)
            for key, name, _masked, _spec in self.plan.column_rows
        }
        return obj, row

    def check(self, session: Session) -> None:
        _obj, row = self.read(session)
        if (row is None) != (self.seen is None):
            why = "was deleted" if row is None else "was inserted"
            raise StaleRecord(self.table, self.record_id, (), f"the row {why} since the plan")
        if row is not None and self.seen is not None:
            differ = sorted(name for name in row if row[name] != self.seen.get(name))
            if differ:
                raise StaleRecord(self.table, self.record_id, differ, "changed since the plan")

    def write(self, session: Session) -> None:
        if self.action == "none":
            return
        obj, _row = self.read(session)
        if self.action == "delete":
            session.delete(obj)
        elif self.action == "update":
            for key, value in self.values.items():
                setattr(obj, key, value)
        else:
            created = self.plan.mapper.class_()
            for key, value in self.values.items():
                setattr(created, key, value)
            session.add(created)


def _pk_from_row(plan: ModelPlan, row: Mapping[str, JSONValue]) -> tuple[Any, ...]:
    return tuple(decode_value(row[spec.name]) for spec in plan.primary_key)


def _build_row_restore(
    session: Session,
    installation: Installation,
    plan: ModelPlan,
    *,
    record_id: str,
    pk: tuple[Any, ...],
    target: Mapping[str, JSONValue] | None,
    masked_changed: set[str],
    expected: Mapping[str, JSONValue] | None,
    expected_why: str,
    allow_unrestorable: bool,
    event_id: uuid.UUID | None,
    expect_absent: bool = False,
) -> RecordRestore:
    """Compare the row now with ``target`` (wire values, ``None``: absent) and plan it."""
    step = _RowStep(
        plan=plan,
        table=plan.table,
        record_id=record_id,
        pk=pk,
        unknown_types=installation.config.unknown_types,
    )
    _obj, current = step.read(session, lock=False)  # a dry run takes no row locks
    step.seen = current
    if expect_absent and current is not None:
        raise StaleRecord(plan.table, record_id, (), f"the row exists ({expected_why})")
    if expected is not None:
        if current is None:
            raise StaleRecord(plan.table, record_id, (), f"the row is gone ({expected_why})")
        hidden = set(plan.masked_names)
        differ = sorted(
            name
            for name, value in expected.items()
            if name in current and name not in hidden and current[name] != value
        )
        if differ:
            raise StaleRecord(plan.table, record_id, differ, expected_why)
    resolver = _resolver(plan.mapper)
    untracked = _excluded(plan)
    changes: list[ColumnRestore] = []
    unrestorable: list[str] = []
    if target is None:
        if current is not None:
            step.action = "delete"
            for _key, name, masked, _spec in plan.column_rows:
                shown = MASKED if masked else decode_value(current[name], enum_resolver=resolver)
                changes.append(ColumnRestore(name, shown, None))
    else:
        step.action = "insert" if current is None else "update"
        if current is None:
            unrestorable.extend(untracked)
        for key, name, masked, _spec in plan.column_rows:
            wire = target.get(name)
            if masked or wire == MASKED_VALUE:
                if current is None or name in masked_changed:
                    unrestorable.append(name)
                continue
            if current is not None and current.get(name) == wire:
                continue
            value = decode_value(wire, enum_resolver=resolver)
            if not _restorable(value):
                unrestorable.append(name)
                continue
            old = None if current is None else decode_value(current[name], enum_resolver=resolver)
            changes.append(ColumnRestore(name, old, value))
            step.values[key] = value
        if step.action == "update" and not changes:
            step.action = "none"
    if unrestorable and not allow_unrestorable:
        raise UnrestorableColumns(plan.table, record_id, unrestorable)
    return RecordRestore(
        table=plan.table,
        record_id=record_id,
        action=step.action,
        changes=tuple(changes),
        unrestorable=tuple(unrestorable),
        untracked=untracked if step.action == "update" else (),
        event_id=event_id,
        _step=step,
    )


def _masked_changed_after(
    query: AuditQuery, plan: ModelPlan, record_id: str, service: str, after: AuditRecord | None
) -> set[str]:
    """Masked columns changed (or re-created by an insert/delete) after ``after``."""
    masked = set(plan.masked_names)
    if not masked:
        return set()
    found: set[str] = set()
    since = None if after is None else after.event_time
    for record in query.iter_history(plan.table, record_id, service=service, since=since):
        if after is not None and change_order(record) <= change_order(after):
            continue
        if record.operation is not Operation.UPDATE:
            return masked
        found.update(masked & set(record.changes))
    return found


def plan_restore(
    session: Session,
    query: AuditQuery,
    model: type | Mapper[Any],
    key: str | Any,
    *,
    at: dt.datetime | None = None,
    event_id: uuid.UUID | str | None = None,
    expected: Mapping[str, Any] | None = None,
    allow_unrestorable: bool = False,
    service: str | None = None,
) -> RestorePlan:
    """Plan bringing one row of ``model`` back to its state at ``at`` or right after
    ``event_id`` (exactly one of them).

    ``key`` is the record id (as in the audit log) or the primary-key value(s) in key column
    order. ``expected`` -- column name -> value the caller last saw -- is compared with the row
    now (:class:`StaleRecord` on a difference). ``service`` defaults to the service the
    session's audit installation names.
    """
    if (at is None) == (event_id is None):
        raise ValueError("give exactly one of at= or event_id=")
    installation = _installation(session)
    plan = _model_plan(installation, model)
    owner = service or installation.config.service
    record_id = _record_id(key)
    table = plan.table
    if event_id is not None:
        event: AuditRecord | None = _find_event(query, table, record_id, owner, event_id)
    else:
        assert at is not None
        event = query.as_of(table, record_id, at, service=owner).event
    newest = query.history(table, record_id, service=owner, limit=1).items
    if not newest:
        raise UnknownState(f"{table} {record_id!r}: the audit log has no change of it")
    moved = (event.moved_to if event is not None else None) or newest[0].moved_to
    if moved is not None and not allow_unrestorable:
        raise RecordMoved(table, record_id, moved)
    target = None if event is None or event.operation is Operation.DELETE else event.after
    if isinstance(key, str):
        rows = [row for row in (target, newest[0].after, newest[0].before) if row]
        pk = _pk_from_row(plan, rows[0])
    else:
        pk = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    wire_expected = None
    if expected is not None:
        by_key = {spec.key: spec.name for spec in plan.columns}
        wire_expected = {
            by_key.get(name, name): encode_value(value, fallback="repr")
            for name, value in expected.items()
        }
    record = _build_row_restore(
        session,
        installation,
        plan,
        record_id=record_id,
        pk=pk,
        target=target,
        masked_changed=_masked_changed_after(query, plan, record_id, owner, event),
        expected=wire_expected,
        expected_why="the row differs from what was expected",
        allow_unrestorable=allow_unrestorable,
        event_id=None if event is None else event.event_id,
    )
    return RestorePlan(
        records=(record,),
        metadata=_metadata(None if event is None else event.event_id, at, None),
    )


# --------------------------------------------------------------------------- association rows


@dataclass(slots=True)
class _LinkStep:
    """Adds or removes one association row through the relationship that writes it."""

    prop: RelationshipProperty[Any]
    plan: AssociationPlan
    table: str
    record_id: str
    row: dict[str, Any]
    seen: bool = False
    action: Action = "none"

    def exists(self, session: Session) -> bool:
        secondary = self.prop.secondary
        assert isinstance(secondary, sa.Table)
        criteria = [col == self.row[col.name] for col in self.plan.key_columns]
        found = session.execute(sa.select(sa.func.count()).select_from(secondary).where(*criteria))
        return bool(found.scalar_one())

    def check(self, session: Session) -> None:
        if self.exists(session) != self.seen:
            why = "was added" if not self.seen else "was removed"
            raise StaleRecord(self.table, self.record_id, (), f"the link {why} since the plan")

    def _load(self, session: Session, mapper: Mapper[Any], pairs: Any) -> Any:
        criteria = [left == self.row[right.name] for left, right in pairs]
        found = session.execute(sa.select(mapper).where(*criteria)).scalar_one_or_none()
        if found is None:
            raise StaleRecord(self.table, self.record_id, (), "a linked row does not exist")
        return found

    def write(self, session: Session) -> None:
        if self.action == "none":
            return
        parent = self._load(session, self.prop.parent, self.plan.parent_pairs)
        child = self._load(session, self.prop.mapper, self.plan.child_pairs)
        collection = getattr(parent, self.prop.key)
        if self.action == "delete":
            collection.remove(child)
        elif hasattr(collection, "append"):
            collection.append(child)
        else:
            collection.add(child)


def _build_link_restore(
    session: Session,
    installation: Installation,
    prop: RelationshipProperty[Any],
    *,
    record_id: str,
    row: Mapping[str, JSONValue],
    present: bool,
    expected_present: bool | None,
    event_id: uuid.UUID | None,
) -> RecordRestore:
    plan = plan_association(prop, installation.config)
    if plan is None:
        raise NotAudited(f"{prop} does not write an audited association table")
    values = {name: decode_value(value) for name, value in row.items()}
    step = _LinkStep(prop=prop, plan=plan, table=plan.table, record_id=record_id, row=values)
    step.seen = step.exists(session)
    if expected_present is not None and step.seen != expected_present:
        why = "is gone" if expected_present else "exists"
        raise StaleRecord(plan.table, record_id, (), f"the link {why}, unlike what the change left")
    if step.seen != present:
        step.action = "insert" if present else "delete"
    changes = tuple(
        ColumnRestore(name, None if present else value, value if present else None)
        for name, value in values.items()
    )
    return RecordRestore(
        table=plan.table,
        record_id=record_id,
        action=step.action,
        changes=changes if step.action != "none" else (),
        event_id=event_id,
        _step=step,
    )


def _relationship(attribute: Any) -> RelationshipProperty[Any]:
    prop = getattr(attribute, "property", attribute)
    if not isinstance(prop, RelationshipProperty) or prop.secondary is None:
        raise NotAudited(f"{attribute!r} is not a many-to-many relationship")
    return prop


def plan_link_restore(
    session: Session,
    query: AuditQuery,
    relationship: Any,
    key: str | Sequence[Any],
    *,
    at: dt.datetime | None = None,
    event_id: uuid.UUID | str | None = None,
    service: str | None = None,
) -> RestorePlan:
    """Plan bringing one association row of ``relationship`` (e.g. ``Post.tags``) back to
    whether it existed at ``at`` or right after ``event_id``.

    ``key`` is the row's record id or its key values in the association's key column order.
    """
    if (at is None) == (event_id is None):
        raise ValueError("give exactly one of at= or event_id=")
    installation = _installation(session)
    prop = _relationship(relationship)
    plan = plan_association(prop, installation.config)
    if plan is None:
        raise NotAudited(f"{prop} does not write an audited association table")
    owner = service or installation.config.service
    record_id = _record_id(key)
    if event_id is not None:
        event: AuditRecord | None = _find_event(query, plan.table, record_id, owner, event_id)
    else:
        assert at is not None
        event = query.as_of(plan.table, record_id, at, service=owner).event
    newest = query.history(plan.table, record_id, service=owner, limit=1).items
    if not newest:
        raise UnknownState(f"{plan.table} {record_id!r}: the audit log has no change of it")
    row = newest[0].after or newest[0].before
    assert row is not None
    present = event is not None and event.operation is not Operation.DELETE
    record = _build_link_restore(
        session,
        installation,
        prop,
        record_id=record_id,
        row=row,
        present=present,
        expected_present=None,
        event_id=None if event is None else event.event_id,
    )
    return RestorePlan(
        records=(record,),
        metadata=_metadata(None if event is None else event.event_id, at, None),
    )


# --------------------------------------------------------------------------- transactions


def _mappers(models: Iterable[type] | orm_registry | type) -> list[Mapper[Any]]:
    if isinstance(models, orm_registry):
        return list(models.mappers)
    registry = getattr(models, "registry", None)
    if isinstance(models, type) and isinstance(registry, orm_registry):
        return list(registry.mappers)
    assert not isinstance(models, type)
    found: list[Mapper[Any]] = []
    for model in models:
        inspected: Any = sa.inspect(model)
        if isinstance(inspected, Mapper):
            found.append(inspected)
    return found


def _targets(
    installation: Installation, mappers: Sequence[Mapper[Any]]
) -> tuple[dict[str, ModelPlan], dict[str, RelationshipProperty[Any]]]:
    """Audited table name -> model plan (the root mapper of an inheritance first) and
    association table name -> a relationship that writes it."""
    models: dict[str, ModelPlan] = {}
    links: dict[str, RelationshipProperty[Any]] = {}
    for mapper in sorted(mappers, key=lambda m: len(list(m.iterate_to_root()))):
        plan = installation.planner.model(mapper)
        if plan.enabled:
            models.setdefault(plan.table, plan)
        for prop, association in installation.planner.associations(mapper):
            links.setdefault(association.table, prop)
    return models, links


def plan_undo_transaction(
    session: Session,
    query: AuditQuery,
    transaction_id: uuid.UUID | str,
    models: Iterable[type] | orm_registry | type,
    *,
    allow_unrestorable: bool = False,
) -> RestorePlan:
    """Plan undoing every change of one transaction, newest first: inserted rows are
    deleted, deleted rows re-inserted, updated rows put back to their ``before`` image.

    ``models`` names the mapped classes the transaction may touch (a declarative base or a
    registry covers them all). Each row must still be as the transaction left it
    (:class:`StaleRecord` otherwise); all rows pass or nothing is planned.
    """
    installation = _installation(session)
    records = sorted(query.by_transaction(transaction_id), key=change_order, reverse=True)
    if not records:
        raise UnknownState(f"no change of transaction {transaction_id} in the audit log")
    models_by_table, links = _targets(installation, _mappers(models))
    planned: list[RecordRestore] = []
    skipped: list[AuditRecord] = []
    for record in records:
        if record.previous_record_id is not None or record.is_departure:
            if not allow_unrestorable:
                raise RecordMoved(record.table, record.record_id, record.record_id)
            skipped.append(record)
            continue
        row = record.after or record.before
        if record.record_id == "*" or row is None:
            raise UnknownState(
                f"{record.table}: change {record.event_id} was not itemized; it cannot be undone"
            )
        if record.table in links:
            planned.append(
                _build_link_restore(
                    session,
                    installation,
                    links[record.table],
                    record_id=record.record_id,
                    row=row,
                    present=record.operation is Operation.DELETE,
                    expected_present=record.operation is not Operation.DELETE,
                    event_id=record.event_id,
                )
            )
            continue
        plan = models_by_table.get(record.table)
        if plan is None:
            raise NotAudited(f"no audited model among those given writes {record.table}")
        masked_changed = set(plan.masked_names) & set(record.changes)
        if record.operation is not Operation.UPDATE:
            masked_changed = set(plan.masked_names)
        planned.append(
            _build_row_restore(
                session,
                installation,
                plan,
                record_id=record.record_id,
                pk=_pk_from_row(plan, row),
                target=record.before if record.operation is not Operation.INSERT else None,
                masked_changed=masked_changed,
                expected=record.after,
                expected_why="changed after the transaction",
                allow_unrestorable=allow_unrestorable,
                event_id=record.event_id,
                expect_absent=record.operation is Operation.DELETE,
            )
        )
    return RestorePlan(
        records=tuple(planned),
        metadata=_metadata(None, None, records[0].transaction_id),
        skipped=tuple(skipped),
    )


__all__ = [
    "RESTORE_METADATA_KEY",
    "ColumnRestore",
    "NotAudited",
    "RecordMoved",
    "RecordRestore",
    "RestoreError",
    "RestorePlan",
    "StaleRecord",
    "UnknownState",
    "UnrestorableColumns",
    "plan_link_restore",
    "plan_restore",
    "plan_undo_transaction",
]
