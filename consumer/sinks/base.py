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
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar, runtime_checkable

from consumer.records import AuditRecord, to_micros
from sqla_audit.errors import PermanentError
from sqla_audit.wire_limits import (
    MAX_EVENT_TIME,
    MAX_IDENTIFIER_CHARS,
    MAX_NAME_CHARS,
    MAX_RECORD_ID_CHARS,
    MAX_SEQUENCE,
    MIN_EVENT_TIME,
)

T = TypeVar("T")

#: Largest ``limit`` a store accepts for one page.
MAX_PAGE_SIZE = 1000

#: The secondary views a store can keep besides history (which is always on).
VIEWS: Final = ("actor", "transaction", "request", "trace", "table")

#: The views a new store keeps unless told otherwise: all of them (docs/cql.md weighs each
#: one's write cost; the request and trace views cost nothing for records without a request
#: or trace id).
DEFAULT_VIEWS: Final = frozenset(VIEWS)

#: The flag that chooses the views, named in :class:`ViewDisabled` messages.
VIEWS_FLAG: Final = "--views"


class InvalidQuery(PermanentError, ValueError):
    """A read was asked with bad arguments (a malformed page token, a bad limit or window)."""


class ViewDisabled(InvalidQuery):
    """A read asked a secondary view this store does not keep."""

    def __init__(self, view: str) -> None:
        super().__init__(
            f"the {view} view is not enabled in this audit store: enable it with "
            f"`{VIEWS_FLAG} ...,{view}` on `sqla-audit schema apply` (Cassandra) or "
            f"`sqla-audit consume` (SQLite)"
        )
        self.view = view


def parse_views(text: str | Iterable[str]) -> frozenset[str]:
    """The views named in ``text`` (comma-separated) or an iterable of names.

    ``history`` may be named (it is always on) and ``all`` means every view; an unknown
    name raises :class:`ValueError` listing the known ones.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen: set[str] = set()
    for raw in names:
        name = raw.strip().lower()
        if not name or name == "history":
            continue
        if name == "all":
            chosen.update(VIEWS)
        elif name in VIEWS:
            chosen.add(name)
        else:
            raise ValueError(f"unknown view {raw.strip()!r} (known: history, {', '.join(VIEWS)})")
    return frozenset(chosen)


def check_views(views: frozenset[str] | None) -> frozenset[str]:
    """``views`` validated (``None``: :data:`DEFAULT_VIEWS`)."""
    if views is None:
        return DEFAULT_VIEWS
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)} (known: {', '.join(VIEWS)})")
    return frozenset(views)


def format_views(views: Iterable[str]) -> str:
    """The views as the ``--views`` flag spells them, in :data:`VIEWS` order."""
    chosen = set(views)
    return ",".join(view for view in VIEWS if view in chosen) or "history"


class RecordRejected(PermanentError):
    """The store refused a record for good (too large, invalid): retrying cannot help."""


class RecordConflict(RecordRejected):
    """A record's ``event_id`` is already stored with different content; the first is kept."""

    def __init__(self, message: str, event_id: uuid.UUID) -> None:
        super().__init__(message)
        self.event_id = event_id


#: ``json.dumps`` options of the canonical content: sorted keys, compact, UTF-8 text, and
#: no NaN/Infinity (not JSON).
_CANONICAL: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _check_storable(record: AuditRecord) -> None:
    """Refuse, as every store would, a record outside :mod:`sqla_audit.wire_limits`."""
    if type(record.sequence) is not int or not 0 <= record.sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {record.sequence!r} is outside 0..{MAX_SEQUENCE}")
    for name, value, limit in (
        ("service", record.service, MAX_NAME_CHARS),
        ("table", record.table, MAX_NAME_CHARS),
        ("record_id", record.record_id, MAX_RECORD_ID_CHARS),
        ("previous_record_id", record.previous_record_id, MAX_RECORD_ID_CHARS),
        ("actor_id", record.actor_id, MAX_IDENTIFIER_CHARS),
        ("request_id", record.request_id, MAX_IDENTIFIER_CHARS),
    ):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise ValueError(f"{name} is not a string of at most {limit} characters")
    for name, moment in (("event_time", record.event_time), ("occurred_at", record.occurred_at)):
        if not MIN_EVENT_TIME <= moment < MAX_EVENT_TIME:
            raise ValueError(f"{name} {moment.isoformat()} is outside the supported range")


def content_digest(record: AuditRecord) -> bytes:
    """SHA-256 of the record's canonical content: what tells a redelivery from a conflict.

    The content is every field the event carried -- ids, times in microseconds, names,
    operation, sequence, actor, request id, previous record id, masked columns, ``before``,
    ``after`` and ``metadata`` -- as JSON with sorted keys, compact, UTF-8. The field-level
    ``changes`` are left out: they are derived from ``before``/``after`` by the consumer's
    differ, whose options may change between deliveries of one event.

    Raises :class:`RecordRejected` for a record no store can hold (a lone surrogate, a
    non-finite number, a value that is not JSON, a field outside
    :mod:`sqla_audit.wire_limits`), so every store refuses the same records.
    """
    try:
        _check_storable(record)
        content = {
            "table": record.table,
            "record_id": record.record_id,
            "event_id": str(record.event_id),
            "event_time_us": to_micros(record.event_time),
            "occurred_at_us": to_micros(record.occurred_at),
            "operation": record.operation.value,
            "service": record.service,
            "transaction_id": str(record.transaction_id),
            "sequence": record.sequence,
            "actor_id": record.actor_id,
            "actor_attributes": dict(record.actor_attributes),
            "request_id": record.request_id,
            "previous_record_id": record.previous_record_id,
            "masked_columns": list(record.masked_columns),
            "before": None if record.before is None else dict(record.before),
            "after": None if record.after is None else dict(record.after),
            "metadata": dict(record.metadata),
        }
        text = _CANONICAL.encode(content).encode("utf-8")
    except (ValueError, TypeError, OverflowError, RecursionError, AttributeError) as exc:
        raise RecordRejected(
            f"record {record.event_id} cannot be stored: {type(exc).__name__}: {exc}"
        ) from exc
    return hashlib.sha256(text).digest()


def conflict(record: AuditRecord, log: logging.Logger) -> RecordConflict:
    """Log a conflicting duplicate (a warning naming the event id) and make its error."""
    log.warning(
        "conflicting duplicate of event %s (table %s, record %s): the stored record is "
        "kept, this one is refused",
        record.event_id,
        record.table,
        record.record_id,
        extra={"event_id": str(record.event_id)},
    )
    return RecordConflict(
        f"event {record.event_id} is already stored with different content "
        "(conflicting duplicate; the first record is kept)",
        record.event_id,
    )


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


def commit_key(record: AuditRecord) -> tuple[int, int, uuid.UUID]:
    """The commit-order key of a (non-departure) record: ``(event time µs, sequence,
    event_id)``; the order of the request, trace and table views."""
    return (to_micros(record.event_time), record.sequence, record.event_id)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in commit order (:func:`commit_key`); a page token of the ordered views."""

    micros: int
    sequence: int
    event_id: uuid.UUID

    @classmethod
    def of(cls, record: AuditRecord) -> Position:
        return cls(*commit_key(record))

    @property
    def key(self) -> tuple[int, int, uuid.UUID]:
        return (self.micros, self.sequence, self.event_id)


def encode_position_token(position: Position, *, newest_first: bool) -> str:
    """The opaque token for the page after ``position`` of an ordered view read."""
    raw = json.dumps(
        ["d" if newest_first else "a", position.micros, position.sequence, str(position.event_id)],
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


_POSITION_TOKEN: Final = re.compile(
    rb'\["([ad])",(0|-?[1-9][0-9]{0,17}),(0|[1-9][0-9]{0,9}),"([0-9a-f]{8}-[0-9a-f]{4}-'
    rb'[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"\]'
)


def decode_position_token(token: str | None, *, newest_first: bool) -> Position | None:
    """Parse a token of :func:`encode_position_token` made for the same direction;
    :class:`InvalidQuery` if it is not one (matched exactly, never parsed as JSON)."""
    if token is None:
        return None
    match = None
    if len(token) <= 128 and token.isascii():
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        match = _POSITION_TOKEN.fullmatch(raw)
    lowest = to_micros(dt.datetime.min.replace(tzinfo=dt.UTC))
    highest = to_micros(dt.datetime.max.replace(tzinfo=dt.UTC))
    if (
        match is None
        or match.group(1) != (b"d" if newest_first else b"a")
        or not lowest <= int(match.group(2)) <= highest
        or int(match.group(3)) > MAX_SEQUENCE
    ):
        shown = repr(token[:40]) + ("..." if len(token) > 40 else "")
        raise InvalidQuery(
            f"invalid page token {shown}: pass a token printed by a previous page of the "
            "same question (and the same order)"
        )
    return Position(
        int(match.group(2)), int(match.group(3)), uuid.UUID(match.group(4).decode("ascii"))
    )


@dataclass(frozen=True, slots=True)
class OrderedWindow:
    """The validated bounds of one read of an ordered view (request, trace, table)."""

    since_us: int | None
    until_us: int | None
    cursor: Position | None
    limit: int
    newest_first: bool

    @classmethod
    def build(
        cls,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
        page: str | None,
        *,
        newest_first: bool,
    ) -> OrderedWindow:
        check_window(since, until, limit)
        return cls(
            since_us=None if since is None else to_micros(since),
            until_us=None if until is None else to_micros(until),
            cursor=decode_position_token(page, newest_first=newest_first),
            limit=limit,
            newest_first=newest_first,
        )

    def admits(self, record: AuditRecord) -> bool:
        """True if ``record`` is inside the exact window and strictly past the cursor."""
        key = commit_key(record)
        if self.since_us is not None and key[0] < self.since_us:
            return False
        if self.until_us is not None and key[0] > self.until_us:
            return False
        if self.cursor is None:
            return True
        return key < self.cursor.key if self.newest_first else key > self.cursor.key

    @property
    def low_us(self) -> int | None:
        """Lowest event time (µs) that can hold a match, cursor included."""
        bounds = [] if self.since_us is None else [self.since_us]
        if self.cursor is not None and not self.newest_first:
            bounds.append(self.cursor.micros)
        return max(bounds) if bounds else None

    @property
    def high_us(self) -> int | None:
        """Highest event time (µs) that can hold a match, cursor included."""
        bounds = [] if self.until_us is None else [self.until_us]
        if self.cursor is not None and self.newest_first:
            bounds.append(self.cursor.micros)
        return min(bounds) if bounds else None


def paginate_ordered(candidates: Iterable[AuditRecord], window: OrderedWindow) -> Page[AuditRecord]:
    """Cut one page from ``candidates`` (in the window's order, possibly a little wider):
    the exact window and cursor are applied here, departures are left out."""
    items: list[AuditRecord] = []
    for record in candidates:
        if record.is_departure or not window.admits(record):
            continue
        if len(items) == window.limit:
            token = encode_position_token(Position.of(items[-1]), newest_first=window.newest_first)
            return Page(items, token)
        items.append(record)
    return Page(items, None)


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
