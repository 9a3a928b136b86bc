"""The query side: the questions people ask of the audit log, over any :class:`AuditStore`.

* :meth:`AuditQuery.history` -- one record's changes, newest first, one page at a time
  (:meth:`AuditQuery.iter_history` follows the pages);
* :meth:`AuditQuery.as_of` -- the whole record as it was at an instant, or the fact that it
  did not exist then (with the delete that removed it);
* :meth:`AuditQuery.by_actor` -- what one actor changed in a time window;
* :meth:`AuditQuery.by_transaction` -- everything one commit changed, in order;
* :meth:`AuditQuery.column_history` -- the changes of one column of one record.

Why ``as_of`` is one short read and not a replay. Every stored record keeps the full row
after the change (:attr:`AuditRecord.after`), so the state at ``t`` is the newest record at
or before ``t``: a single slice of the record's partition. The store orders records by
``(event time in milliseconds, event_id)`` -- milliseconds being the precision of a Cassandra
``timestamp`` -- while the exact commit time has microseconds. Two changes of one record in
the same millisecond are therefore ordered by their event ids, which is creation order for
the version 7 UUIDs the producer makes. ``as_of`` does not rely on that alone: it reads every
candidate of the newest millisecond and picks the latest by :func:`change_order` -- exact
commit time, then departures before the other changes of the same commit, then
``sequence`` (the order inside one transaction), then event id. It reads a few rows first;
only when they all share one millisecond does it read the rest of that millisecond, in one
more read.

Changed primary keys. A row whose key changed has its update under the new id and a
departure record under the old id (:mod:`consumer.records`), so ``as_of`` on the old id
after the move says the row was not there and :attr:`RecordState.moved_to` names the new
id. A departure ranks before any other change of the same commit to the same id: when keys
are swapped inside one transaction, the row that arrived is the one that stays.

Why there is no "every change of column C in table T" across records. The data model is
partitioned by ``(table, record_id)`` (plus companion tables by actor-and-day and by
transaction); a table-wide, per-column question would scan every partition of the table.
Serving it efficiently needs another companion table keyed by ``(table, column, time
bucket)``, written once per changed column of every event. ``docs/query.md`` explains the
trade-off; :meth:`AuditQuery.column_history` answers the per-record form, which the data
model serves with one partition read.

Values. Records keep values in their wire encoding (type-tagged JSON). :class:`RecordState`
gives both the wire form and the decoded Python values
(:func:`sqla_audit.serialization.decode_row`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from consumer.records import AuditRecord, FieldChange, from_micros, to_micros, to_millis
from consumer.sinks.base import MAX_PAGE_SIZE, AuditStore, InvalidQuery, Page
from sqla_audit.events import Operation
from sqla_audit.serialization import EnumResolver, JSONValue, decode_row

#: Records fetched per page while following pages (the store's largest page).
DEFAULT_PAGE_SIZE: Final = 100

#: Records read first by :meth:`AuditQuery.as_of`; almost always one is enough.
_AS_OF_PAGE: Final = 4


@dataclass(frozen=True, slots=True)
class RecordState:
    """A record as it was at :attr:`at`.

    * it existed: ``exists`` is true, ``values`` holds the decoded row, ``wire_values`` the
      row as stored, ``event`` the last change at or before ``at``;
    * it had been deleted: ``exists`` is false, ``values`` is ``None``, ``event`` is the
      delete;
    * its primary key had changed: ``exists`` is false, ``values`` is ``None``, ``event`` is
      the departure record and :attr:`moved_to` the record id it moved to;
    * nothing is known (no change at or before ``at``): ``exists`` is false and ``event`` is
      ``None`` -- see :attr:`known`.
    """

    table: str
    record_id: str
    at: dt.datetime
    exists: bool
    values: dict[str, Any] | None
    wire_values: Mapping[str, JSONValue] | None
    event: AuditRecord | None

    @property
    def known(self) -> bool:
        """True if the audit log has any change of this record at or before :attr:`at`."""
        return self.event is not None

    @property
    def deleted(self) -> bool:
        """True if the record had been deleted at :attr:`at` (not moved: see :attr:`moved_to`)."""
        return (
            self.event is not None
            and self.event.operation is Operation.DELETE
            and not self.event.is_departure
        )

    @property
    def moved_to(self) -> str | None:
        """The record id the row had moved to by :attr:`at` (its key changed), else ``None``."""
        return None if self.event is None else self.event.moved_to


@dataclass(frozen=True, slots=True)
class ColumnChange:
    """One change of one column: the record it belongs to and the old/new values."""

    column: str
    change: FieldChange
    record: AuditRecord


def change_order(record: AuditRecord) -> tuple[int, int, int, uuid.UUID]:
    """The exact order of changes: commit time (µs), then a departure before the other
    changes of the same commit, then ``sequence``, then event id.
    """
    return (
        to_micros(record.event_time),
        0 if record.is_departure else 1,
        record.sequence,
        record.event_id,
    )


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidQuery(f"{name} must be a non-empty string, got {value!r}")
    return value


def _require_instant(name: str, value: object) -> dt.datetime:
    """``value`` if it is an aware datetime that exists in UTC (years 1 to 9999 there)."""
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidQuery(
            f"{name} must be a timezone-aware datetime (UTC or with an offset), got {value!r}"
        )
    try:
        value.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidQuery(
            f"{name} ({value.isoformat()}) is outside the supported range, "
            "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
        ) from None
    return value


def _optional_instant(name: str, value: object) -> dt.datetime | None:
    return None if value is None else _require_instant(name, value)


def _page_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidQuery(f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}, got {value!r}")
    return value


def _follow(
    fetch: Callable[[str | None], Page[AuditRecord]], page: str | None
) -> Iterator[AuditRecord]:
    """The records of every page from ``page`` on.

    The first page is read at once (so bad arguments raise at the call), the rest as
    iteration needs them.
    """
    first = fetch(page)

    def records() -> Iterator[AuditRecord]:
        current = first
        while True:
            yield from current.items
            if current.next_page is None:
                return
            current = fetch(current.next_page)

    return records()


def parse_transaction_id(value: uuid.UUID | str) -> uuid.UUID:
    """A transaction id from a UUID or its text; :class:`InvalidQuery` if it is neither."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    raise InvalidQuery(f"transaction id must be a UUID, got {value!r}")


class AuditQuery:
    """Answers history, state-as-of, by-actor and by-transaction questions over a store.

    ``enum_resolver`` is passed to :func:`~sqla_audit.serialization.decode_row` when
    :meth:`as_of` decodes values (Enum members stay :class:`TaggedEnum` without it).
    """

    def __init__(self, store: AuditStore, *, enum_resolver: EnumResolver | None = None) -> None:
        self.store = store
        self._enum_resolver = enum_resolver

    # -- history ---------------------------------------------------------------------------

    def history(
        self,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        """One page of a record's changes, newest first; ``since``/``until`` inclusive.

        Pass ``page=result.next_page`` for the next page; ``next_page`` is ``None`` on the last.
        """
        return self.store.history(
            _require_text("table", table),
            _require_text("record_id", record_id),
            since=_optional_instant("since", since),
            until=_optional_instant("until", until),
            limit=limit,
            page=page,
        )

    def iter_history(
        self,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Iterator[AuditRecord]:
        """Every change of a record in the window, newest first, following the pages lazily.

        The first page is read at once, so bad arguments raise here, not on iteration.
        """
        size = _page_size(page_size)
        return _follow(
            lambda token: self.history(
                table, record_id, since=since, until=until, limit=size, page=token
            ),
            page,
        )

    def column_history(
        self,
        table: str,
        record_id: str,
        column: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Iterator[ColumnChange]:
        """The changes of one column of one record, newest first (inserts and deletes count).

        One partition read filtered here; see the module docstring for why there is no
        table-wide form.
        """
        name = _require_text("column", column)
        records = self.iter_history(
            table, record_id, since=since, until=until, page_size=page_size, page=page
        )
        return (
            ColumnChange(column=name, change=record.changes[name], record=record)
            for record in records
            if name in record.changes
        )

    # -- state as of -----------------------------------------------------------------------

    def last_change(self, table: str, record_id: str, at: dt.datetime) -> AuditRecord | None:
        """The latest change of a record at or before ``at`` (exact to the microsecond)."""
        instant = _require_instant("at", at)
        first = self.history(table, record_id, until=instant, limit=_AS_OF_PAGE)
        if not first.items:
            return None
        newest_ms = to_millis(first.items[0].event_time)
        # an older millisecond cannot hold a later change
        candidates = [r for r in first.items if to_millis(r.event_time) == newest_ms]
        if first.next_page is not None and len(candidates) == len(first.items):
            # the newest millisecond may hold more: read the rest of it at once
            candidates.extend(
                self.iter_history(
                    table,
                    record_id,
                    since=from_micros(newest_ms * 1000),
                    until=instant,
                    page_size=MAX_PAGE_SIZE,
                    page=first.next_page,
                )
            )
        return max(candidates, key=change_order)

    def as_of(self, table: str, record_id: str, at: dt.datetime) -> RecordState:
        """The whole record as it was at ``at`` (changes committed at ``at`` included)."""
        event = self.last_change(table, record_id, at)
        row = None if event is None or event.operation is Operation.DELETE else event.after
        return RecordState(
            table=table,
            record_id=record_id,
            at=at,
            exists=row is not None,
            values=None if row is None else decode_row(row, enum_resolver=self._enum_resolver),
            wire_values=row,
            event=event,
        )

    # -- by actor, by transaction ----------------------------------------------------------

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        """One page of what ``actor_id`` changed from ``since`` to ``until`` (default now)."""
        return self.store.by_actor(
            _require_text("actor_id", actor_id),
            since=_require_instant("since", since),
            until=_optional_instant("until", until),
            limit=limit,
            page=page,
        )

    def iter_by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Iterator[AuditRecord]:
        """Everything ``actor_id`` changed in the window, newest first, following the pages.

        The first page is read at once, so bad arguments raise here, not on iteration.
        """
        size = _page_size(page_size)
        return _follow(
            lambda token: self.by_actor(actor_id, since=since, until=until, limit=size, page=token),
            page,
        )

    def by_transaction(self, transaction_id: uuid.UUID | str) -> list[AuditRecord]:
        """Every change of one transaction, in ``sequence`` order (empty if unknown)."""
        return self.store.by_transaction(parse_transaction_id(transaction_id))


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "AuditQuery",
    "ColumnChange",
    "RecordState",
    "change_order",
    "parse_transaction_id",
]
