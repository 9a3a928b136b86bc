"""Row images of bulk statements: reading the audited rows, and turning them into changes.

A :class:`Shape` is the SELECT (or RETURNING) list of a model's audited columns in plan
order; rows come back as tuples in that order. :class:`RowImages` reads them (the first
read of a WHERE clause, reads by key) and builds the :class:`~sqla_audit.changes.RowChange`
of each row in bulk: an UPDATE's old and new tuples are compared as tuples first (one C
comparison for a row that did not change), and each value is encoded once, its encoding
reused for the after image when the value is the same.
"""

from __future__ import annotations

import datetime as dt
import decimal
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
from sqla_audit.changes import RowChange
from sqla_audit.config import ModelPlan
from sqla_audit.context import AuditContext
from sqla_audit.events import MARKER_METADATA_KEY, MARKER_RECORD_ID, Operation, make_record_id
from sqla_audit.serialization import MASKED_VALUE, PASSTHROUGH_TYPES, JSONValue, encode_value

logger = logging.getLogger("sqla_audit.bulk")

#: Types whose equal values always have the same wire encoding.
_SAME_ENCODING: Final[frozenset[type]] = frozenset({str, int, bool, type(None)})

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
                masked_columns=tuple(name for name in plan.masked_names if name in encoded),
            )
        )

    def deleted_rows(self, job: Job, rows: Iterable[Sequence[Any]]) -> None:
        """Record the delete of each row (tuples in shape order), in key order."""
        plan, shape = job.plan, self.shape(job.plan)
        ordered = self.in_key_order(list(rows), shape.positions)
        images = self._images(shape, list(zip(*ordered, strict=True)) if ordered else [])
        context, positions = job.context, shape.positions
        append, changed_columns = job.changes.append, shape.names
        # Key columns are never masked: the image holds exactly the key's encoding.
        key_names = [shape.names[i] for i in positions]
        for row, before in zip(ordered, images, strict=True):
            record_id = make_record_id([row[i] for i in positions])
            primary_key = {name: before[name] for name in key_names}
            append(
                RowChange(
                    table=plan.table,
                    operation=Operation.DELETE,
                    record_id=record_id,
                    primary_key=primary_key,
                    before=before,
                    after=None,
                    changed_columns=changed_columns,
                    occurred_at=job.occurred_at,
                    masked_columns=plan.masked_names,
                    actor=context.actor,
                    request_id=context.request_id,
                    metadata=context.metadata,
                )
            )

    def updated(self, job: Job, before: Raw, after: Raw) -> None:
        """Record the update of one row read before and after (attribute key -> value)."""
        keys = self.shape(job.plan).keys
        self.updated_rows(job, [tuple(before[k] for k in keys) + tuple(after[k] for k in keys)])

    def updated_rows(self, job: Job, rows: Iterable[Sequence[Any]]) -> None:
        """Record the update of each row given as its old then its new values (shape order,
        ``2 * len(columns)`` values), in the order given; unchanged rows give nothing.

        Column by column: the values of a column in every row are compared and encoded in
        one pass; an after value equal to the before value of a type that always encodes
        alike reuses its encoding.
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
        befores = self._images(shape, old_columns)
        afters = self._images(shape, new_columns, befores, same, old_columns)
        keys, names, positions = shape.keys, shape.names, shape.positions
        changed_in: list[list[int]] = [[] for _ in pairs]  # per row, in column order
        for i, column in enumerate(same):
            if not all(column):
                for j in [j for j, alike in enumerate(column) if not alike]:
                    changed_in[j].append(i)
        # Key columns are never masked: the image holds exactly the key's encoding.
        key_names = [names[i] for i in positions]
        context = job.context
        append, updated = job.changes.append, job.updated
        for j, (before, after) in enumerate(zip(befores, afters, strict=True)):
            changed = changed_in[j]
            if not changed:
                continue
            new = pairs[j][1]
            key = tuple([new[i] for i in positions])
            updated.append((key, [keys[i] for i in changed]))
            record_id = make_record_id(key)
            primary_key = {name: after[name] for name in key_names}
            append(
                RowChange(
                    table=plan.table,
                    operation=Operation.UPDATE,
                    record_id=record_id,
                    primary_key=primary_key,
                    before=before,
                    after=after,
                    changed_columns=tuple([names[i] for i in changed]),
                    occurred_at=job.occurred_at,
                    masked_columns=plan.masked_names,
                    actor=context.actor,
                    request_id=context.request_id,
                    metadata=context.metadata,
                )
            )

    def _images(
        self,
        shape: Shape,
        columns: Sequence[Sequence[Any]],
        reuse: Sequence[dict[str, JSONValue]] = (),
        same: Sequence[Sequence[bool]] = (),
        previous: Sequence[Sequence[Any]] = (),
    ) -> list[dict[str, JSONValue]]:
        """The encoded image (column name -> value) of each row of ``columns`` (the values
        column by column). With ``reuse`` (the before images), ``same`` (per column, per
        row: the value did not change) and ``previous`` (the before values), a value equal
        to its before value, of the same type, a type whose equal values always encode
        alike (``Decimal("1.0")`` and ``Decimal("1.00")`` do not), takes its encoding from
        ``reuse``."""
        if not columns:
            return []
        fallback = self.capturer.config.unknown_types
        passthrough = PASSTHROUGH_TYPES
        encoded: list[Sequence[Any]] = []
        for i, values in enumerate(columns):
            if shape.masked[i]:
                encoded.append([MASKED_VALUE] * len(values))
                continue
            if reuse:
                name, unchanged, before = shape.names[i], same[i], previous[i]
                fresh = [
                    image[name]
                    if alike
                    and type(was) is (kind := type(value))
                    and (kind in _SAME_ENCODING or _same_text(was, value))
                    else value
                    if (kind := type(value)) in passthrough or (kind is str and value.isascii())
                    else encode_value(value, fallback=fallback)
                    for image, alike, value, was in zip(
                        reuse, unchanged, values, before, strict=True
                    )
                ]
            else:
                fresh = [
                    value
                    if (kind := type(value)) in passthrough or (kind is str and value.isascii())
                    else encode_value(value, fallback=fallback)
                    for value in values
                ]
            encoded.append(fresh)
        names = shape.names
        images = [dict(zip(names, row, strict=True)) for row in zip(*encoded, strict=True)]
        if any(shape.masked):  # one masked value object per image, never shared
            masked = [name for name, hidden in zip(names, shape.masked, strict=True) if hidden]
            for image in images:
                for name in masked:
                    image[name] = dict(MASKED_VALUE)
        return images

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


def _same_text(was: Any, now: Any) -> bool:
    """Two equal values of one type that also encode alike: a ``Decimal`` with the same
    text, a ``datetime`` with the same ``tzinfo`` and ``fold``, a ``date``."""
    kind = type(was)
    if kind is decimal.Decimal:
        return str(was) == str(now)  # the encoding is the text (as_tuple() is slower)
    if kind is dt.datetime:
        return bool(was.tzinfo is now.tzinfo and was.fold == now.fold)
    return kind is dt.date


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
