"""One row of a many-to-many association table: restored by adding the link to, or removing
it from, the collection of the relationship that writes it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, RelationshipProperty, Session

from consumer.restore.errors import NotAudited, StaleRecord
from consumer.restore.plan import Action, ColumnRestore, RecordRestore
from sqla_audit.config import AssociationPlan, plan_association
from sqla_audit.install import Installation
from sqla_audit.serialization import JSONValue, decode_value


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


def build_link_restore(
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


def relationship_of(attribute: Any) -> RelationshipProperty[Any]:
    prop = getattr(attribute, "property", attribute)
    if not isinstance(prop, RelationshipProperty) or prop.secondary is None:
        raise NotAudited(f"{attribute!r} is not a many-to-many relationship")
    return prop
