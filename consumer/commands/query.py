"""``sqla-audit history | as-of | actor | transaction``: the audit log from a shell.

Each command opens the store chosen by ``--store`` (``cassandra``, the default, or
``sqlite`` with ``--store-url FILE``; environment ``SQLA_AUDIT_STORE`` and
``SQLA_AUDIT_STORE_URL``), asks :class:`~consumer.query.AuditQuery` and prints a readable
table, or with ``--json`` one JSON object per line (``as-of``: one object).

Exit codes are meant for scripts: ``0`` something was found, ``1`` nothing matched (a
message on stderr says what was looked for), ``2`` bad arguments or configuration, ``3``
the store could not be read. Times are ISO 8601 *with* a timezone (``Z`` or ``+02:00``):
an audit log spans services in several zones, so a naive time is ambiguous and refused.
``--since`` also accepts a duration back from now (``90m``, ``12h``, ``7d``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
from typing import Any, Final, TypeVar

from consumer.config import add_cassandra_arguments, load_cassandra_config
from consumer.query import AuditQuery, RecordState
from consumer.records import AuditRecord
from consumer.render import (
    dumps,
    format_time,
    json_lines,
    render_records,
    render_state,
    state_to_json,
)
from consumer.sinks.base import (
    MAX_PAGE_SIZE,
    AuditStore,
    Cursor,
    InvalidQuery,
    encode_page_token,
)
from sqla_audit.errors import ConfigurationError, DecodeError, StoreError

T = TypeVar("T")

#: Default number of changes shown by ``history`` and ``actor``.
DEFAULT_LIMIT: Final = 50
#: Largest ``--limit`` (the commands follow the store's pages up to it).
MAX_LIMIT: Final = 10_000
#: ``actor`` without ``--since`` looks this far back from ``--until`` (or now).
DEFAULT_ACTOR_WINDOW: Final = dt.timedelta(hours=24)

EXIT_FOUND: Final = 0
EXIT_NOT_FOUND: Final = 1
EXIT_USAGE: Final = 2
EXIT_STORE: Final = 3

_DURATION: Final = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_OUT_OF_RANGE: Final = "outside the supported range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z"


# --------------------------------------------------------------------------- argument types


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 time with a timezone (``Z`` or an offset), as an aware UTC datetime."""
    value = text.strip()
    if value.endswith("z"):  # RFC 3339 allows a lower-case zone designator
        value = value[:-1] + "Z"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; write e.g. 2026-01-01T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no timezone; add Z for UTC or an offset such as +02:00 "
            "(e.g. 2026-01-01T00:00:00Z)"
        )
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is {_OUT_OF_RANGE}") from None


def parse_since(text: str, *, now: Callable[[], dt.datetime] | None = None) -> dt.datetime:
    """Like :func:`parse_instant`, or a duration back from now: ``90m``, ``12h``, ``7d``."""
    match = _DURATION.match(text.strip())
    if match is None:
        return parse_instant(text)
    amount = dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    current = now() if now is not None else dt.datetime.now(dt.UTC)
    try:
        return current - amount
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} back from now is {_OUT_OF_RANGE}") from None


def parse_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_LIMIT}, got {text!r}")
    return value


def parse_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a transaction id (a UUID such as "
            "0192e4a1-7b2c-7d3e-8f40-123456789abc)"
        ) from None


def _non_empty(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"the {what} must not be empty")
        return text

    return parse


# --------------------------------------------------------------------------- the store


def open_store(args: argparse.Namespace, env: Mapping[str, str]) -> AuditStore:
    """The store named by ``--store``/``SQLA_AUDIT_STORE`` (default ``cassandra``)."""
    kind = (args.store or env.get("SQLA_AUDIT_STORE", "").strip() or "cassandra").lower()
    if kind == "sqlite":
        path = args.store_url or env.get("SQLA_AUDIT_STORE_URL", "").strip()
        if not path:
            raise ConfigurationError(
                "--store sqlite needs --store-url / SQLA_AUDIT_STORE_URL (the store file)"
            )
        from consumer.sinks.sqlite import SQLiteStore  # noqa: PLC0415

        if path != ":memory:" and not os.path.exists(path.removeprefix("sqlite:///")):
            raise ConfigurationError(f"SQLite store {path!r} does not exist")
        return SQLiteStore(path)
    if kind == "cassandra":
        from consumer.sinks.cassandra import CassandraStore  # noqa: PLC0415

        return CassandraStore.connect(load_cassandra_config(args, env))
    raise ConfigurationError(
        f"--store / SQLA_AUDIT_STORE must be cassandra or sqlite, got {kind!r}"
    )


# --------------------------------------------------------------------------- output


def _emit(text: str) -> None:
    """Print to stdout, degrading the two non-ASCII marks when the terminal cannot show them."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.replace("→", "->").replace("…", "...")
        text = text.encode(encoding, errors="replace").decode(encoding)
    print(text)


def _note(text: str) -> None:
    print(f"sqla-audit: {text}", file=sys.stderr)


def _take(items: Iterator[T], limit: int) -> tuple[list[T], bool]:
    """Up to ``limit`` items, and whether at least one more exists."""
    taken = list(islice(items, limit + 1))
    return taken[:limit], len(taken) > limit


def _print_records(
    args: argparse.Namespace, records: list[AuditRecord], *, more: bool, show_record: bool
) -> None:
    if args.json:
        for line in json_lines(records):
            _emit(line)
    else:
        _emit(render_records(records, show_record=show_record))
    if more:
        token = encode_page_token(Cursor.after(records[-1]))
        _note(f"more changes exist: repeat with --page {token}")


def _window_text(since: dt.datetime | None, until: dt.datetime | None) -> str:
    if since is not None and until is not None:
        return f" between {format_time(since)} and {format_time(until)}"
    if since is not None:
        return f" since {format_time(since)}"
    if until is not None:
        return f" until {format_time(until)}"
    return ""


# --------------------------------------------------------------------------- commands


def _history(args: argparse.Namespace, query: AuditQuery) -> int:
    page_size = min(args.limit + 1, MAX_PAGE_SIZE)
    records: Iterator[AuditRecord]
    if args.column:
        records = (
            change.record
            for change in query.column_history(
                args.table,
                args.record_id,
                args.column,
                since=args.since,
                until=args.until,
                page_size=page_size,
                page=args.page,
            )
        )
    else:
        records = query.iter_history(
            args.table,
            args.record_id,
            since=args.since,
            until=args.until,
            page_size=page_size,
            page=args.page,
        )
    found, more = _take(records, args.limit)
    if not found:
        what = f" of column {args.column}" if args.column else ""
        _note(
            f"no changes{what} recorded for {args.table} {args.record_id}"
            f"{_window_text(args.since, args.until)}"
        )
        return EXIT_NOT_FOUND
    _print_records(args, found, more=more, show_record=False)
    return EXIT_FOUND


def _as_of(args: argparse.Namespace, query: AuditQuery) -> int:
    state: RecordState = query.as_of(args.table, args.record_id, args.at)
    if args.json:
        _emit(dumps(state_to_json(state)))
    elif state.known:
        _emit(render_state(state))
    if not state.known:
        _note(
            f"no change recorded for {args.table} {args.record_id} at or before "
            f"{format_time(args.at)}"
        )
        return EXIT_NOT_FOUND
    return EXIT_FOUND


def _window_start(until: dt.datetime) -> dt.datetime:
    """The default start of an ``actor`` window: :data:`DEFAULT_ACTOR_WINDOW` before
    ``until``, or the earliest representable time when that would be earlier."""
    earliest = dt.datetime.min.replace(tzinfo=dt.UTC)
    if until - earliest <= DEFAULT_ACTOR_WINDOW:
        return earliest
    return until - DEFAULT_ACTOR_WINDOW


def _actor(args: argparse.Namespace, query: AuditQuery) -> int:
    until: dt.datetime | None = args.until
    since: dt.datetime = args.since or _window_start(until or dt.datetime.now(dt.UTC))
    records = query.iter_by_actor(
        args.actor_id,
        since=since,
        until=until,
        page_size=min(args.limit + 1, MAX_PAGE_SIZE),
        page=args.page,
    )
    found, more = _take(records, args.limit)
    if not found:
        _note(f"no changes recorded for actor {args.actor_id}{_window_text(since, until)}")
        return EXIT_NOT_FOUND
    _print_records(args, found, more=more, show_record=True)
    return EXIT_FOUND


def _transaction(args: argparse.Namespace, query: AuditQuery) -> int:
    records = query.by_transaction(args.transaction_id)
    if not records:
        _note(f"no changes recorded for transaction {args.transaction_id}")
        return EXIT_NOT_FOUND
    _print_records(args, records, more=False, show_record=True)
    return EXIT_FOUND


def _runner(command: Callable[[argparse.Namespace, AuditQuery], int]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            store = open_store(args, os.environ)
        except (ConfigurationError, InvalidQuery) as exc:
            _note(f"error: {exc}")
            return EXIT_USAGE
        except StoreError as exc:
            _note(f"cannot open the audit store: {exc}")
            return EXIT_STORE
        try:
            return command(args, AuditQuery(store))
        except (ConfigurationError, InvalidQuery) as exc:
            _note(f"error: {exc}")
            return EXIT_USAGE
        except (StoreError, DecodeError) as exc:
            _note(f"cannot read the audit store: {exc}")
            return EXIT_STORE
        finally:
            store.close()

    return run


# --------------------------------------------------------------------------- registration


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json",
        action="store_true",
        help="print JSON (one object per line; as-of: one object) instead of a table",
    )
    store = parent.add_argument_group("store")
    store.add_argument("--store", help="cassandra (default) or sqlite [SQLA_AUDIT_STORE]")
    store.add_argument(
        "--store-url", help="the SQLite store file for --store sqlite [SQLA_AUDIT_STORE_URL]"
    )
    add_cassandra_arguments(parent)
    return parent


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=parse_limit,
        default=DEFAULT_LIMIT,
        help=f"most changes to print (default {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--page", help="continue after the last change of a previous run (the token it printed)"
    )


def register(subparsers: Any) -> None:
    """Add ``history``, ``as-of``, ``actor`` and ``transaction``."""
    common = _common()
    epilog = (
        "Times are ISO 8601 with a timezone, e.g. 2026-01-01T00:00:00Z or "
        "2026-01-01T01:00:00+01:00. Exit status: 0 found, 1 nothing found, "
        "2 bad arguments, 3 store unavailable."
    )

    history = subparsers.add_parser(
        "history",
        parents=[common],
        help="the changes of one record, newest first",
        description="The changes of one record, newest first.",
        epilog=epilog,
    )
    history.add_argument("table", type=_non_empty("table"), help="audited table, e.g. users")
    history.add_argument(
        "record_id",
        type=_non_empty("record id"),
        help="record id, e.g. 42 (composite: 7:2026-01-01)",
    )
    history.add_argument(
        "--since", type=parse_since, help="oldest change to show (a time, or 12h / 7d back)"
    )
    history.add_argument("--until", type=parse_instant, help="newest change to show")
    history.add_argument("--column", help="only changes of this column")
    _paging(history)
    history.set_defaults(func=_runner(_history))

    as_of = subparsers.add_parser(
        "as-of",
        parents=[common],
        help="the whole record as it was at a time",
        description=(
            "The whole record as it was at --at (changes committed at that instant "
            "included), or the delete that removed it."
        ),
        epilog=epilog,
    )
    as_of.add_argument("table", type=_non_empty("table"), help="audited table")
    as_of.add_argument("record_id", type=_non_empty("record id"), help="record id")
    as_of.add_argument("--at", type=parse_instant, required=True, help="the time to look at")
    as_of.set_defaults(func=_runner(_as_of))

    actor = subparsers.add_parser(
        "actor",
        parents=[common],
        help="what one actor changed in a time window, newest first",
        description="What one actor changed in a time window, newest first.",
        epilog=epilog,
    )
    actor.add_argument("actor_id", type=_non_empty("actor id"), help="actor id, e.g. alice")
    actor.add_argument(
        "--since",
        type=parse_since,
        help="start of the window (a time, or 12h / 7d back; default: 24h before --until)",
    )
    actor.add_argument("--until", type=parse_instant, help="end of the window (default: now)")
    _paging(actor)
    actor.set_defaults(func=_runner(_actor))

    transaction = subparsers.add_parser(
        "transaction",
        parents=[common],
        help="everything one transaction changed, in order",
        description="Everything one committed transaction changed, in the order it happened.",
        epilog=epilog,
    )
    transaction.add_argument("transaction_id", type=parse_uuid, help="transaction id (a UUID)")
    transaction.set_defaults(func=_runner(_transaction))


__all__ = [
    "DEFAULT_LIMIT",
    "EXIT_FOUND",
    "EXIT_NOT_FOUND",
    "EXIT_STORE",
    "EXIT_USAGE",
    "open_store",
    "parse_instant",
    "parse_since",
    "register",
]
