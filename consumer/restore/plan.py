"""A restore plan: what it changes (:class:`RecordRestore`, :class:`ColumnRestore`) and how it
is applied (:meth:`RestorePlan.apply` checks every record again, then writes each through its
step inside :func:`~sqla_audit.audit_context` metadata naming the restore)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from sqlalchemy.orm import Session

from consumer.records import AuditRecord
from sqla_audit.context import audit_context
from sqla_audit.serialization import JSONValue

#: Metadata key naming what a restore restored (on every change it writes).
RESTORE_METADATA_KEY: Final = "sqla_audit.restore"

Action = Literal["update", "insert", "delete", "none"]


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


def restore_metadata(
    event_id: uuid.UUID | None, at: dt.datetime | None, transaction_id: uuid.UUID | None
) -> dict[str, JSONValue]:
    return {
        "event_id": None if event_id is None else str(event_id),
        "at": None if at is None else at.isoformat(),
        "transaction_id": None if transaction_id is None else str(transaction_id),
    }
