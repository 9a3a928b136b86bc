"""Factories for change events and audit records, for tests of code built on the consumer.

Real events come from the producer library; tests of a store, a worker or a query need
many small, controllable ones. :func:`make_event` fills every required envelope field with
a sensible default and lets a test override any of them; values are given already
wire-encoded (plain JSON data or tagged values).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from consumer.differ import record_for_event
from consumer.records import AuditRecord
from sqla_audit.events import Actor, ChangeEvent, Operation, new_event_id, utcnow
from sqla_audit.serialization import JSONValue


def make_event(
    *,
    operation: Operation | str = Operation.UPDATE,
    table: str = "accounts",
    record_id: str = "1",
    before: Mapping[str, JSONValue] | None = None,
    after: Mapping[str, JSONValue] | None = None,
    actor: str | Actor | None = "alice",
    committed_at: dt.datetime | None = None,
    occurred_at: dt.datetime | None = None,
    transaction_id: uuid.UUID | None = None,
    sequence: int = 0,
    event_id: uuid.UUID | None = None,
    **overrides: Any,
) -> ChangeEvent:
    """A valid :class:`ChangeEvent`; rows default to a small account row.

    For an update without explicit rows, ``balance`` goes from 10 to 20. ``before`` is
    dropped for inserts and ``after`` for deletes unless given.
    """
    op = Operation(operation)
    row: dict[str, JSONValue] = {"id": record_id, "owner": "alice", "balance": 10}
    if op is Operation.INSERT:
        after = dict(row) if after is None else after
    elif op is Operation.DELETE:
        before = dict(row) if before is None else before
    else:
        before = dict(row) if before is None else before
        after = {**row, "balance": 20} if after is None else after
    committed = committed_at or utcnow()
    changed = sorted(
        name
        for name in set(before or {}) | set(after or {})
        if (before or {}).get(name) != (after or {}).get(name)
    )
    fields: dict[str, Any] = {
        "event_id": event_id or new_event_id(),
        "occurred_at": occurred_at or committed,
        "committed_at": committed,
        "service": "billing",
        "table": table,
        "record_id": record_id,
        "primary_key": {"id": record_id},
        "operation": op,
        "before": before,
        "after": after,
        "changed_columns": changed,
        "transaction_id": transaction_id or uuid.uuid4(),
        "sequence": sequence,
        "actor": Actor(actor) if isinstance(actor, str) else actor,
        "request_id": "req-1",
    }
    fields.update(overrides)
    return ChangeEvent(**fields)


def make_record(**kwargs: Any) -> AuditRecord:
    """The record the differ makes for ``make_event(**kwargs)`` (which must change something)."""
    record = record_for_event(make_event(**kwargs))
    if record is None:
        raise ValueError("the event changes nothing, so it has no record")
    return record


__all__ = ["make_event", "make_record"]
