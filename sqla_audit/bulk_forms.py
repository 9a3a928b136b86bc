"""Per-dialect statement forms that capture a bulk UPDATE or DELETE in the statement itself.

Where the database can return the rows a statement changes, the statement is rewritten
so that one round trip both changes the rows and returns their images:

PostgreSQL UPDATE
    ``WITH old AS (SELECT <audited columns> FROM t WHERE <criteria> LIMIT <cap + 1> FOR
    UPDATE OF t) UPDATE t SET ... FROM old WHERE <criteria> AND t.pk = old.pk AND (SELECT
    count(*) FROM old) <= <cap> RETURNING old.<columns>, t.<columns>``: the locked read,
    the change and both images in one statement.
DELETE on PostgreSQL, MariaDB (10.0+) and SQLite (3.35+)
    ``DELETE FROM t WHERE <criteria> AND (SELECT count(*) FROM (SELECT t.pk FROM t WHERE
    <criteria> LIMIT <cap + 1>)) <= <cap> RETURNING <columns>``: a deleted row's values
    are its before image.
UPDATE on SQLite (3.35+)
    The first read stays (SQLite's RETURNING cannot name the ``FROM`` of an UPDATE); the
    UPDATE returns its after images instead of a keyed read after it.

The cap condition (present when ``max_bulk_rows`` is set) makes a statement over the cap
change nothing; the capture then runs the application's statement unchanged and reports
it by a marker. The conditions the capture adds are invisible to the ORM's Python
evaluator (``synchronize_session="evaluate"`` and ``"auto"`` judge the application's own
criteria, as without auditing), and the application's result keeps the statement's row
count (pysqlite reports none for DML with RETURNING: it is set from the rows returned).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Result
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from sqla_audit.bulk_images import Job, Shape

#: Name of the common table expression holding the old rows (PostgreSQL UPDATE).
OLD_ROWS: Final = "sqla_audit_old"
#: Name of the subquery counting the rows a statement matches, up to the cap.
CAPPED: Final = "sqla_audit_capped"
#: Label prefixes of the returned columns: the old (before) and new (after) images.
OLD: Final = "sqla_audit_old_"
NEW: Final = "sqla_audit_new_"


class AddedCondition(ColumnElement[bool]):
    """A condition added to the application's statement: SQL for the database, true for
    the ORM's Python evaluator (``__visit_name__`` ``true``), which judges only the
    application's own criteria."""

    __visit_name__ = "true"
    inherit_cache = True
    _traverse_internals = [("element", InternalTraversal.dp_clauseelement)]
    type = sa.Boolean()

    def __init__(self, element: ColumnElement[bool]) -> None:
        self.element = element

    def self_group(self, against: Any = None) -> ColumnElement[Any]:
        return self  # already a self-contained condition; never wrapped in AsBoolean

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.element._from_objects)


@compiles(AddedCondition)
def _compile_added(element: AddedCondition, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.element, **kw)


def _one_table(job: Job) -> bool:
    return len(job.plan.mapper.tables) == 1 and not job.statement._returning


def updates_in_one(job: Job) -> bool:
    """The UPDATE can lock, change and return both images in one statement (PostgreSQL)."""
    dialect = job.connection.dialect
    return (
        dialect.name == "postgresql"
        and bool(dialect.update_returning)
        and bool(dialect.update_returning_multifrom)
        and _one_table(job)
    )


def returns_after(job: Job) -> bool:
    """The UPDATE can return its after images (SQLite 3.35+; PostgreSQL has the CTE form)."""
    dialect = job.connection.dialect
    return dialect.name == "sqlite" and bool(dialect.update_returning) and _one_table(job)


def deletes_in_one(job: Job) -> bool:
    """The DELETE can return the rows it deletes (PostgreSQL, MariaDB 10.0+, SQLite 3.35+).

    Outside PostgreSQL only when its criteria name the model's table alone (MariaDB has no
    RETURNING for a multiple-table DELETE).
    """
    dialect = job.connection.dialect
    if not dialect.delete_returning or not _one_table(job):
        return False
    if dialect.name == "postgresql":
        return True
    where = job.statement.whereclause
    own = set(job.plan.mapper.tables)
    return where is None or all(table in own for table in where._from_objects)


def _matched(shape: Shape, where: Any, max_rows: int) -> Any:
    """``SELECT count(*)`` of the rows ``where`` matches, counting no further than the cap."""
    inner = sa.select(*shape.key_columns).correlate(None).limit(max_rows + 1)
    if where is not None:
        inner = inner.where(where)
    return sa.select(sa.func.count()).select_from(inner.subquery(CAPPED)).scalar_subquery()


def update_in_one(job: Job, shape: Shape, max_rows: int | None) -> Any:
    """The UPDATE with its locked first read as a CTE, returning old then new columns."""
    statement, where = job.statement, job.statement.whereclause
    read = sa.select(*shape.columns)
    if where is not None:
        read = read.where(where)
    read = read.with_for_update(of=shape.tables)
    if max_rows is not None:
        read = read.limit(max_rows + 1)
    old = read.cte(OLD_ROWS)
    old_columns = list(old.c)
    condition = sa.and_(
        *(
            column == old_columns[i]
            for column, i in zip(shape.key_columns, shape.positions, strict=True)
        )
    )
    if max_rows is not None:
        count = sa.select(sa.func.count()).select_from(old).scalar_subquery()
        condition = sa.and_(condition, count <= max_rows)
    returned = [*_labelled(old_columns, OLD), *_labelled(shape.columns, NEW)]
    return statement.where(AddedCondition(condition)).returning(*returned)


def delete_in_one(job: Job, shape: Shape, max_rows: int | None) -> Any:
    """The DELETE returning the audited columns of the rows it deletes."""
    statement = job.statement
    if max_rows is not None:
        counted = _matched(shape, statement.whereclause, max_rows)
        statement = statement.where(AddedCondition(counted <= max_rows))
    return statement.returning(*_labelled(shape.columns, OLD))


def update_returning_after(job: Job, shape: Shape) -> Any:
    """The UPDATE returning the audited columns of the rows it changed."""
    return job.statement.returning(*_labelled(shape.columns, NEW))


def _labelled(columns: Sequence[Any], prefix: str) -> list[Any]:
    return [column.label(f"{prefix}{i}") for i, column in enumerate(columns)]


def returned_labels(shape: Shape, *prefixes: str) -> list[str]:
    """The labels of the columns a rewritten statement returns (``OLD``, ``NEW``)."""
    return [f"{prefix}{i}" for prefix in prefixes for i in range(len(shape.columns))]


def rows_and_result(
    returned: Result[Any], labels: Sequence[str]
) -> tuple[list[tuple[Any, ...]], Result[Any]]:
    """The rows of a statement the capture added RETURNING to (the ``labels`` columns, as
    tuples), and the result to hand the application: the driver's result, its rows read,
    its row count that of the rows.

    The rows are read from the driver's result, not through the ORM's (the ORM adds its
    own columns for ``synchronize_session="fetch"``, and would build ORM rows).
    """
    raw = getattr(returned, "raw", None)
    if not isinstance(raw, CursorResult):
        return [tuple(row._mapping[label] for label in labels) for row in returned], returned
    if raw.context.execution_options.get("prebuffer_rows"):
        # AsyncSession: the ORM's result already holds the rows the driver returned.
        held = [tuple(row._mapping[label] for label in labels) for row in returned]
        _count_rows(raw, held)
        return held, raw
    keys = list(raw.keys())
    positions = [keys.index(label) for label in labels]
    if len(positions) == 1:
        (position,) = positions
        rows: list[tuple[Any, ...]] = [(row[position],) for row in raw.fetchall()]
    else:
        getter = itemgetter(*positions)
        rows = [getter(row) for row in raw.fetchall()]
    _count_rows(raw, rows)
    return rows, raw


def _count_rows(raw: CursorResult[Any], rows: Sequence[Any]) -> None:
    """Give the driver's result the count of the rows it returned where the driver gives
    none (pysqlite and aiosqlite for DML with RETURNING)."""
    context = raw.context
    dialect: Any = context.dialect
    if not dialect.supports_sane_rowcount_returning or raw.rowcount < 0:
        context._rowcount = len(rows)


def rerun_synchronize(returned: Result[Any]) -> str | bool:
    """The ``synchronize_session`` to run the application's statement with after its
    rewritten form changed nothing (over the cap): ``False`` when the ORM already
    synchronized the session from its Python evaluation of the criteria, which it did
    whatever the database matched; ``"fetch"`` when it synchronizes from the rows the
    statement returns."""
    raw = getattr(returned, "raw", returned)
    options = getattr(getattr(raw, "context", None), "execution_options", {})
    update_options = options.get("_sa_orm_update_options")
    done = getattr(update_options, "_synchronize_session", False)
    return "fetch" if done == "fetch" else False


def rowcount(result: Result[Any], connection: Connection) -> int | None:
    """The driver's count of rows the statement matched, when it can be trusted (also
    under the ORM's result of a statement with the application's own RETURNING)."""
    dialect: Any = connection.dialect
    if not isinstance(result, CursorResult):
        result = getattr(result, "raw", None)  # type: ignore[assignment]
        if not isinstance(result, CursorResult) or not dialect.supports_sane_rowcount_returning:
            return None
    if not dialect.supports_sane_rowcount:
        return None
    count = result.rowcount
    return count if isinstance(count, int) and count >= 0 else None


def closed_result() -> Result[Any]:
    """What ``session.execute()`` returns for a bulk INSERT without RETURNING: no rows."""
    result: IteratorResult[Any] = IteratorResult(SimpleResultMetaData([]), iter(()))
    result._soft_close(hard=True)
    return result


__all__ = [
    "NEW",
    "OLD",
    "OLD_ROWS",
    "AddedCondition",
    "closed_result",
    "delete_in_one",
    "deletes_in_one",
    "rerun_synchronize",
    "returned_labels",
    "returns_after",
    "rowcount",
    "rows_and_result",
    "update_in_one",
    "update_returning_after",
    "updates_in_one",
]
