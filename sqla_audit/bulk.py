"""Capture ORM-enabled bulk statements: ``session.execute(update(User).where(...))`` and kin.

ORM-level audit libraries usually see only the unit of work, so an ``UPDATE ... WHERE``
or ``DELETE ... WHERE`` sent through ``Session.execute`` changes rows without leaving a
trace. This module closes that gap with a ``do_orm_execute`` listener that runs around
every ORM-enabled ``insert()``, ``update()`` and ``delete()`` of an audited model:

UPDATE / DELETE with criteria (every ``synchronize_session`` option, legacy
``Query.update()``/``Query.delete()`` included)
    Where the database can return the rows a statement changes, one statement does it all
    (see :mod:`sqla_audit.bulk_forms`): on PostgreSQL an UPDATE becomes ``WITH old AS
    (SELECT ... FOR UPDATE) UPDATE ... FROM old ... RETURNING`` both images, and a DELETE
    on PostgreSQL, MariaDB and SQLite returns the rows it deletes; a condition counting
    the rows up to ``max_bulk_rows + 1`` makes a statement over the cap change nothing,
    and the application's statement then runs unchanged and is reported by a marker.
    Elsewhere (an UPDATE on MariaDB or SQLite, a model of several tables, a statement with
    its own RETURNING) one SELECT first reads the full audited rows matching its WHERE
    clause, built from the same mapped entity (so single-table inheritance criteria and
    joined-inheritance joins apply), with ``FOR UPDATE`` where the dialect has it and a
    ``LIMIT`` of ``max_bulk_rows + 1``; then the statement runs, returning its after images
    on SQLite, and elsewhere the rows are read again by primary key (500 keys per ``IN``
    list). Either way ``onupdate`` values and SQL expressions are exact; rows whose
    audited values did not change produce nothing. For a DELETE after a first read, when
    the driver's row count disagrees with the rows read, the keys are checked again.
UPDATE by primary key with a list of dicts (``session.execute(update(User), [...])``)
    The keys are in the parameters: the rows are read by key before and after.
INSERT (a list of dicts, ``values([...])``, ``values(...)``, ``from_select``)
    The keys are taken from the values when every row names its key; else from the
    driver (``inserted_primary_key`` of a single row); else the statement gets a
    ``RETURNING`` of the key columns where the dialect supports it (PostgreSQL, SQLite 3.35+,
    MariaDB 10.5+); then the rows are read by key, so server defaults are in the after
    images. Upserts (``on_conflict_do_update``, ``on_duplicate_key_update``...) are itemized
    (insert or update per row) when every key is given and the table has no other unique
    constraint; otherwise they are reported by a marker.

Every change goes to the same per-transaction buffer as the flush's changes, so rollback,
savepoints and coalescing with unit-of-work changes of the same row behave identically,
and each carries the actor and request of the current :func:`~sqla_audit.audit_context`.

Markers. Whatever cannot be itemized is never dropped silently: it is logged at ERROR and
reported by one *marker* event on the table (``record_id`` ``"*"``, empty ``primary_key``,
the statement's operation, and a description under ``metadata["sqla_audit.bulk"]``:
``reason``, ``rows``, ``itemized``, ``max_bulk_rows``, ``statement`` -- the SQL text with
placeholders, never bound values). Reasons: ``max_bulk_rows`` (more rows than the cap),
``unmatched_rows`` (the statement changed more rows than were read first: a concurrent
insert under READ COMMITTED), ``primary_key_updated`` (an UPDATE assigning a key column:
old and new rows cannot be paired), ``keys_unknown`` (an INSERT whose keys the database
generates, on a dialect without RETURNING or with the application's own RETURNING),
``upsert`` (an upsert that cannot be itemized safely), ``keys_unmatched`` (an INSERT naming
its keys, some of whose rows cannot be read back by the key given).

Keys given in an INSERT's or UPDATE's parameters are converted by their column's type before
they are read (``"07"`` for an Integer key is ``7``, as the database stores it); a row read
back is paired with the key given when equal or equal as text.

Isolation. A statement that returns its rows changes exactly the rows it reports. Where
a first read precedes the statement, both run in the same transaction: on PostgreSQL and
MariaDB the read locks the rows it returns (``FOR UPDATE``), so they cannot change in
between; a row *inserted* concurrently and matching the WHERE is caught by the row count
(``unmatched_rows``). SQLite has no row locks but one writer at a time: a concurrent write
between the read and the statement makes the statement fail ("database is locked"), it does
not change rows unread -- provided the read runs inside the transaction, which pysqlite's
default handling only begins before the DML (use SQLAlchemy's documented SAVEPOINT recipe or
``autocommit=False``).

Not captured: Core statements on a ``Table`` (``update(users_table)``) or ``text()``, through
a Session or a Connection -- write them against the mapped class; the legacy
``bulk_save_objects``/``bulk_insert_mappings``/``bulk_update_mappings``;
``select(...).from_statement(update(...))``; statements answered by another
``do_orm_execute`` listener that returns its own result before this one runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Result
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.sql import dml

from sqla_audit import bulk_forms as forms
from sqla_audit.bulk_images import (
    MAX_STATEMENT_TEXT,
    REASON_KEY_UPDATED,
    REASON_KEYS_UNKNOWN,
    REASON_KEYS_UNMATCHED,
    REASON_MAX_ROWS,
    REASON_UNMATCHED,
    REASON_UPSERT,
    Job,
    RowImages,
)
from sqla_audit.bulk_insert import InsertCapture
from sqla_audit.bulk_keys import Key, Raw, keys_of, sort_key
from sqla_audit.capture import STALE_KEYS, Capturer, ChangesSink
from sqla_audit.config import ColumnSpec, ModelPlan
from sqla_audit.context import current_context
from sqla_audit.events import Operation, utcnow


class Call:
    """One intercepted statement: runs it and remembers what it returned.

    The listener's caller needs to know whether the statement already ran when capture
    fails, so that it neither runs it twice nor loses its result. A statement runs once;
    only a rewritten form that changed nothing (over ``max_bulk_rows``) is followed by the
    application's statement itself (:meth:`invoke_instead`).
    """

    __slots__ = ("failed", "invoked", "result", "state")

    def __init__(self, state: ORMExecuteState) -> None:
        self.state = state
        self.result: Result[Any] | None = None
        self.invoked = False
        self.failed = False

    def invoke(self, statement: Any = None) -> Result[Any]:
        """Run the statement (or a variant of it) once; its exceptions are the caller's."""
        if self.invoked:  # pragma: no cover -- a programming error in this module
            raise RuntimeError("the statement was already executed")
        self.invoked = True
        try:
            self.result = self.state.invoke_statement(statement=statement)
        except BaseException:
            self.failed = True
            raise
        return self.result

    def invoke_instead(self, synchronize: str | bool) -> Result[Any]:
        """Run the application's statement after a rewritten form of it changed nothing,
        with the ``synchronize_session`` the first run left to do."""
        options = {"synchronize_session": synchronize}
        statement = self.state.statement.execution_options(**options)
        try:
            self.result = self.state.invoke_statement(
                statement=statement, execution_options=options
            )
        except BaseException:
            self.failed = True
            raise
        return self.result


class BulkCapturer:
    """The body of the ``do_orm_execute`` listener; a statement's changes go to ``sink``
    (the buffer) together, in order."""

    def __init__(self, capturer: Capturer, sink: ChangesSink) -> None:
        self.capturer = capturer
        self.planner = capturer.planner
        self.sink = sink
        self.max_rows = capturer.config.max_bulk_rows
        self.images = RowImages(capturer)
        self.inserts = InsertCapture(self.images, self._marker, self.max_rows)

    # -- entry points ----------------------------------------------------------------------

    def plan_for(self, state: ORMExecuteState) -> ModelPlan | None:
        """The plan of the audited model this statement writes, or ``None`` to pass it by."""
        if not state.is_orm_statement:
            return None
        statement = state.statement
        if not isinstance(statement, dml.Insert | dml.Update | dml.Delete):
            return None  # SELECT, or select().from_statement(<DML>)
        mapper = state.bind_mapper
        if mapper is None:
            return None
        plan = self.planner.model(mapper)
        return plan if plan.enabled else None

    def capture(self, call: Call, plan: ModelPlan) -> Result[Any]:
        """Run the statement through ``call`` and record what it changed."""
        state = call.state
        session = state.session
        if state.execution_options.get("autoflush", True):
            # The statement would autoflush when invoked, after the first read: flush now
            # so that read sees the session's pending rows.
            session._autoflush()
        statement: Any = state.statement
        if isinstance(statement, dml.Insert):
            operation = Operation.INSERT
        elif isinstance(statement, dml.Update):
            operation = Operation.UPDATE
        else:
            operation = Operation.DELETE
        job = Job(
            session=session,
            connection=session.connection(bind_arguments=dict(state.bind_arguments)),
            plan=plan,
            operation=operation,
            statement=statement,
            params=state.parameters,
            occurred_at=utcnow(),
            context=current_context(),
        )
        if operation is Operation.INSERT:
            result = self.inserts.run(job, call)
        elif state.is_executemany:
            # UPDATE by primary key; SQLAlchemy refuses a DELETE with parameter lists.
            update = operation is Operation.UPDATE
            result = self._update_by_keys(job, call) if update else call.invoke()
        else:
            result = self._where(job, call)
        if job.updated and (
            state.is_executemany
            or state.execution_options.get("synchronize_session", "auto") in (False, None)
        ):
            self._mark_stale(job)
        changes = job.changes
        if self.capturer.config.metadata_hook is not None:
            changes = [self.capturer.with_hook_metadata(session, change) for change in changes]
        self.sink(session, changes)
        return result

    @staticmethod
    def _mark_stale(job: Job) -> None:
        """Note, on the session's loaded objects of the rows an unsynchronized UPDATE changed,
        which attributes now hold stale values: their next flush reads them from the database.
        """
        mapper, identity_map = job.plan.mapper, job.session.identity_map
        for key, attributes in job.updated:
            obj = identity_map.get(mapper.identity_key_from_primary_key(key))
            if obj is not None:
                sa.inspect(obj).info.setdefault(STALE_KEYS, set()).update(attributes)

    def _marker(
        self,
        job: Job,
        *,
        reason: str,
        rows: int | None,
        itemized: int = 0,
        columns: Iterable[str] = (),
    ) -> None:
        self.images.marker(
            job,
            reason=reason,
            rows=rows,
            max_rows=self.max_rows,
            itemized=itemized,
            columns=columns,
        )

    # -- UPDATE / DELETE with criteria -------------------------------------------------------

    def _assigned(self, job: Job) -> list[ColumnSpec]:
        """The audited columns an UPDATE's SET clause names (keys resolved to specs)."""
        statement = job.statement
        values: dict[Any, Any] = dict(getattr(statement, "_values", None) or {})
        values.update(getattr(statement, "_ordered_values", None) or ())
        if isinstance(job.params, list):
            for row in job.params:
                values.update(dict.fromkeys(row))
        return self._resolve(job.plan, values)

    @staticmethod
    def _resolve(plan: ModelPlan, names: Iterable[Any]) -> list[ColumnSpec]:
        """The specs of value keys given as attribute names, column names or Columns."""
        by_name: dict[str, ColumnSpec] = {}
        for spec in plan.columns:
            for column in plan.mapper.attrs[spec.key].columns:
                if isinstance(column, sa.Column):
                    by_name.setdefault(column.key, spec)
                    by_name.setdefault(column.name, spec)
            by_name[spec.key] = spec
        found: dict[str, ColumnSpec] = {}
        for name in names:
            key = name if isinstance(name, str) else getattr(name, "key", None)
            hit = by_name.get(key) if isinstance(key, str) else None
            if hit is not None:
                found[hit.key] = hit
        return list(found.values())

    def _read_where(self, job: Job) -> tuple[dict[Key, Raw], bool]:
        """The first read: rows the WHERE matches (locked), and whether the cap was exceeded."""
        return self.images.read_where(job, self.max_rows)

    def _where(self, job: Job, call: Call) -> Result[Any]:
        plan = job.plan
        assigned = self._assigned(job) if job.operation is Operation.UPDATE else []
        names = [spec.name for spec in assigned]
        key_names = {spec.key for spec in plan.primary_key}
        if any(spec.key in key_names for spec in assigned):
            result = call.invoke()
            self._marker(
                job,
                reason=REASON_KEY_UPDATED,
                rows=forms.rowcount(result, job.connection),
                columns=names,
            )
            return result
        if job.operation is Operation.UPDATE and forms.updates_in_one(job):
            return self._in_one(job, call, names)
        if job.operation is Operation.DELETE and forms.deletes_in_one(job):
            return self._in_one(job, call, names)
        before, exceeded = self._read_where(job)
        if exceeded:
            result = call.invoke()
            self._marker(
                job,
                reason=REASON_MAX_ROWS,
                rows=forms.rowcount(result, job.connection),
                columns=names,
            )
            return result
        returned: dict[Key, Raw] | None = None
        if job.operation is Operation.UPDATE and forms.returns_after(job):
            shape = self.images.shape(plan)
            rows, result = forms.rows_and_result(
                call.invoke(forms.update_returning_after(job, shape)),
                forms.returned_labels(shape, forms.NEW),
            )
            call.result = result
            returned = dict(self.images.unpack(shape, rows))
        else:
            result = call.invoke()
        count = forms.rowcount(result, job.connection)
        keys = sorted(before, key=sort_key)
        if job.operation is Operation.UPDATE:
            after = self._read_keys(job, keys) if returned is None else returned
            self.images.updated_pairs(
                job, [(before[key], after[key]) for key in keys if key in after]
            )
        else:
            gone = keys
            if count != len(keys):
                still = self._read_keys(job, keys)
                gone = [key for key in keys if key not in still]
            for key in gone:
                self.images.inserted(job, before[key], Operation.DELETE)
        if count is not None and count > len(before) and self._one_table(plan, assigned):
            self._marker(
                job,
                reason=REASON_UNMATCHED,
                rows=count,
                itemized=len(job.changes),
                columns=names,
            )
        return result

    def _read_keys(self, job: Job, keys: list[Key]) -> dict[Key, Raw]:
        return self.images.read_keys(job, keys, lock=False)

    def _in_one(self, job: Job, call: Call, names: list[str]) -> Result[Any]:
        """Change the rows and read their images in one statement (:mod:`.bulk_forms`)."""
        shape = self.images.shape(job.plan)
        update = job.operation is Operation.UPDATE
        rewritten = (
            forms.update_in_one(job, shape, self.max_rows)
            if update
            else forms.delete_in_one(job, shape, self.max_rows)
        )
        returned = call.invoke(rewritten)
        labels = forms.returned_labels(shape, forms.OLD, forms.NEW) if update else None
        rows, result = forms.rows_and_result(
            returned, labels or forms.returned_labels(shape, forms.OLD)
        )
        call.result = result
        if not rows and self.max_rows is not None:
            # Nothing matched, or more than the cap did and the statement changed nothing:
            # the application's statement tells which.
            result = call.invoke_instead(forms.rerun_synchronize(returned))
            count = forms.rowcount(result, job.connection)
            if count:
                reason = REASON_MAX_ROWS if count > self.max_rows else REASON_UNMATCHED
                self._marker(job, reason=reason, rows=count, columns=names)
            return result
        if update:
            self.images.updated_rows(job, self.images.in_key_order(rows, shape.positions))
        else:
            self.images.deleted_rows(job, rows)
        return result

    @staticmethod
    def _one_table(plan: ModelPlan, assigned: Iterable[ColumnSpec]) -> bool:
        """The statement writes one table, so the driver's row count is comparable.

        (A MariaDB multi-table UPDATE of a joined-inheritance class counts rows per table.)
        """
        tables = {
            column.table
            for spec in assigned
            for column in plan.mapper.attrs[spec.key].columns
            if isinstance(column, sa.Column)
        }
        return len(tables) <= 1

    # -- UPDATE by primary key (a list of parameter dicts) -----------------------------------

    def _update_by_keys(self, job: Job, call: Call) -> Result[Any]:
        names = [spec.name for spec in self._assigned(job)]
        keys = keys_of(job.plan, job.params)
        if keys is None:
            return call.invoke()  # SQLAlchemy refuses a row without its key
        if self.max_rows is not None and len(keys) > self.max_rows:
            result = call.invoke()
            self._marker(job, reason=REASON_MAX_ROWS, rows=len(keys), columns=names)
            return result
        before = self.images.read_keys(job, keys, lock=True)
        result = call.invoke()
        after = self._read_keys(job, list(before))
        self.images.updated_pairs(
            job, [(before[key], after[key]) for key in sorted(before, key=sort_key) if key in after]
        )
        count = forms.rowcount(result, job.connection)
        if (
            count is not None
            and count > len(before)
            and job.connection.dialect.supports_sane_multi_rowcount
        ):
            self._marker(
                job, reason=REASON_UNMATCHED, rows=count, itemized=len(job.changes), columns=names
            )
        return result


__all__ = [
    "MAX_STATEMENT_TEXT",
    "REASON_KEYS_UNKNOWN",
    "REASON_KEYS_UNMATCHED",
    "REASON_KEY_UPDATED",
    "REASON_MAX_ROWS",
    "REASON_UNMATCHED",
    "REASON_UPSERT",
    "BulkCapturer",
    "Call",
]
