"""The audit store protocol: where the worker writes records and the query side reads them.

Every store (Cassandra, the embedded SQLite store, the in-memory store) answers the same
few questions with the same semantics, so the query API and the tests do not care which one
is behind it:

* ``write`` is idempotent: writing a record whose ``event_id`` is already stored rewrites the
  same row (it never duplicates), which is what makes SQS's at-least-once delivery harmless;
* ``history`` is one record's changes, newest first (see :mod:`consumer.records` for the
  exact order), with ``since``/``until`` inclusive and keyset paging through an opaque token;
  "state as of t" is ``history(table, record_id, until=t, limit=1)``;
* ``by_actor`` is what one actor changed in a time window, newest first (records without an
  actor are not indexed by actor);
* ``by_transaction`` is everything one commit changed, in ``sequence`` order.

Page tokens encode the position after the last returned record (its ``(event time ms,
event_id)``), not a driver cursor, so a token stays valid while new events arrive and works
the same on every store.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from consumer.records import AuditRecord, to_micros
from sqla_audit.errors import PermanentError

T = TypeVar("T")

#: Largest ``limit`` a store accepts for one page.
MAX_PAGE_SIZE = 1000


class InvalidQuery(PermanentError, ValueError):
    """A read was asked with bad arguments (a malformed page token, a bad limit or window)."""


class RecordRejected(PermanentError):
    """The store refused a record for good (too large, invalid): retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results; ``next_page`` is ``None`` on the last page."""

    items: Sequence[T]
    next_page: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in newest-first order: strictly older than ``(millis, event_id)``."""

    millis: int
    event_id: uuid.UUID

    @classmethod
    def after(cls, record: AuditRecord) -> Cursor:
        millis, event_id = record.sort_key
        return cls(millis, event_id)


def encode_page_token(cursor: Cursor) -> str:
    """The opaque token handed to callers for the page after ``cursor``."""
    raw = json.dumps([cursor.millis, str(cursor.event_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def decode_page_token(token: str | None) -> Cursor | None:
    """Parse a token from :func:`encode_page_token`; :class:`InvalidQuery` if it is not one.

    Only the exact form :func:`encode_page_token` writes is accepted: URL-safe base64 of
    ``[millis,"uuid"]``, with ``millis`` an integer inside the range of event times a store
    can hold (years 1 to 9999 UTC) and the UUID in its canonical text. The token is matched,
    never parsed as general JSON, so no input can recurse or overflow.
    """
    if token is None:
        return None
    match = None
    if len(token) <= 96 and token.isascii():  # a real token has at most 76 characters
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        match = re.fullmatch(
            rb'\[(0|-?[1-9][0-9]{0,14}),"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
            rb'[0-9a-f]{12})"\]',
            raw,
        )
    lowest = to_micros(dt.datetime.min.replace(tzinfo=dt.UTC)) // 1000
    highest = to_micros(dt.datetime.max.replace(tzinfo=dt.UTC)) // 1000
    if match is None or not lowest <= int(match.group(1)) <= highest:
        shown = repr(token[:40]) + ("..." if len(token) > 40 else "")
        raise InvalidQuery(f"invalid page token {shown}: pass a token printed by a previous page")
    return Cursor(int(match.group(1)), uuid.UUID(match.group(2).decode("ascii")))


def check_window(since: dt.datetime | None, until: dt.datetime | None, limit: int) -> None:
    """Validate the common read arguments; :class:`InvalidQuery` explains what is wrong."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}")
    for name, value in (("since", since), ("until", until)):
        if value is not None and (not isinstance(value, dt.datetime) or value.tzinfo is None):
            raise InvalidQuery(f"{name} must be a timezone-aware datetime, got {value!r}")
    if since is not None and until is not None and since > until:
        raise InvalidQuery(f"since ({since.isoformat()}) is after until ({until.isoformat()})")


@dataclass(frozen=True, slots=True)
class Window:
    """The validated bounds of one read: exact ``since``/``until`` plus the page cursor."""

    since_us: int | None
    until_us: int | None
    cursor: Cursor | None
    limit: int

    @classmethod
    def build(
        cls,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
        page: str | None,
    ) -> Window:
        check_window(since, until, limit)
        return cls(
            since_us=None if since is None else to_micros(since),
            until_us=None if until is None else to_micros(until),
            cursor=decode_page_token(page),
            limit=limit,
        )

    @property
    def min_ms(self) -> int | None:
        """Lowest event-time millisecond that can hold a match (inclusive)."""
        return None if self.since_us is None else self.since_us // 1000

    @property
    def max_ms(self) -> int | None:
        """Highest event-time millisecond that can hold a match (inclusive)."""
        bounds = [self.until_us // 1000] if self.until_us is not None else []
        if self.cursor is not None:
            bounds.append(self.cursor.millis)
        return min(bounds) if bounds else None

    def admits(self, record: AuditRecord) -> bool:
        """True if ``record`` is inside the exact window and strictly after the cursor."""
        micros = to_micros(record.event_time)
        if self.since_us is not None and micros < self.since_us:
            return False
        if self.until_us is not None and micros > self.until_us:
            return False
        return self.cursor is None or record.sort_key < (self.cursor.millis, self.cursor.event_id)


def paginate(candidates: Iterable[AuditRecord], window: Window) -> Page[AuditRecord]:
    """Cut one page from ``candidates`` (newest first, already narrowed to whole ms).

    Stores narrow by millisecond (their index precision) and hand the candidates here, which
    applies the exact microsecond window and the cursor, stops after ``limit`` matches and
    makes the next-page token when at least one more match exists.
    """
    items: list[AuditRecord] = []
    for record in candidates:
        if not window.admits(record):
            continue
        if len(items) == window.limit:
            return Page(items, encode_page_token(Cursor.after(items[-1])))
        items.append(record)
    return Page(items, None)


@runtime_checkable
class AuditStore(Protocol):
    """Writes audit records idempotently and answers the questions the query side asks."""

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Store the records; idempotent by ``event_id``.

        Returns only when every record is durable. Raises
        :class:`~sqla_audit.errors.StoreError` (retryable) when the store is unavailable;
        then some of the records may be written and some not, and writing them all again
        is safe.
        """
        ...

    def history(
        self,
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

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        """What ``actor_id`` changed from ``since`` to ``until`` (default: now), newest first."""
        ...

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        """Every record of one transaction, in ``sequence`` order."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


__all__ = [
    "MAX_PAGE_SIZE",
    "AuditStore",
    "Cursor",
    "InvalidQuery",
    "Page",
    "RecordRejected",
    "Window",
    "check_window",
    "decode_page_token",
    "encode_page_token",
    "paginate",
]
