"""Pages of results and the page tokens, windows and pagination every store shares.

Two orders, two kinds of token:

* history and by actor are newest first by ``(event time ms, event_id)``
  (:attr:`~consumer.records.AuditRecord.sort_key`): a :class:`Window` holds the exact
  ``since``/``until`` and the :class:`Cursor` of the page token, and :func:`paginate` cuts a
  page from the candidates a store reads (narrowed to whole milliseconds, its index precision);
* the request, trace and table views are in commit order, ``(event time µs, sequence,
  event_id)`` (:func:`commit_key`), oldest or newest first: an :class:`OrderedWindow` with a
  :class:`Position` token, cut by :func:`paginate_ordered` (which leaves departures out).

A token encodes the position after the last returned record, not a driver cursor, so it stays
valid while new events arrive and works the same on every store. It is matched exactly on the
way back in, never parsed as general JSON, and only works with the kind of call that made it
(an ordered token also records its direction).
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
from typing import Final, Generic, TypeVar

from consumer.records import AuditRecord, to_micros
from consumer.sinks.errors import InvalidQuery
from sqla_audit.wire_limits import MAX_SEQUENCE

T = TypeVar("T")

#: Largest ``limit`` a store accepts for one page.
MAX_PAGE_SIZE = 1000


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


__all__ = [
    "MAX_PAGE_SIZE",
    "Cursor",
    "OrderedWindow",
    "Page",
    "Position",
    "check_window",
    "commit_key",
    "decode_page_token",
    "decode_position_token",
    "encode_page_token",
    "encode_position_token",
    "paginate",
    "paginate_ordered",
]
