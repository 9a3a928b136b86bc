"""Capture of ORM-enabled bulk INSERT statements (plain and upserts).

The keys are taken from the values when every row names its key; else from the driver
(``inserted_primary_key`` of a single row); else the statement gets a ``RETURNING`` of the
key columns where the dialect supports it (PostgreSQL, SQLite 3.35+, MariaDB 10.5+); then
the rows are read by key, so server defaults are in the after images. Upserts are
itemized (insert or update per row) when every key is given and the table has no other
unique constraint; otherwise they are reported by a marker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult, Result

from sqla_audit import bulk_forms as forms
from sqla_audit.bulk_images import (
    REASON_KEYS_UNKNOWN,
    REASON_KEYS_UNMATCHED,
    REASON_MAX_ROWS,
    REASON_UPSERT,
    Job,
    RowImages,
)
from sqla_audit.bulk_keys import Key, keys_of, match_keys
from sqla_audit.config import ModelPlan


class Invoker(Protocol):
    """Runs the intercepted statement once (:class:`sqla_audit.bulk.Call`)."""

    result: Result[Any] | None

    def invoke(self, statement: Any = None) -> Result[Any]:
        """Run the statement, or a variant of it; remember and return its result."""


class InsertCapture:
    """Runs one bulk INSERT and records the rows it wrote on the job."""

    def __init__(self, images: RowImages, marker: Callable[..., None], max_rows: int | None):
        self.images = images
        self.marker = marker
        self.max_rows = max_rows

    @staticmethod
    def _insert_rows(job: Job) -> list[Mapping[Any, Any]] | None:
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
    def _can_return_keys(job: Job) -> bool:
        dialect = job.connection.dialect
        if job.params:  # the ORM's bulk strategy (executemany)
            if len(job.plan.mapper.tables) > 1:
                return bool(
                    getattr(dialect, "insert_executemany_returning_sort_by_parameter_order", False)
                )
            return bool(dialect.insert_executemany_returning)
        return bool(dialect.insert_returning)

    def run(self, job: Job, call: Invoker) -> Result[Any]:
        statement = job.statement
        rows = self._insert_rows(job)
        count = None if rows is None else len(rows)
        if count is not None and self.max_rows is not None and count > self.max_rows:
            result = call.invoke()
            self.marker(job, reason=REASON_MAX_ROWS, rows=count)
            return result
        keys = None if rows is None else keys_of(job.plan, rows)
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
            rows_done = count if count is not None else forms.rowcount(result, job.connection)
            self.marker(job, reason=REASON_KEYS_UNKNOWN, rows=rows_done)
            return result
        if self.max_rows is not None and len(keys) > self.max_rows:
            self.marker(job, reason=REASON_MAX_ROWS, rows=len(keys))
            return result
        after = self.images.read_keys(job, keys, lock=False)
        matched, missing = match_keys(keys, after)
        for found in matched:
            self.images.inserted(job, after[found])
        if missing:
            self.marker(
                job, reason=REASON_KEYS_UNMATCHED, rows=count or len(keys), itemized=len(matched)
            )
        return result

    def _insert_returning_keys(self, job: Job, call: Invoker) -> tuple[Result[Any], list[Key]]:
        """Run the INSERT with RETURNING of its key columns; give the caller a keyless result."""
        key_attrs = self.images.shape(job.plan).key_columns
        multi_table = len(job.plan.mapper.tables) > 1
        returned = call.invoke(
            job.statement.returning(*key_attrs, sort_by_parameter_order=multi_table)
        )
        keys = [tuple(row) for row in returned]
        raw = getattr(returned, "raw", None)
        user: Result[Any] = raw if isinstance(raw, CursorResult) else forms.closed_result()
        if job.params:  # the bulk strategy returns no cursor result without RETURNING
            user = forms.closed_result()
        call.result = user
        return user, list(dict.fromkeys(keys))

    def _upsert(
        self, job: Job, call: Invoker, keys: list[Key] | None, count: int | None
    ) -> Result[Any]:
        if keys is None or not self._upsert_itemizable(job.plan):
            result = call.invoke()
            self.marker(
                job, reason=REASON_UPSERT, rows=count or forms.rowcount(result, job.connection)
            )
            return result
        before = self.images.read_keys(job, keys, lock=True)
        result = call.invoke()
        after = self.images.read_keys(job, keys, lock=False)
        matched, missing = match_keys(keys, after)
        for found in matched:
            raw = after[found]
            previous = before.get(found)
            if previous is None:
                self.images.inserted(job, raw)
            else:
                self.images.updated(job, previous, raw)
        if missing:
            self.marker(job, reason=REASON_KEYS_UNMATCHED, rows=count, itemized=len(job.changes))
        return result


__all__ = ["InsertCapture", "Invoker"]
