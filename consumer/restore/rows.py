"""One row of a mapped class: compared with the state it is restored to, then read again,
locked and written by primary key when the plan is applied."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, Session

from consumer.restore.errors import StaleRecord, UnrestorableColumns
from consumer.restore.plan import Action, ColumnRestore, RecordRestore
from sqla_audit.config import ModelPlan
from sqla_audit.install import Installation
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


def pk_from_row(plan: ModelPlan, row: Mapping[str, JSONValue]) -> tuple[Any, ...]:
    return tuple(decode_value(row[spec.name]) for spec in plan.primary_key)


def build_row_restore(
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
