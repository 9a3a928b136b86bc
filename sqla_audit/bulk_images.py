"""Row images of bulk statements: reading the audited rows, and turning them into changes.

A :class:`Shape` is the SELECT (or RETURNING) list of a model's audited columns in plan
order; rows come back as tuples in that order. :class:`RowImages` reads them (the first
read of a WHERE clause, reads by key) and builds the :class:`~sqla_audit.changes.RowChange`
of each row in bulk: an UPDATE's old and new tuples are compared as tuples first (one C
comparison for a row that did not change), and the images are
:class:`~sqla_audit.lazy_images.LazyImage` objects: the values of a column whose encoding
may wait are encoded where the events are built (off the application's thread in SNS
mode), the others -- the key columns, JSON values, enums, unknown types -- column by
column inside the statement.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from sqla_audit.bulk_keys import Key, Raw, chunks, sort_key
from sqla_audit.capture import Capturer, same_value
from sqla_audit.changes import RowChange, row_change
from sqla_audit.config import ModelPlan
from sqla_audit.context import AuditContext
from sqla_audit.events import MARKER_METADATA_KEY, MARKER_RECORD_ID, Operation, make_record_id
from sqla_audit.flush_images import MAX_LAYOUTS
from sqla_audit.lazy_images import AS_IS, NOW, Layout, LazyImage, column_mode
from sqla_audit.serialization import PASSTHROUGH_TYPES, Fallback, JSONValue, encode_value

logger = logging.getLogger("sqla_audit.bulk")

#: Longest statement text kept in a marker.
MAX_STATEMENT_TEXT: Final = 2000

#: Marker reasons (``metadata["sqla_audit.bulk"]["reason"]``).
REASON_MAX_ROWS: Final = "max_bulk_rows"
REASON_UNMATCHED: Final = "unmatched_rows"
REASON_KEY_UPDATED: Final = "primary_key_updated"
REASON_KEYS_UNKNOWN: Final = "keys_unknown"
REASON_UPSERT: Final = "upsert"
REASON_KEYS_UNMATCHED: Final = "keys_unmatched"


@dataclass(slots=True)
class Job:
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
class Shape:
    """The SELECT list of a model's audited columns and how to unpack its rows."""

    columns: list[Any]
    key_columns: list[Any]
    #: attribute key and column name of each column, and whether it is masked
    keys: tuple[str, ...]
    names: tuple[str, ...]
    masked: tuple[bool, ...]
    #: where the primary-key values are in a row (key column order)
    positions: tuple[int, ...]
    #: what ``FOR UPDATE OF`` locks (PostgreSQL): the model's own tables, not joined ones
    tables: list[Any]


class RowImages:
    """Reads the rows of bulk statements and records their changes on the job."""

    def __init__(self, capturer: Capturer) -> None:
        self.capturer = capturer
        self._shapes: dict[Any, Shape] = {}
        self._layouts: dict[tuple[tuple[str, ...], tuple[bool, ...], tuple[int, ...]], Layout] = {}

    # -- reading rows ----------------------------------------------------------------------

    def shape(self, plan: ModelPlan) -> Shape:
        """How rows of ``plan`` are selected and unpacked (computed once per mapper)."""
        shape = self._shapes.get(plan.mapper)
        if shape is None:
            attrs = plan.mapper.attrs
            specs = plan.columns
            shape = Shape(
                columns=[attrs[spec.key].class_attribute for spec in specs],
                key_columns=[attrs[spec.key].class_attribute for spec in plan.primary_key],
                keys=tuple(spec.key for spec in specs),
                names=tuple(spec.name for spec in specs),
                masked=tuple(spec.masked for spec in specs),
                tables=list(plan.mapper.tables),
                positions=tuple(
                    next(i for i, spec in enumerate(specs) if spec is key)
                    for key in plan.primary_key
                ),
            )
            self._shapes[plan.mapper] = shape
        return shape

    def read(self, job: Job, stmt: Any, params: Any = None) -> list[tuple[Key, Raw]]:
        """(primary key, attribute key -> value) of each row ``stmt`` selects."""
        return self.unpack(self.shape(job.plan), job.connection.execute(stmt, params))

    @staticmethod
    def unpack(shape: Shape, rows: Iterable[Sequence[Any]]) -> list[tuple[Key, Raw]]:
        """(primary key, attribute key -> value) of each row of the shape's column list."""
        keys, positions = shape.keys, shape.positions
        if len(positions) == 1:
            (position,) = positions
            return [((row[position],), dict(zip(keys, row, strict=True))) for row in rows]
        return [
            (tuple([row[i] for i in positions]), dict(zip(keys, row, strict=True))) for row in rows
        ]

    def read_where(self, job: Job, max_rows: int | None) -> tuple[dict[Key, Raw], bool]:
        """The rows the statement's WHERE matches (locked), and whether the cap was exceeded."""
        shape = self.shape(job.plan)
        stmt = sa.select(*shape.columns)
        where = job.statement.whereclause
        if where is not None:
            stmt = stmt.where(where)
        stmt = stmt.with_for_update(of=shape.tables)
        if max_rows is not None:
            stmt = stmt.limit(max_rows + 1)
        rows = self.read(job, stmt, job.params)
        return dict(rows), max_rows is not None and len(rows) > max_rows

    def read_keys(self, job: Job, keys: Sequence[Key], *, lock: bool) -> dict[Key, Raw]:
        """The rows with these primary keys (the keys of the rows found, as the DB gives them)."""
        shape = self.shape(job.plan)
        key_attrs = shape.key_columns
        found: dict[Key, Raw] = {}
        for chunk in chunks(keys):
            if len(key_attrs) == 1:
                where = key_attrs[0].in_([key[0] for key in chunk])
            else:
                where = sa.tuple_(*key_attrs).in_(list(chunk))
            stmt = sa.select(*shape.columns).where(where)
            if lock:
                stmt = stmt.with_for_update(of=shape.tables)
            found.update(self.read(job, stmt))
        return found

    @staticmethod
    def in_key_order(rows: Sequence[Sequence[Any]], positions: Sequence[int]) -> list[Any]:
        """``rows`` sorted by the key at ``positions`` (the order of the first read's events)."""
        try:
            return sorted(rows, key=itemgetter(*positions))
        except TypeError:  # keys of mixed or unordered types
            return sorted(rows, key=lambda row: sort_key(tuple(row[i] for i in positions)))

    # -- building changes --------------------------------------------------------------------

    def _change(self, job: Job, **fields: Any) -> RowChange:
        context = job.context
        fields.setdefault("metadata", context.metadata)
        return RowChange(
            table=job.plan.table,
            occurred_at=job.occurred_at,
            actor=context.actor,
            request_id=context.request_id,
            **fields,
        )

    def inserted(self, job: Job, raw: Raw, operation: Operation = Operation.INSERT) -> None:
        """Record the insert (or, with ``operation``, the delete) of the row ``raw``."""
        plan, shape = job.plan, self.shape(job.plan)
        row = [raw[key] for key in shape.keys]
        layout, (stored,) = self._stored(shape, [[[value] for value in row]])
        values = [column[0] for column in stored]
        image = LazyImage(layout, values)
        insert = operation is Operation.INSERT
        job.changes.append(
            self._change(
                job,
                operation=operation,
                record_id=make_record_id([row[i] for i in shape.positions]),
                primary_key={shape.names[i]: values[i] for i in shape.positions},
                before=None if insert else image,
                after=image if insert else None,
                changed_columns=shape.names,
                masked_columns=plan.masked_names,
            )
        )

    def deleted_rows(self, job: Job, rows: Iterable[Sequence[Any]]) -> None:
        """Record the delete of each row (tuples in shape order), in key order."""
        plan, shape = job.plan, self.shape(job.plan)
        ordered = self.in_key_order(list(rows), shape.positions)
        if not ordered:
            return
        columns = list(zip(*ordered, strict=True))
        layout, (stored,) = self._stored(shape, [columns])
        stored_rows = list(zip(*stored, strict=True))
        context, positions = job.context, shape.positions
        record_ids = _record_ids([columns[i] for i in positions])
        append, changed_columns = job.changes.append, shape.names
        key_names = [(shape.names[i], i) for i in positions]
        table, occurred_at, masked_names = plan.table, job.occurred_at, plan.masked_names
        actor, request_id, metadata = context.actor, context.request_id, context.metadata
        for record_id, values in zip(record_ids, stored_rows, strict=True):
            append(
                row_change(
                    table,
                    Operation.DELETE,
                    record_id,
                    {name: values[i] for name, i in key_names},
                    LazyImage(layout, values),
                    None,
                    changed_columns,
                    occurred_at,
                    None,
                    None,
                    masked_names,
                    actor,
                    request_id,
                    metadata,
                )
            )

    def updated(self, job: Job, before: Raw, after: Raw) -> None:
        """Record the update of one row read before and after (attribute key -> value)."""
        self.updated_pairs(job, [(before, after)])

    def updated_pairs(self, job: Job, pairs: Sequence[tuple[Raw, Raw]]) -> None:
        """Record the update of each row read before and after (attribute key -> value),
        in the order given, as :meth:`updated` would one by one (column by column here)."""
        keys = self.shape(job.plan).keys
        if len(keys) == 1:  # itemgetter of one key gives the value, not a tuple
            (key,) = keys
            self.updated_rows(job, [(before[key], after[key]) for before, after in pairs])
            return
        getter = itemgetter(*keys)
        self.updated_rows(job, [getter(before) + getter(after) for before, after in pairs])

    def updated_rows(self, job: Job, rows: Iterable[Sequence[Any]]) -> None:
        """Record the update of each row given as its old then its new values (shape order,
        ``2 * len(columns)`` values), in the order given; unchanged rows give nothing.

        Column by column: the values of a column in every row are compared in one pass and
        encoded (or left to wait) together; the after image names the before image, whose
        encoding it takes for an unchanged value that encodes alike.
        """
        plan, shape = job.plan, self.shape(job.plan)
        width = len(shape.keys)
        pairs: list[tuple[Sequence[Any], Sequence[Any]]] = []
        for row in rows:
            old, new = row[:width], row[width:]
            try:
                if old == new:
                    continue
            except Exception:  # noqa: BLE001,S110 -- an odd __eq__: compared column by column
                pass
            pairs.append((old, new))
        if not pairs:
            return
        old_columns = list(zip(*(old for old, _new in pairs), strict=True))
        new_columns = list(zip(*(new for _old, new in pairs), strict=True))
        same = [_same_column(was, now) for was, now in zip(old_columns, new_columns, strict=True)]
        changed_in: list[list[int]] = [[] for _ in pairs]  # per row, in column order
        for i, column in enumerate(same):
            if not all(column):
                for j in [j for j, alike in enumerate(column) if not alike]:
                    changed_in[j].append(i)
        layout, (old_stored, new_stored) = self._stored(shape, [old_columns, new_columns])
        old_rows = zip(*old_stored, strict=True)
        new_rows = zip(*new_stored, strict=True)
        keys, names, positions = shape.keys, shape.names, shape.positions
        key_names = [(names[i], i) for i in positions]
        context = job.context
        table, occurred_at, masked_names = plan.table, job.occurred_at, plan.masked_names
        actor, request_id, metadata = context.actor, context.request_id, context.metadata
        append, updated = job.changes.append, job.updated
        record_ids = _record_ids([new_columns[i] for i in positions])
        for (_old, new), changed, old_values, new_values, record_id in zip(
            pairs, changed_in, old_rows, new_rows, record_ids, strict=True
        ):
            if not changed:
                continue
            key = tuple([new[i] for i in positions])
            updated.append((key, [keys[i] for i in changed]))
            before = LazyImage(layout, old_values)
            append(
                row_change(
                    table,
                    Operation.UPDATE,
                    record_id,
                    {name: new_values[i] for name, i in key_names},
                    before,
                    LazyImage(layout, new_values, before),
                    tuple([names[i] for i in changed]),
                    occurred_at,
                    None,
                    None,
                    masked_names,
                    actor,
                    request_id,
                    metadata,
                )
            )

    def _stored(
        self, shape: Shape, groups: Sequence[Sequence[Sequence[Any]]]
    ) -> tuple[Layout, list[list[Sequence[Any]]]]:
        """The layout of the images of ``groups`` (each the values of some rows, column by
        column: an UPDATE's old and new rows share one layout) and each group's columns as
        its images hold them: a value that waits as it is, the others encoded now (the key
        columns among them: ``primary_key`` needs their encoding), ``None`` where masked.
        """
        fallback = self.capturer.config.unknown_types
        keys = shape.positions
        waiting: list[int] = []
        stored: list[list[Sequence[Any]]] = [list(columns) for columns in groups]
        for i, masked in enumerate(shape.masked):
            if masked:
                for columns in stored:
                    columns[i] = [None] * len(columns[i])
                continue
            modes = [column_mode(columns[i]) for columns in groups]
            if all(mode == AS_IS for mode in modes):
                continue
            if i in keys or NOW in modes:
                for columns in stored:
                    columns[i] = _encoded(columns[i], fallback)
            else:
                waiting.append(i)
        deferred = tuple(waiting)
        cache = (shape.names, shape.masked, deferred)
        layout = self._layouts.get(cache)
        if layout is None:
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            masked_names = tuple(
                n for n, hidden in zip(shape.names, shape.masked, strict=True) if hidden
            )
            layout = self._layouts[cache] = Layout(shape.names, deferred, masked_names)
        return layout, stored

    def marker(
        self,
        job: Job,
        *,
        reason: str,
        rows: int | None,
        max_rows: int | None,
        itemized: int = 0,
        columns: Iterable[str] = (),
    ) -> None:
        """Report rows the statement changed that are not itemized: log and marker event."""
        text = statement_text(job)
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
            "max_bulk_rows": max_rows,
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


def _encoded(values: Sequence[Any], fallback: Fallback) -> list[JSONValue]:
    """Each value's encoding, now (a value that is its own encoding is not copied)."""
    passthrough = PASSTHROUGH_TYPES
    return [
        value
        if (kind := type(value)) in passthrough or (kind is str and value.isascii())
        else encode_value(value, fallback=fallback)
        for value in values
    ]


def _record_ids(key_columns: Sequence[Sequence[Any]]) -> list[str]:
    """The ``record_id`` of each row from its key values (one column per key column): for
    one key column of ``int`` or ASCII ``str`` values, the values' text (what
    :func:`~sqla_audit.events.make_record_id` gives them) without a call per row."""
    if len(key_columns) == 1:
        (column,) = key_columns
        kinds = set(map(type, column))
        if kinds == {int}:
            return list(map(str, column))
        if kinds == {str} and all(map(str.isascii, column)):
            return list(column)
    return [make_record_id(key) for key in zip(*key_columns, strict=True)]


def _same_column(old: Sequence[Any], new: Sequence[Any]) -> list[bool]:
    """Per row: the column's value did not change (Python equality, as the ORM's history)."""
    try:
        return [a is b or bool(a == b) for a, b in zip(old, new, strict=True)]
    except Exception:  # noqa: BLE001 -- an odd __eq__ means "changed", row by row
        return [same_value(a, b) for a, b in zip(old, new, strict=True)]


def statement_text(job: Job) -> str:
    """The statement's SQL text with placeholders (never bound values), cut to a length."""
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


__all__ = [
    "MAX_STATEMENT_TEXT",
    "REASON_KEYS_UNKNOWN",
    "REASON_KEYS_UNMATCHED",
    "REASON_KEY_UPDATED",
    "REASON_MAX_ROWS",
    "REASON_UNMATCHED",
    "REASON_UPSERT",
    "Job",
    "RowImages",
    "Shape",
    "statement_text",
]
