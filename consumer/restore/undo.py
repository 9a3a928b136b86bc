"""Planning the undo of one transaction: every change it made, reversed, newest first."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, RelationshipProperty, Session
from sqlalchemy.orm import registry as orm_registry

from consumer.query import AuditQuery, change_order
from consumer.records import AuditRecord
from consumer.restore.errors import NotAudited, RecordMoved, UnknownState
from consumer.restore.links import build_link_restore
from consumer.restore.plan import RecordRestore, RestorePlan, restore_metadata
from consumer.restore.planning import audited_installation
from consumer.restore.rows import build_row_restore, pk_from_row
from sqla_audit.config import ModelPlan
from sqla_audit.events import Operation
from sqla_audit.install import Installation


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
    installation = audited_installation(session)
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
                build_link_restore(
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
            build_row_restore(
                session,
                installation,
                plan,
                record_id=record.record_id,
                pk=pk_from_row(plan, row),
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
        metadata=restore_metadata(None, None, records[0].transaction_id),
        skipped=tuple(skipped),
    )
