"""Planning the restore of one record from the audit log: :func:`plan_restore` (a row of a
mapped class) and :func:`plan_link_restore` (a row of an association table)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, Session

from consumer.query import AuditQuery, change_order
from consumer.records import AuditRecord
from consumer.restore.errors import NotAudited, RecordMoved, UnknownState
from consumer.restore.links import build_link_restore, relationship_of
from consumer.restore.plan import RestorePlan, restore_metadata
from consumer.restore.rows import build_row_restore, pk_from_row
from sqla_audit.config import ModelPlan, plan_association
from sqla_audit.events import Operation, make_record_id
from sqla_audit.install import Installation, installation_for_session
from sqla_audit.serialization import encode_value


def audited_installation(session: Session) -> Installation:
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
    installation = audited_installation(session)
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
        pk = pk_from_row(plan, rows[0])
    else:
        pk = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    wire_expected = None
    if expected is not None:
        by_key = {spec.key: spec.name for spec in plan.columns}
        wire_expected = {
            by_key.get(name, name): encode_value(value, fallback="repr")
            for name, value in expected.items()
        }
    record = build_row_restore(
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
        metadata=restore_metadata(None if event is None else event.event_id, at, None),
    )


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
    installation = audited_installation(session)
    prop = relationship_of(relationship)
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
    record = build_link_restore(
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
        metadata=restore_metadata(None if event is None else event.event_id, at, None),
    )
