"""The audit store protocol: where the worker writes records and the query side reads them.

Every store (Cassandra, the embedded SQLite store, the in-memory store) answers the same
few questions with the same semantics, so the query API and the tests do not care which one
is behind it:

* ``write`` is idempotent: writing a record whose ``event_id`` is already stored *with the
  same content* (:func:`content_digest`) changes nothing, which is what makes SQS's
  at-least-once delivery harmless; the same ``event_id`` with *different* content is a
  conflict: the first record is kept, the store logs a warning and raises
  :class:`RecordConflict`;
* errors: :class:`RecordRejected` (and its :class:`RecordConflict`) concern one record and
  are permanent -- the worker dead-letters that record's message and writes the others;
  :class:`~sqla_audit.errors.StoreError` (retryable) means the store itself is unavailable.
  A ``write`` that raises may have written some of its records; writing them again is safe;
* a record is identified by ``(service, table, record_id)``: two services with a table of
  the same name never share a history;
* ``history`` is one record's changes, newest first (see :mod:`consumer.records` for the
  exact order), with ``since``/``until`` inclusive and keyset paging through an opaque token;
  "state as of t" is ``history(service, table, record_id, until=t, limit=1)``;
* ``services_of`` is which services wrote a ``(table, record_id)`` (sorted, distinct);
* ``by_actor`` is what one actor changed in a time window, newest first (records without an
  actor are not indexed by actor), optionally of one service;
* ``by_transaction`` is everything one commit changed, in ``sequence`` order;
* ``by_request`` / ``by_trace`` are every change one request id / one OpenTelemetry trace id
  made, across services and transactions, oldest first in commit order;
* ``by_table`` is what changed in one table of one service in a time window, newest or
  oldest first, in commit order.

The secondary views (:data:`VIEWS`) are a choice: a store may have some disabled, and a read
of a disabled view raises :class:`ViewDisabled`. History (and ``services_of``) is always on.
Departure records (a row's key changed) appear in ``history`` only.

Page tokens encode the position after the last returned record (its ``(event time ms,
event_id)`` for history and by actor, its commit-order key ``(event time µs, sequence,
event_id)`` for the request, trace and table views), not a driver cursor, so a token stays
valid while new events arrive and works the same on every store. A token only works with
the kind of call that made it.

This module holds the protocol. The pieces every store shares live beside it and are
re-exported here: :mod:`consumer.sinks.errors` (the errors), :mod:`consumer.sinks.views`
(the views and ``--views``), :mod:`consumer.sinks.digest` (content digests and conflicts)
and :mod:`consumer.sinks.paging` (pages, page tokens, windows and pagination).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from consumer.records import AuditRecord
from consumer.sinks.digest import conflict, content_digest
from consumer.sinks.errors import InvalidQuery, RecordConflict, RecordRejected, ViewDisabled
from consumer.sinks.paging import (
    MAX_PAGE_SIZE,
    Cursor,
    OrderedWindow,
    Page,
    Position,
    Window,
    check_window,
    commit_key,
    decode_page_token,
    decode_position_token,
    encode_page_token,
    encode_position_token,
    paginate,
    paginate_ordered,
)
from consumer.sinks.views import (
    DEFAULT_VIEWS,
    VIEWS,
    VIEWS_FLAG,
    check_views,
    format_views,
    parse_views,
)


@runtime_checkable
class AuditStore(Protocol):
    """Writes audit records idempotently and answers the questions the query side asks."""

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Store the records; idempotent by ``event_id`` and content.

        Returns only when every record is durable. Raises :class:`RecordRejected` for a
        record the store refuses for good, :class:`RecordConflict` for a conflicting
        duplicate (the stored record is kept), and :class:`~sqla_audit.errors.StoreError`
        (retryable) only when the store is unavailable. After any of them some of the
        records may be written and some not, and writing them all again is safe.
        """
        ...

    def history(
        self,
        service: str,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        """One record's changes, newest first, with ``since``/``until`` inclusive."""
        ...

    def services_of(self, table: str, record_id: str) -> list[str]:
        """The services that wrote ``(table, record_id)``, sorted and distinct."""
        ...

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
        service: str | None = None,
    ) -> Page[AuditRecord]:
        """What ``actor_id`` changed from ``since`` to ``until`` (default: now), newest first;
        only in ``service`` when given."""
        ...

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        """Every record of one transaction, in ``sequence`` order."""
        ...

    def by_request(
        self, request_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        """Every change one request id made, across services, oldest first in commit order."""
        ...

    def by_trace(
        self, trace_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        """Every change of one OpenTelemetry trace id, oldest first in commit order."""
        ...

    def by_table(
        self,
        service: str,
        table: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        newest_first: bool = True,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        """What changed in one table of one service from ``since`` to ``until``."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


__all__ = [
    "DEFAULT_VIEWS",
    "MAX_PAGE_SIZE",
    "VIEWS",
    "VIEWS_FLAG",
    "AuditStore",
    "Cursor",
    "InvalidQuery",
    "OrderedWindow",
    "Page",
    "Position",
    "RecordConflict",
    "RecordRejected",
    "ViewDisabled",
    "Window",
    "check_views",
    "check_window",
    "commit_key",
    "conflict",
    "content_digest",
    "decode_page_token",
    "decode_position_token",
    "encode_page_token",
    "encode_position_token",
    "format_views",
    "paginate",
    "paginate_ordered",
    "parse_views",
]
