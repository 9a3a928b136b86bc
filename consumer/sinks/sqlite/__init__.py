"""The embedded audit store: one SQLite file, no server.

For demos, small deployments and tests that want persistence without Cassandra. It keeps
the same records with the same semantics as the Cassandra store (idempotent by
``event_id``, newest first by ``(event time ms, event_id)``, exact ``since``/``until``,
keyset page tokens) in one table with three indexes that play the role of Cassandra's
three tables. The file runs in WAL mode so readers (the query side) do not block the
writer; writes from several threads share one connection behind a lock.

Writes are idempotent by ``event_id`` and content: inside one ``BEGIN IMMEDIATE``
transaction the store reads which of the batch's event ids are already stored, compares
their content (:func:`~consumer.sinks.base.content_digest`), inserts the new records with
``INSERT OR IGNORE`` and refuses a conflicting duplicate with
:class:`~consumer.sinks.base.RecordConflict` -- the stored record is never replaced. The
write lock taken by ``BEGIN IMMEDIATE`` makes the read and the inserts one step for every
process sharing the file.

Errors are classified: a problem of one record (a value SQLite cannot bind, an integer
outside 64 bits, text that is not valid Unicode, a constraint, "string or blob too big")
is :class:`~consumer.sinks.base.RecordRejected`; only the database itself failing (locked
past the timeout, disk I/O, cannot open, disk full) is a retryable
:class:`~sqla_audit.errors.StoreError`.

The one table holds departure records too (a row's key changed, see
:mod:`consumer.records`); ``by_actor``, ``by_transaction`` and the ordered views leave them
out, as the Cassandra store does by not writing them to its companion tables.

Layout versions. The file records its layout in ``PRAGMA user_version``: 2 for this
version (a record is identified by ``(service, table, record_id)``; indexes for the request,
trace and table views). A layout-1 file (``user_version`` 0 with an ``audit_records``
table, written by earlier versions) already has the ``service`` column, so opening it
upgrades it in place: the new indexes are built (one pass over the table, under SQLite's
write lock) and ``user_version`` set to 2. A file with a newer layout is refused with a
:class:`~sqla_audit.errors.ConfigurationError` asking to upgrade sqla-audit.

Views. The secondary views (:data:`~consumer.sinks.base.VIEWS`) are indexes here; the
chosen set is recorded in the ``audit_settings`` table. A store opened with ``views`` (the
consumer's ``--views``) records that set and builds its indexes; one opened without (a
reader) uses the recorded set. Reading a view that is not enabled raises
:class:`~consumer.sinks.base.ViewDisabled`. A disabled view's index is left in place if it
exists (dropping it is ``DROP INDEX``).

The package follows the data flow:

* :mod:`~consumer.sinks.sqlite.schema` -- the table, its indexes and settings, a record as a
  row of parameters;
* :mod:`~consumer.sinks.sqlite.layout` -- the file's layout checked, created or upgraded;
* :mod:`~consumer.sinks.sqlite.writes` -- idempotent writes, conflicts, error classification;
* :mod:`~consumer.sinks.sqlite.reads` -- history, the views, the seals;
* :mod:`~consumer.sinks.sqlite.store` -- :class:`SQLiteStore`, which ties them together.
"""

from __future__ import annotations

from consumer.sinks.sqlite.schema import LAYOUT_VERSION, SCHEMA, VIEW_INDEXES
from consumer.sinks.sqlite.store import SQLiteStore

__all__ = ["LAYOUT_VERSION", "SCHEMA", "VIEW_INDEXES", "SQLiteStore"]
