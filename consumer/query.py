"""The query side: the questions people ask of the audit log, over any :class:`AuditStore`.

* :meth:`AuditQuery.history` -- one record's changes, newest first, one page at a time
  (:meth:`AuditQuery.iter_history` follows the pages);
* :meth:`AuditQuery.as_of` -- the whole record as it was at an instant, or the fact that it
  did not exist then (with the delete that removed it);
* :meth:`AuditQuery.by_actor` -- what one actor changed in a time window;
* :meth:`AuditQuery.by_transaction` -- everything one commit changed, in order;
* :meth:`AuditQuery.column_history` -- the changes of one column of one record;
* :meth:`AuditQuery.by_request` / :meth:`AuditQuery.by_trace` -- every change one request id
  (or one OpenTelemetry trace id) made, across services and transactions, in commit order;
* :meth:`AuditQuery.by_table` -- what changed in one table of one service in a time window.

A record is identified by ``(service, table, record_id)``. The record questions take
``service=``; without it the query looks up which services wrote the record
(:meth:`AuditQuery.services_of`): none -- nothing is recorded; one -- that one; several --
:class:`AmbiguousRecord` names them and asks for ``service=`` (``--service`` on the CLI).

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
partitioned by ``(service, table, record_id)`` (plus companion views by actor-and-day, by
transaction, by request, by trace and by table-and-time-bucket); a per-column question would
read every change of the table (:meth:`AuditQuery.by_table`) and filter it.
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
    #: The service whose record this is ("" when no service recorded it).
    service: str = ""

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


class AmbiguousRecord(InvalidQuery):
    """A record question without a service matched records of several services."""

    def __init__(self, table: str, record_id: str, services: list[str]) -> None:
        super().__init__(
            f"{table} {record_id} was written by {len(services)} services "
            f"({', '.join(services)}): pass --service / service="
        )
        self.table = table
        self.record_id = record_id
        self.services = services


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

    def services_of(self, table: str, record_id: str) -> list[str]:
        """The services that wrote ``(table, record_id)``, sorted."""
        return self.store.services_of(
            _require_text("table", table), _require_text("record_id", record_id)
        )

    def resolve_service(self, table: str, record_id: str, service: str | None) -> str | None:
        """``service`` if given, else the one service that wrote the record (``None`` if
        none did); :class:`AmbiguousRecord` if several did."""
        if service is not None:
            return _require_text("service", service)
        services = self.services_of(table, record_id)
        if len(services) > 1:
            raise AmbiguousRecord(table, record_id, services)
        return services[0] if services else None

    def history(
        self,
        table: str,
        record_id: str,
        *,
        service: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        """One page of a record's changes, newest first; ``since``/``until`` inclusive.

        Pass ``page=result.next_page`` for the next page; ``next_page`` is ``None`` on the last.
        Without ``service`` the record's service is looked up (module docstring).
        """
        table = _require_text("table", table)
        record_id = _require_text("record_id", record_id)
        owner = self.resolve_service(table, record_id, service)
        return self._history(
            owner, table, record_id, since=since, until=until, limit=limit, page=page
        )

    def _history(
        self,
        owner: str | None,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
        page: str | None,
    ) -> Page[AuditRecord]:
        """The store's history of ``owner``'s record; no owner: nothing recorded (the
        arguments are still validated as a store would)."""
        return self.store.history(
            "" if owner is None else owner,
            table,
            record_id,
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
        service: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Iterator[AuditRecord]:
        """Every change of a record in the window, newest first, following the pages lazily.

        The first page is read at once, so bad arguments raise here, not on iteration.
        """
        size = _page_size(page_size)
        owner = self.resolve_service(
            _require_text("table", table), _require_text("record_id", record_id), service
        )
        return _follow(
            lambda token: self._history(
                owner, table, record_id, since=since, until=until, limit=size, page=token
            ),
            page,
        )

    def column_history(
        self,
        table: str,
        record_id: str,
        column: str,
        *,
        service: str | None = None,
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
            table,
            record_id,
            service=service,
            since=since,
            until=until,
            page_size=page_size,
            page=page,
        )
        return (
            ColumnChange(column=name, change=record.changes[name], record=record)
            for record in records
            if name in record.changes
        )

    # -- state as of -----------------------------------------------------------------------

    def last_change(
        self, table: str, record_id: str, at: dt.datetime, *, service: str | None = None
    ) -> AuditRecord | None:
        """The latest change of a record at or before ``at`` (exact to the microsecond)."""
        instant = _require_instant("at", at)
        owner = self.resolve_service(
            _require_text("table", table), _require_text("record_id", record_id), service
        )
        if owner is None:
            return None
        first = self.history(table, record_id, service=owner, until=instant, limit=_AS_OF_PAGE)
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
                    service=owner,
                    since=from_micros(newest_ms * 1000),
                    until=instant,
                    page_size=MAX_PAGE_SIZE,
                    page=first.next_page,
                )
            )
        return max(candidates, key=change_order)

    def as_of(
        self, table: str, record_id: str, at: dt.datetime, *, service: str | None = None
    ) -> RecordState:
        """The whole record as it was at ``at`` (changes committed at ``at`` included)."""
        instant = _require_instant("at", at)
        owner = self.resolve_service(
            _require_text("table", table), _require_text("record_id", record_id), service
        )
        event = (
            None if owner is None else self.last_change(table, record_id, instant, service=owner)
        )
        row = None if event is None or event.operation is Operation.DELETE else event.after
        return RecordState(
            table=table,
            record_id=record_id,
            at=at,
            exists=row is not None,
            values=None if row is None else decode_row(row, enum_resolver=self._enum_resolver),
            wire_values=row,
            event=event,
            service=owner or "",
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
        service: str | None = None,
    ) -> Page[AuditRecord]:
        """One page of what ``actor_id`` changed from ``since`` to ``until`` (default now),
        in every service or only in ``service``."""
        return self.store.by_actor(
            _require_text("actor_id", actor_id),
            since=_require_instant("since", since),
            until=_optional_instant("until", until),
            limit=limit,
            page=page,
            service=None if service is None else _require_text("service", service),
        )

    def iter_by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
        service: str | None = None,
    ) -> Iterator[AuditRecord]:
        """Everything ``actor_id`` changed in the window, newest first, following the pages.

        The first page is read at once, so bad arguments raise here, not on iteration.
        """
        size = _page_size(page_size)
        return _follow(
            lambda token: self.by_actor(
                actor_id, since=since, until=until, limit=size, page=token, service=service
            ),
            page,
        )

    def by_transaction(self, transaction_id: uuid.UUID | str) -> list[AuditRecord]:
        """Every change of one transaction, in ``sequence`` order (empty if unknown)."""
        return self.store.by_transaction(parse_transaction_id(transaction_id))

    # -- by request, by trace, by table ----------------------------------------------------

    def by_request(
        self, request_id: str, *, limit: int = DEFAULT_PAGE_SIZE, page: str | None = None
    ) -> Page[AuditRecord]:
        """One page of every change ``request_id`` made, across services and transactions,
        oldest first in commit order (:func:`change_order`)."""
        return self.store.by_request(
            _require_text("request_id", request_id), limit=limit, page=page
        )

    def iter_request(
        self, request_id: str, *, page_size: int = DEFAULT_PAGE_SIZE, page: str | None = None
    ) -> Iterator[AuditRecord]:
        """Every change of one request id, oldest first, following the pages lazily."""
        size = _page_size(page_size)
        return _follow(lambda token: self.by_request(request_id, limit=size, page=token), page)

    def by_trace(
        self, trace_id: str, *, limit: int = DEFAULT_PAGE_SIZE, page: str | None = None
    ) -> Page[AuditRecord]:
        """One page of every change of one OpenTelemetry trace id (the events' metadata
        ``otel.trace_id``), oldest first in commit order."""
        return self.store.by_trace(_require_text("trace_id", trace_id), limit=limit, page=page)

    def iter_trace(
        self, trace_id: str, *, page_size: int = DEFAULT_PAGE_SIZE, page: str | None = None
    ) -> Iterator[AuditRecord]:
        """Every change of one trace id, oldest first, following the pages lazily."""
        size = _page_size(page_size)
        return _follow(lambda token: self.by_trace(trace_id, limit=size, page=token), page)

    def by_table(
        self,
        service: str,
        table: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        newest_first: bool = True,
        limit: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        """One page of what changed in ``table`` of ``service`` from ``since`` to ``until``
        (default now), both inclusive, newest or oldest first in commit order."""
        if not isinstance(newest_first, bool):
            raise InvalidQuery(f"newest_first must be True or False, got {newest_first!r}")
        return self.store.by_table(
            _require_text("service", service),
            _require_text("table", table),
            since=_require_instant("since", since),
            until=_optional_instant("until", until),
            newest_first=newest_first,
            limit=limit,
            page=page,
        )

    def iter_table(
        self,
        service: str,
        table: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        newest_first: bool = True,
        page_size: int = DEFAULT_PAGE_SIZE,
        page: str | None = None,
    ) -> Iterator[AuditRecord]:
        """Every change of the table in the window, following the pages lazily."""
        size = _page_size(page_size)
        return _follow(
            lambda token: self.by_table(
                service,
                table,
                since=since,
                until=until,
                newest_first=newest_first,
                limit=size,
                page=token,
            ),
            page,
        )


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "AmbiguousRecord",
    "AuditQuery",
    "ColumnChange",
    "RecordState",
    "change_order",
    "parse_transaction_id",
]
