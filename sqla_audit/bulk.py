"""Capture ORM-enabled bulk statements: ``session.execute(update(User).where(...))`` and kin.

ORM-level audit libraries usually see only the unit of work, so an ``UPDATE ... WHERE``
or ``DELETE ... WHERE`` sent through ``Session.execute`` changes rows without leaving a
trace. This module closes that gap with a ``do_orm_execute`` listener that runs around
every ORM-enabled ``insert()``, ``update()`` and ``delete()`` of an audited model:

UPDATE / DELETE with criteria (every ``synchronize_session`` option, legacy
``Query.update()``/``Query.delete()`` included)
    Before the statement runs, one SELECT reads the full audited rows matching its WHERE
    clause, built from the same mapped entity (so single-table inheritance criteria and
    joined-inheritance joins apply), with ``FOR UPDATE`` where the dialect has it and a
    ``LIMIT`` of ``max_bulk_rows + 1``. The statement itself runs unchanged, except that on
    PostgreSQL an UPDATE of a one-table model without its own RETURNING gets a ``RETURNING``
    of the audited columns: its rows are the after images (the caller's result keeps its row
    count and has no rows left). Elsewhere the after images are read by primary key (500
    keys per ``IN`` list). Either way ``onupdate`` values and SQL expressions are exact; rows
    whose audited values did not change produce nothing. For a DELETE the before images
    are the rows read first; when the driver's row count disagrees with them, the keys are
    checked again.
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

Isolation. The first read and the statement run in the same transaction. On PostgreSQL and
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

import datetime as dt
import decimal
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Result
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import dml
from sqlalchemy.sql.elements import BindParameter, ClauseElement

from sqla_audit.capture import PREFETCH_CHUNK, STALE_KEYS, Capturer, ChangeSink, same_value
from sqla_audit.changes import RowChange
from sqla_audit.config import ColumnSpec, ModelPlan
from sqla_audit.context import AuditContext, current_context
from sqla_audit.events import MARKER_METADATA_KEY, MARKER_RECORD_ID, Operation, utcnow
from sqla_audit.serialization import MASKED_VALUE, JSONValue, encode_value

#: Types whose equal values always have the same wire encoding.
_SAME_ENCODING: frozenset[type] = frozenset({str, int, bool, type(None)})

logger = logging.getLogger(__name__)

#: Longest statement text kept in a marker.
MAX_STATEMENT_TEXT: Final = 2000

#: Marker reasons (``metadata["sqla_audit.bulk"]["reason"]``).
REASON_MAX_ROWS: Final = "max_bulk_rows"
REASON_UNMATCHED: Final = "unmatched_rows"
REASON_KEY_UPDATED: Final = "primary_key_updated"
REASON_KEYS_UNKNOWN: Final = "keys_unknown"
REASON_UPSERT: Final = "upsert"
REASON_KEYS_UNMATCHED: Final = "keys_unmatched"

_MISSING: Final[Any] = object()

Key = tuple[Any, ...]
Raw = dict[str, Any]


class Call:
    """One intercepted statement: runs it at most once and remembers what it returned.

    The listener's caller needs to know whether the statement already ran when capture
    fails, so that it neither runs it twice nor loses its result.
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


@dataclass(slots=True)
class _Job:
    """What one bulk statement's capture needs, gathered once."""

    session: Session
    connection: Connection
    plan: ModelPlan
    operation: Operation
    statement: Any
    params: Any
    occurred_at: dt.datetime
    context: AuditContext
    changes: list[RowChange] = field(default_factory=list)
    #: (key, attribute keys) of each row an UPDATE changed
    updated: list[tuple[Key, list[str]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Shape:
    """The SELECT list of a model's audited columns and how to unpack its rows."""

    columns: list[Any]
    key_columns: list[Any]
    keys: tuple[str, ...]
    positions: tuple[int, ...]
    #: what ``FOR UPDATE OF`` locks (PostgreSQL): the model's own tables, not joined ones
    tables: list[Any]


def _chunks(items: Sequence[Key]) -> Iterator[Sequence[Key]]:
    for start in range(0, len(items), PREFETCH_CHUNK):
        yield items[start : start + PREFETCH_CHUNK]


def _plain_value(value: Any) -> Any:
    """The Python value of a parameter, or ``_MISSING`` when the database computes it."""
    if isinstance(value, BindParameter):
        if value.callable is None and value.value is None:
            return _MISSING
        return value.effective_value
    if isinstance(value, ClauseElement) or value is None:
        return _MISSING
    return value


def _coerce_key_value(value: Any, column: sa.Column[Any]) -> Any:
    """``value`` as the column's type stores it: ``"07"``, ``" 8"``, ``"9.0"`` -> ``7, 8, 9``.

    Keys given in a statement's parameters are matched with the keys read back, and read
    with binds of the column's type (PostgreSQL refuses ``integer = varchar``). A value
    that is already of the type, or that cannot be converted, is returned unchanged.
    """
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    if value is None or isinstance(value, (python_type, bool)):
        return value
    try:
        if python_type is int:
            number = decimal.Decimal(value.strip() if isinstance(value, str) else value)
            if number.is_finite() and number == number.to_integral_value():
                return int(number)
            return value
        if python_type is decimal.Decimal and isinstance(value, str | int | float):
            return decimal.Decimal(value.strip() if isinstance(value, str) else repr(value))
        if python_type is str and isinstance(value, int | decimal.Decimal | uuid.UUID):
            return str(value)
        if python_type is uuid.UUID and isinstance(value, str):
            return uuid.UUID(value)
        if python_type in (dt.date, dt.datetime) and isinstance(value, str):
            return python_type.fromisoformat(value)
    except (ValueError, TypeError, ArithmeticError):
        return value
    return value


def _rowcount(result: Result[Any], connection: Connection) -> int | None:
    """The driver's count of rows the statement matched, when it can be trusted."""
    if not isinstance(result, CursorResult) or not connection.dialect.supports_sane_rowcount:
        return None
    count = result.rowcount
    return count if isinstance(count, int) and count >= 0 else None


def _closed_result() -> Result[Any]:
    """What ``session.execute()`` returns for a bulk INSERT without RETURNING: no rows."""
    result: IteratorResult[Any] = IteratorResult(SimpleResultMetaData([]), iter(()))
    result._soft_close(hard=True)
    return result


class BulkCapturer:
    """The body of the ``do_orm_execute`` listener; changes go to ``sink`` (the buffer)."""

    def __init__(self, capturer: Capturer, sink: ChangeSink) -> None:
        self.capturer = capturer
        self.planner = capturer.planner
        self.sink = sink
        self.max_rows = capturer.config.max_bulk_rows
        self._shapes: dict[Any, _Shape] = {}

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
        job = _Job(
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
            result = self._insert(job, call)
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
        for change in job.changes:
            self.sink(session, self.capturer.with_hook_metadata(session, change))
        return result

    @staticmethod
    def _mark_stale(job: _Job) -> None:
        """Note, on the session's loaded objects of the rows an unsynchronized UPDATE changed,
        which attributes now hold stale values: their next flush reads them from the database.
        """
        mapper, identity_map = job.plan.mapper, job.session.identity_map
        for key, attributes in job.updated:
            obj = identity_map.get(mapper.identity_key_from_primary_key(key))
            if obj is not None:
                sa.inspect(obj).info.setdefault(STALE_KEYS, set()).update(attributes)

    # -- reading rows ----------------------------------------------------------------------

    def _shape(self, plan: ModelPlan) -> _Shape:
        """How rows of ``plan`` are selected and unpacked (computed once per mapper)."""
        shape = self._shapes.get(plan.mapper)
        if shape is None:
            attrs = plan.mapper.attrs
            specs = plan.columns
            shape = _Shape(
                columns=[attrs[spec.key].class_attribute for spec in specs],
                key_columns=[attrs[spec.key].class_attribute for spec in plan.primary_key],
                keys=tuple(spec.key for spec in specs),
                tables=list(plan.mapper.tables),
                positions=tuple(
                    next(i for i, spec in enumerate(specs) if spec is key)
                    for key in plan.primary_key
                ),
            )
            self._shapes[plan.mapper] = shape
        return shape

    def _read(self, job: _Job, stmt: Any, params: Any = None) -> list[tuple[Key, Raw]]:
        shape = self._shape(job.plan)
        return self._unpack(shape, job.connection.execute(stmt, params))

    @staticmethod
    def _unpack(shape: _Shape, rows: Iterable[Sequence[Any]]) -> list[tuple[Key, Raw]]:
        """(primary key, attribute key -> value) of each row of the shape's column list."""
        keys, positions = shape.keys, shape.positions
        if len(positions) == 1:
            (position,) = positions
            return [((row[position],), dict(zip(keys, row, strict=True))) for row in rows]
        return [
            (tuple([row[i] for i in positions]), dict(zip(keys, row, strict=True))) for row in rows
        ]

    def _read_where(self, job: _Job) -> tuple[dict[Key, Raw], bool]:
        """The rows the statement's WHERE matches (locked), and whether the cap was exceeded."""
        stmt = sa.select(*self._shape(job.plan).columns)
        where = job.statement.whereclause
        if where is not None:
            stmt = stmt.where(where)
        stmt = stmt.with_for_update(of=self._shape(job.plan).tables)
        if self.max_rows is not None:
            stmt = stmt.limit(self.max_rows + 1)
        rows = self._read(job, stmt, job.params)
        exceeded = self.max_rows is not None and len(rows) > self.max_rows
        return dict(rows), exceeded

    def _read_keys(self, job: _Job, keys: Sequence[Key], *, lock: bool) -> dict[Key, Raw]:
        """The rows with these primary keys (the keys of the rows found, as the DB gives them)."""
        shape = self._shape(job.plan)
        key_attrs = shape.key_columns
        found: dict[Key, Raw] = {}
        for chunk in _chunks(keys):
            if len(key_attrs) == 1:
                where = key_attrs[0].in_([key[0] for key in chunk])
            else:
                where = sa.tuple_(*key_attrs).in_(list(chunk))
            stmt = sa.select(*shape.columns).where(where)
            if lock:
                stmt = stmt.with_for_update(of=shape.tables)
            found.update(self._read(job, stmt))
        return found

    # -- building changes --------------------------------------------------------------------

    def _change(self, job: _Job, **fields: Any) -> RowChange:
        context = job.context
        fields.setdefault("metadata", context.metadata)
        return RowChange(
            table=job.plan.table,
            occurred_at=job.occurred_at,
            actor=context.actor,
            request_id=context.request_id,
            **fields,
        )

    def _masked(self, plan: ModelPlan, *rows: Mapping[str, JSONValue]) -> tuple[str, ...]:
        return tuple(name for name in plan.masked_names if any(name in row for row in rows))

    def _inserted(self, job: _Job, raw: Raw, operation: Operation = Operation.INSERT) -> None:
        plan = job.plan
        record_id, primary_key = self.capturer.record_key(
            plan, [raw[spec.key] for spec in plan.primary_key]
        )
        encoded = self.capturer.encode_row(plan, raw)
        insert = operation is Operation.INSERT
        job.changes.append(
            self._change(
                job,
                operation=operation,
                record_id=record_id,
                primary_key=primary_key,
                before=None if insert else encoded,
                after=encoded if insert else None,
                changed_columns=tuple(encoded),
                masked_columns=self._masked(plan, encoded),
            )
        )

    def _updated(self, job: _Job, before: Raw, after: Raw) -> None:
        plan = job.plan
        changed_specs = [
            spec for spec in plan.columns if not same_value(before[spec.key], after[spec.key])
        ]
        if not changed_specs:
            return
        changed = [spec.name for spec in changed_specs]
        job.updated.append(
            (tuple(after[spec.key] for spec in plan.primary_key), [s.key for s in changed_specs])
        )
        fallback = self.capturer.config.unknown_types
        encoded_before: dict[str, JSONValue] = {}
        encoded_after: dict[str, JSONValue] = {}
        for spec in plan.columns:
            name = spec.name
            if spec.masked:
                encoded_before[name] = dict(MASKED_VALUE)
                encoded_after[name] = dict(MASKED_VALUE)
                continue
            old, new = before[spec.key], after[spec.key]
            encoded_before[name] = encoded = encode_value(old, fallback=fallback)
            # Reuse the before encoding only where equal values always encode alike:
            # Decimal("1.0") == Decimal("1.00") and 0.0 == -0.0 do not.
            if old is not new and not (
                type(old) is type(new) and type(old) in _SAME_ENCODING and old == new
            ):
                encoded = encode_value(new, fallback=fallback)
            encoded_after[name] = encoded
        record_id, primary_key = self.capturer.record_key(
            plan, [after[spec.key] for spec in plan.primary_key]
        )
        job.changes.append(
            self._change(
                job,
                operation=Operation.UPDATE,
                record_id=record_id,
                primary_key=primary_key,
                before=encoded_before,
                after=encoded_after,
                changed_columns=tuple(changed),
                masked_columns=plan.masked_names,
            )
        )

    def _marker(
        self,
        job: _Job,
        *,
        reason: str,
        rows: int | None,
        itemized: int = 0,
        columns: Iterable[str] = (),
    ) -> None:
        """Report rows the statement changed that are not itemized: log and marker event."""
        text = self._statement_text(job)
        logger.error(
            "sqla-audit: bulk %s on %s changed %s row(s), %d itemized (%s): one marker event "
            "stands for the rest; statement: %s",
            job.operation.value,
            job.plan.table,
            "an unknown number of" if rows is None else rows,
            itemized,
            reason,
            text,
        )
        description: dict[str, JSONValue] = {
            "reason": reason,
            "operation": job.operation.value,
            "rows": rows,
            "itemized": itemized,
            "max_bulk_rows": self.max_rows,
            "statement": text,
        }
        operation = job.operation
        job.changes.append(
            self._change(
                job,
                operation=operation,
                record_id=MARKER_RECORD_ID,
                primary_key={},
                before=None if operation is Operation.INSERT else {},
                after=None if operation is Operation.DELETE else {},
                changed_columns=tuple(dict.fromkeys(columns)),
                metadata=MappingProxyType(
                    {**job.context.metadata, MARKER_METADATA_KEY: description}
                ),
            )
        )

    @staticmethod
    def _statement_text(job: _Job) -> str:
        # The ORM's execution annotations (bulk strategy...) compile only inside an
        # execution; the plain statement gives the same SQL text.
        try:
            text = str(job.statement._deannotate().compile(dialect=job.connection.dialect))
        except Exception:  # noqa: BLE001 -- a description must never fail the capture
            text = f"<{type(job.statement).__name__} on {job.plan.table}>"
        text = " ".join(text.split())
        if len(text) > MAX_STATEMENT_TEXT:
            text = text[: MAX_STATEMENT_TEXT - 3] + "..."
        return text

    # -- UPDATE / DELETE with criteria -------------------------------------------------------

    def _assigned(self, job: _Job) -> list[ColumnSpec]:
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

    def _where(self, job: _Job, call: Call) -> Result[Any]:
        plan = job.plan
        assigned = self._assigned(job) if job.operation is Operation.UPDATE else []
        names = [spec.name for spec in assigned]
        key_names = {spec.key for spec in plan.primary_key}
        if any(spec.key in key_names for spec in assigned):
            result = call.invoke()
            self._marker(
                job,
                reason=REASON_KEY_UPDATED,
                rows=_rowcount(result, job.connection),
                columns=names,
            )
            return result
        before, exceeded = self._read_where(job)
        if exceeded:
            result = call.invoke()
            self._marker(
                job, reason=REASON_MAX_ROWS, rows=_rowcount(result, job.connection), columns=names
            )
            return result
        returned: dict[Key, Raw] | None = None
        if job.operation is Operation.UPDATE and self._returns_after(job):
            result, returned = self._update_returning(job, call)
        else:
            result = call.invoke()
        count = _rowcount(result, job.connection)
        keys = sorted(before, key=self._sort_key)
        if job.operation is Operation.UPDATE:
            after = self._read_keys(job, keys, lock=False) if returned is None else returned
            for key in keys:
                if key in after:
                    self._updated(job, before[key], after[key])
        else:
            gone = keys
            if count != len(keys):
                still = self._read_keys(job, keys, lock=False)
                gone = [key for key in keys if key not in still]
            for key in gone:
                self._inserted(job, before[key], Operation.DELETE)
        if count is not None and count > len(before) and self._one_table(plan, assigned):
            self._marker(
                job,
                reason=REASON_UNMATCHED,
                rows=count,
                itemized=len(job.changes),
                columns=names,
            )
        return result

    @staticmethod
    def _returns_after(job: _Job) -> bool:
        """The UPDATE can return its after images itself (``UPDATE ... RETURNING``).

        PostgreSQL only (its drivers count the rows of an UPDATE with RETURNING; pysqlite
        does not), on a model of one table, when the application asked for no RETURNING.
        """
        dialect = job.connection.dialect
        return (
            dialect.name == "postgresql"
            and bool(dialect.update_returning)
            and not job.statement._returning
            and len(job.plan.mapper.tables) == 1
        )

    def _update_returning(self, job: _Job, call: Call) -> tuple[Result[Any], dict[Key, Raw]]:
        """Run the UPDATE with RETURNING of the audited columns: the after images, and the
        driver's result for the caller (its row count intact, its rows already read).
        """
        shape = self._shape(job.plan)
        returned = call.invoke(job.statement.returning(*shape.columns))
        after = dict(self._unpack(shape, returned))
        raw = getattr(returned, "raw", None)
        user: Result[Any] = raw if isinstance(raw, CursorResult) else returned
        call.result = user
        return user, after

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

    @staticmethod
    def _sort_key(key: Key) -> tuple[Any, ...]:
        return tuple((value is None, str(type(value)), value) for value in key)

    # -- UPDATE by primary key (a list of parameter dicts) -----------------------------------

    def _keys_of(self, plan: ModelPlan, rows: Iterable[Mapping[Any, Any]]) -> list[Key] | None:
        """The primary key of every row, from its values; ``None`` if any is not given."""
        lookups: list[list[str]] = []
        for spec in plan.primary_key:
            names = [spec.key]
            for column in plan.mapper.attrs[spec.key].columns:
                if isinstance(column, sa.Column):
                    names += [column.key, column.name]
            lookups.append(names)
        columns = [spec.column for spec in plan.primary_key]
        keys: list[Key] = []
        for row in rows:
            by_name = {
                (name if isinstance(name, str) else getattr(name, "key", None)): value
                for name, value in row.items()
            }
            key = []
            for names in lookups:
                value = _MISSING
                for name in names:
                    if name in by_name:
                        value = _plain_value(by_name[name])
                        break
                if value is _MISSING:
                    return None
                key.append(value)
            keys.append(tuple(_coerce_key_value(v, c) for v, c in zip(key, columns, strict=True)))
        return list(dict.fromkeys(keys))

    def _update_by_keys(self, job: _Job, call: Call) -> Result[Any]:
        names = [spec.name for spec in self._assigned(job)]
        keys = self._keys_of(job.plan, job.params)
        if keys is None:
            return call.invoke()  # SQLAlchemy refuses a row without its key
        if self.max_rows is not None and len(keys) > self.max_rows:
            result = call.invoke()
            self._marker(job, reason=REASON_MAX_ROWS, rows=len(keys), columns=names)
            return result
        before = self._read_keys(job, keys, lock=True)
        result = call.invoke()
        after = self._read_keys(job, list(before), lock=False)
        for key in sorted(before, key=self._sort_key):
            if key in after:
                self._updated(job, before[key], after[key])
        count = _rowcount(result, job.connection)
        if (
            count is not None
            and count > len(before)
            and job.connection.dialect.supports_sane_multi_rowcount
        ):
            self._marker(
                job, reason=REASON_UNMATCHED, rows=count, itemized=len(job.changes), columns=names
            )
        return result

    # -- INSERT ------------------------------------------------------------------------------

    @staticmethod
    def _insert_rows(job: _Job) -> list[Mapping[Any, Any]] | None:
        """The values of each row an INSERT writes, or ``None`` (INSERT ... SELECT)."""
        statement = job.statement
        if statement.select is not None:
            return None
        if isinstance(job.params, list):
            return list(job.params)
        if statement._multi_values:
            rows: list[Mapping[Any, Any]] = []
            columns = list(statement.table.c)
            for row in statement._multi_values[0]:
                rows.append(
                    row if isinstance(row, Mapping) else dict(zip(columns, row, strict=False))
                )
            return rows
        values: dict[Any, Any] = dict(statement._values or {})
        if isinstance(job.params, Mapping):
            values.update(job.params)
        return [values]

    @staticmethod
    def _upsert_itemizable(plan: ModelPlan) -> bool:
        """An upsert can touch only the rows it names when the key is the only unique key."""
        for table in plan.mapper.tables:
            if not isinstance(table, sa.Table):
                return False
            if any(isinstance(c, sa.UniqueConstraint) for c in table.constraints):
                return False
            if any(index.unique for index in table.indexes):
                return False
        return True

    @staticmethod
    def _keys_from_returning(plan: ModelPlan, frozen: Any) -> list[Key] | None:
        """The keys in the rows of the application's RETURNING (columns or entities)."""
        names = list(frozen.metadata.keys)
        positions: list[int | None] = []
        for spec in plan.primary_key:
            wanted = {spec.key, spec.name, spec.column.key}
            positions.append(next((i for i, name in enumerate(names) if name in wanted), None))
        keys: list[Key] = []
        for item in frozen.data:
            row = (item,) if isinstance(item, plan.mapper.class_) else item
            if all(position is not None for position in positions):
                keys.append(tuple(row[position] for position in positions if position is not None))
                continue
            entity = next((value for value in row if isinstance(value, plan.mapper.class_)), None)
            identity = None if entity is None else sa.inspect(entity).identity
            if identity is None:
                return None
            keys.append(tuple(identity))
        return list(dict.fromkeys(keys))

    @staticmethod
    def _can_return_keys(job: _Job) -> bool:
        dialect = job.connection.dialect
        if job.params:  # the ORM's bulk strategy (executemany)
            if len(job.plan.mapper.tables) > 1:
                return bool(
                    getattr(dialect, "insert_executemany_returning_sort_by_parameter_order", False)
                )
            return bool(dialect.insert_executemany_returning)
        return bool(dialect.insert_returning)

    def _insert(self, job: _Job, call: Call) -> Result[Any]:
        statement = job.statement
        rows = self._insert_rows(job)
        count = None if rows is None else len(rows)
        if count is not None and self.max_rows is not None and count > self.max_rows:
            result = call.invoke()
            self._marker(job, reason=REASON_MAX_ROWS, rows=count)
            return result
        keys = None if rows is None else self._keys_of(job.plan, rows)
        if statement._post_values_clause is not None:
            return self._upsert(job, call, keys, count)
        if keys is not None:
            result = call.invoke()
        elif statement._returning:
            # The application's own RETURNING: read the keys from its rows when they are
            # there, and hand it an identical result built from the rows read.
            frozen = call.invoke().freeze()
            result = call.result = frozen()
            keys = self._keys_from_returning(job.plan, frozen)
        elif count == 1 and not job.params:
            result = call.invoke()
            if isinstance(result, CursorResult):
                generated = result.inserted_primary_key
                if generated is not None and all(value is not None for value in generated):
                    keys = [tuple(generated)]
        elif self._can_return_keys(job):
            result, keys = self._insert_returning_keys(job, call)
        else:
            result = call.invoke()
        if keys is None:
            rows_done = count if count is not None else _rowcount(result, job.connection)
            self._marker(job, reason=REASON_KEYS_UNKNOWN, rows=rows_done)
            return result
        if self.max_rows is not None and len(keys) > self.max_rows:
            self._marker(job, reason=REASON_MAX_ROWS, rows=len(keys))
            return result
        after = self._read_keys(job, keys, lock=False)
        matched, missing = self._match_keys(keys, after)
        for found in matched:
            self._inserted(job, after[found])
        if missing:
            self._marker(
                job, reason=REASON_KEYS_UNMATCHED, rows=count or len(keys), itemized=len(matched)
            )
        return result

    @staticmethod
    def _match_keys(keys: Sequence[Key], found: Mapping[Key, Raw]) -> tuple[list[Key], int]:
        """The keys of ``found`` in the order of the given ``keys``, and how many are missing.

        A given key matches the database's key when equal (after type coercion) or equal as
        text (``"7"``, a str UUID); rows read by key but matched to none still belong to the
        statement (the database found them by its own comparison) and come last, in key
        order; the count of given keys no row stands for is what is left unitemized.
        """
        matched: dict[Key, None] = {}
        by_text: dict[tuple[str, ...], Key] | None = None
        for key in keys:
            if key in found:
                matched[key] = None
                continue
            if by_text is None:
                by_text = {tuple(str(v) for v in candidate): candidate for candidate in found}
            candidate = by_text.get(tuple(str(v) for v in key))
            if candidate is not None:
                matched[candidate] = None
        extra = sorted((key for key in found if key not in matched), key=BulkCapturer._sort_key)
        return [*matched, *extra], max(len(keys) - len(found), 0)

    def _insert_returning_keys(self, job: _Job, call: Call) -> tuple[Result[Any], list[Key]]:
        """Run the INSERT with RETURNING of its key columns; give the caller a keyless result."""
        key_attrs = self._shape(job.plan).key_columns
        multi_table = len(job.plan.mapper.tables) > 1
        returned = call.invoke(
            job.statement.returning(*key_attrs, sort_by_parameter_order=multi_table)
        )
        keys = [tuple(row) for row in returned]
        raw = getattr(returned, "raw", None)
        user: Result[Any] = raw if isinstance(raw, CursorResult) else _closed_result()
        if job.params:  # the bulk strategy returns no cursor result without RETURNING
            user = _closed_result()
        call.result = user
        return user, list(dict.fromkeys(keys))

    def _upsert(
        self, job: _Job, call: Call, keys: list[Key] | None, count: int | None
    ) -> Result[Any]:
        if keys is None or not self._upsert_itemizable(job.plan):
            result = call.invoke()
            self._marker(job, reason=REASON_UPSERT, rows=count or _rowcount(result, job.connection))
            return result
        before = self._read_keys(job, keys, lock=True)
        result = call.invoke()
        after = self._read_keys(job, keys, lock=False)
        matched, missing = self._match_keys(keys, after)
        for found in matched:
            raw = after[found]
            previous = before.get(found)
            if previous is None:
                self._inserted(job, raw)
            else:
                self._updated(job, previous, raw)
        if missing:
            self._marker(job, reason=REASON_KEYS_UNMATCHED, rows=count, itemized=len(job.changes))
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
