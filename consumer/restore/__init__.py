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

The package follows the data flow:

* :mod:`~consumer.restore.planning` -- :func:`plan_restore` and :func:`plan_link_restore`:
  the state to restore to, read from the audit log;
* :mod:`~consumer.restore.undo` -- :func:`plan_undo_transaction`: a transaction's changes,
  reversed;
* :mod:`~consumer.restore.rows` and :mod:`~consumer.restore.links` -- one row of a mapped
  class, one row of an association table: compared with the database at planning, checked
  again and written at apply time;
* :mod:`~consumer.restore.plan` -- :class:`RestorePlan` and what it holds, and its
  :meth:`~RestorePlan.apply`;
* :mod:`~consumer.restore.errors` -- the reasons a restore is refused.
"""

from __future__ import annotations

from consumer.restore.errors import (
    NotAudited,
    RecordMoved,
    RestoreError,
    StaleRecord,
    UnknownState,
    UnrestorableColumns,
)
from consumer.restore.plan import (
    RESTORE_METADATA_KEY,
    Action,
    ColumnRestore,
    RecordRestore,
    RestorePlan,
)
from consumer.restore.planning import plan_link_restore, plan_restore
from consumer.restore.undo import plan_undo_transaction

__all__ = [
    "RESTORE_METADATA_KEY",
    "Action",
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
