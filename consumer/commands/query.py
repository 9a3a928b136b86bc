"""``sqla-audit history | as-of | actor | transaction | request | changes``: the audit log
from a shell.

Each command opens the store chosen by ``--store`` (``cassandra``, the default, or
``sqlite`` with ``--store-url FILE``; environment ``SQLA_AUDIT_STORE`` and
``SQLA_AUDIT_STORE_URL``), asks :class:`~consumer.query.AuditQuery` and prints a readable
table. The listing commands (all but ``as-of``) also write ``--format json``/``ndjson``
(one JSON object per record and line; ``--json`` is ``--format json``) and ``csv`` (one row
per changed column), with values as stored or, with ``--values plain``, as plain text
(:mod:`consumer.export`). Those formats stream: the records are read page by page and
written as they come, so an export of millions of records runs in constant memory; by
default ``ndjson`` and ``csv`` export every matching record, ``table`` and ``json`` show
the first :data:`DEFAULT_LIMIT`.

A record is identified by (service, table, record id). ``history`` and ``as-of`` take
``--service``; without it the record's service is looked up: one service -- that one; none
-- nothing recorded; several -- exit 2 with one line naming them and asking for
``--service`` (the histories of different services are never merged into one list).

Exit codes are meant for scripts: ``0`` something was found, ``1`` nothing matched (a
message on stderr says what was looked for), ``2`` bad arguments or configuration, ``3``
the store could not be read. Every time option takes the expressions of
:mod:`consumer.times`: ISO 8601 *with* a timezone (``Z`` or ``+02:00``; an audit log spans
services in several zones, so a naive time is ambiguous and refused), a duration back from
now (``90m``, ``12h``, ``7d``) or ``now``.

The commands only read: a SQLite store is opened read-only (``mode=ro``: no file, table or
index is created, the journal mode is left alone, a layout-1 file is read as it is); a file
that is not an audit store -- the application's database given by mistake -- is one line and
exit 2, as is a Cassandra keyspace without the audit tables (run ``schema apply``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from consumer.arguments import add_cassandra_arguments
from consumer.commands.listing import (
    DEFAULT_LIMIT,
    EXIT_FOUND,
    EXIT_NOT_FOUND,
    FORMATS,
    MAX_LIMIT,
    Narrowed,
    Pages,
    check_output,
    emit,
    listing_limit,
    note,
    record_text,
    table_width,
    window_text,
    write_listing,
)
from consumer.query import AmbiguousRecord, AuditQuery, RecordState
from consumer.records import AuditRecord
from consumer.render import (
    dumps,
    format_time,
    render_state,
    state_to_json,
)
from consumer.settings import load_cassandra_config
from consumer.sinks.base import (
    AuditStore,
    Cursor,
    InvalidQuery,
    Page,
    encode_page_token,
)
from consumer.times import parse_time
from sqla_audit.errors import ConfigurationError, DecodeError, StoreError

DEFAULT_ACTOR_WINDOW: Final = dt.timedelta(hours=24)

EXIT_USAGE: Final = 2
EXIT_STORE: Final = 3


# --------------------------------------------------------------------------- argument types


#: Every time option takes the same expressions (:mod:`consumer.times`); the two names are
#: kept for the options' readers.
parse_instant = parse_time
parse_since = parse_time


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
    """The store named by ``--store``/``SQLA_AUDIT_STORE`` (default ``cassandra``), opened
    for reading: a SQLite file read-only (never created, upgraded or switched to WAL), a
    Cassandra keyspace only if it holds the audit tables (else: run ``schema apply``)."""
    kind = (args.store or env.get("SQLA_AUDIT_STORE", "").strip() or "cassandra").lower()
    if kind == "sqlite":
        path = args.store_url or env.get("SQLA_AUDIT_STORE_URL", "").strip()
        if not path:
            raise ConfigurationError(
                "--store sqlite needs --store-url / SQLA_AUDIT_STORE_URL (the store file)"
            )
        from consumer.sinks.sqlite import SQLiteStore  # noqa: PLC0415

        return SQLiteStore.open_read_only(path)
    if kind == "cassandra":
        from consumer.sinks.cassandra import CassandraStore  # noqa: PLC0415

        return CassandraStore.connect(load_cassandra_config(args, env))
    raise ConfigurationError(
        f"--store / SQLA_AUDIT_STORE must be cassandra or sqlite, got {kind!r}"
    )


# --------------------------------------------------------------------------- commands


def _history(args: argparse.Namespace, query: AuditQuery) -> int:
    check_output(args)
    column: str | None = args.column

    def fetch(token: str | None, size: int) -> Page[AuditRecord]:
        return query.history(
            args.table,
            args.record_id,
            service=args.service,
            since=args.since,
            until=args.until,
            limit=size,
            page=token,
        )

    pages = Pages(
        fetch,
        args.page,
        listing_limit(args),
        keep=None if column is None else (lambda record: column in record.changes),
        token_after=lambda record: encode_page_token(Cursor.after(record)),
    )
    what = f" of column {column}" if column else ""
    shown: Pages | Narrowed = pages
    if column is not None:  # only that column of each change, inserts and deletes included
        shown = Narrowed(pages, column)
    return write_listing(
        args,
        shown,
        nothing=(
            f"no changes{what} recorded for {record_text(args)}"
            f"{window_text(args.since, args.until)}"
        ),
    )


def _as_of(args: argparse.Namespace, query: AuditQuery) -> int:
    state: RecordState = query.as_of(args.table, args.record_id, args.at, service=args.service)
    if args.json:
        emit(dumps(state_to_json(state)))
    elif state.known:
        emit(render_state(state, width=table_width(args)))
    if not state.known:
        note(f"no change recorded for {record_text(args)} at or before {format_time(args.at)}")
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
    check_output(args)
    until: dt.datetime | None = args.until
    since: dt.datetime = args.since or _window_start(until or dt.datetime.now(dt.UTC))

    def fetch(token: str | None, size: int) -> Page[AuditRecord]:
        return query.by_actor(
            args.actor_id, since=since, until=until, limit=size, page=token, service=args.service
        )

    service = f" in service {args.service}" if args.service else ""
    return write_listing(
        args,
        Pages(fetch, args.page, listing_limit(args)),
        show_service=args.service is None,
        show_record=True,
        nothing=(
            f"no changes recorded for actor {args.actor_id}{service}{window_text(since, until)}"
        ),
    )


def _transaction(args: argparse.Namespace, query: AuditQuery) -> int:
    records = query.by_transaction(args.transaction_id)
    return write_listing(
        args,
        records,
        show_service=True,
        show_record=True,
        nothing=f"no changes recorded for transaction {args.transaction_id}",
    )


def _request(args: argparse.Namespace, query: AuditQuery) -> int:
    check_output(args)
    if (args.request_id is None) == (args.trace_id is None):
        raise InvalidQuery("request needs a request id or --trace-id ID (one of them)")
    if args.trace_id is not None:
        trace_id: str = args.trace_id

        def fetch(token: str | None, size: int) -> Page[AuditRecord]:
            return query.by_trace(trace_id, limit=size, page=token)

        what = f"trace {trace_id}"
    else:
        request_id: str = args.request_id

        def fetch(token: str | None, size: int) -> Page[AuditRecord]:
            return query.by_request(request_id, limit=size, page=token)

        what = f"request {request_id}"
    return write_listing(
        args,
        Pages(fetch, args.page, listing_limit(args)),
        show_service=True,
        show_record=True,
        show_request=args.trace_id is not None,  # one request: its id is in the command
        nothing=f"no changes recorded for {what}",
    )


def _changes(args: argparse.Namespace, query: AuditQuery) -> int:
    check_output(args)

    def fetch(token: str | None, size: int) -> Page[AuditRecord]:
        return query.by_table(
            args.service,
            args.table,
            since=args.since,
            until=args.until,
            newest_first=not args.oldest_first,
            limit=size,
            page=token,
        )

    return write_listing(
        args,
        Pages(fetch, args.page, listing_limit(args)),
        show_record=True,
        nothing=(
            f"no changes recorded in {args.table} of service {args.service}"
            f"{window_text(args.since, args.until)}"
        ),
    )


def _ambiguous(exc: AmbiguousRecord, args: argparse.Namespace) -> str:
    """One line: which services wrote the record, and what to pass."""
    return (
        f"{args.table} {args.record_id} was written by {len(exc.services)} services "
        f"({', '.join(exc.services)}): pass --service SERVICE"
    )


def _runner(command: Callable[[argparse.Namespace, AuditQuery], int]) -> Callable[..., int]:
    """The command run on the store the arguments name, closed after.

    Failures go to the command line's error policy (consumer.failures): a bad argument or
    setting -- an ambiguous record, a file that is no audit store -- is one line and exit 2,
    a store that cannot be reached or read is one line and exit 3.
    """

    def run(args: argparse.Namespace) -> int:
        store = open_store(args, os.environ)
        try:
            return command(args, AuditQuery(store))
        except AmbiguousRecord as exc:
            raise ConfigurationError(_ambiguous(exc, args)) from exc
        except DecodeError as exc:  # a stored record this version cannot read
            raise StoreError(f"cannot read the audit store: {exc}") from exc
        finally:
            store.close()

    return run


# --------------------------------------------------------------------------- registration


def store_options() -> argparse.ArgumentParser:
    """The store flags of every command that reads the audit store (an argparse parent)."""
    parent = argparse.ArgumentParser(add_help=False)
    store = parent.add_argument_group("store")
    store.add_argument("--store", help="cassandra (default) or sqlite [SQLA_AUDIT_STORE]")
    store.add_argument(
        "--store-url",
        help="the SQLite audit store file for --store sqlite, opened read-only "
        "[SQLA_AUDIT_STORE_URL]",
    )
    add_cassandra_arguments(parent, writes=False)
    return parent


def _listing_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    output = parent.add_argument_group("output")
    output.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help=(
            "table (default), json or ndjson (one object per line), csv (one row per "
            "changed column); json, ndjson and csv stream page by page"
        ),
    )
    output.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        help="the same as --format json",
    )
    output.add_argument(
        "--values",
        choices=("tagged", "plain"),
        default="tagged",
        help=(
            "json/ndjson/csv values: tagged (default; exactly as stored) or plain "
            "(decimals as text, times ISO 8601, bytes base64, enums their value)"
        ),
    )
    output.add_argument(
        "--limit",
        type=parse_limit,
        default=None,
        help=(
            f"most changes to print (default {DEFAULT_LIMIT}; with --format ndjson or csv: "
            "all of them)"
        ),
    )
    output.add_argument(
        "--all", action="store_true", help="every change, following every page (not --format table)"
    )
    output.add_argument(
        "--page", help="continue after the last change of a previous run (the token it printed)"
    )
    _wide_option(output)
    return parent


def _wide_option(group: Any) -> None:
    group.add_argument(
        "--wide",
        action="store_true",
        help="table: every value whole on one line (default: wrapped to the terminal's width "
        "[COLUMNS]; not wrapped when piped)",
    )


def _service_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--service",
        type=_non_empty("service"),
        help=(
            f"the service that wrote the {what} (needed only when several services wrote "
            "one with this table and id)"
        ),
    )


def register(subparsers: Any) -> None:
    """Add ``history``, ``as-of``, ``actor``, ``transaction``, ``request`` and ``changes``."""
    store = store_options()
    listing = _listing_options()
    epilog = (
        "Times: an ISO 8601 time with a timezone (2026-01-01T00:00:00Z, "
        "2026-01-01T01:00:00+01:00), a duration back from now (90m, 12h, 7d) or now.\n"
        "The store is only read, never created or changed.\n"
        "Exit status: 0 found, 1 nothing found, 2 bad arguments or not an audit store, "
        "3 store unavailable."
    )

    history = subparsers.add_parser(
        "history",
        parents=[listing, store],
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
    _service_option(history, "record")
    history.add_argument("--since", type=parse_time, help="oldest change to show (a time)")
    history.add_argument("--until", type=parse_time, help="newest change to show (a time)")
    history.add_argument(
        "--column", help="only changes of this column, and only this column of each change"
    )
    history.set_defaults(func=_runner(_history))

    as_of = subparsers.add_parser(
        "as-of",
        parents=[store],
        help="the whole record as it was at a time",
        description=(
            "The whole record as it was at --at (changes committed at that instant "
            "included), or the delete that removed it."
        ),
        epilog=epilog,
    )
    as_of.add_argument("table", type=_non_empty("table"), help="audited table")
    as_of.add_argument("record_id", type=_non_empty("record id"), help="record id")
    _service_option(as_of, "record")
    as_of.add_argument(
        "--at", type=parse_time, required=True, help="the time to look at (a time, e.g. now)"
    )
    as_of.add_argument("--json", action="store_true", help="print one JSON object")
    _wide_option(as_of)
    as_of.set_defaults(func=_runner(_as_of))

    actor = subparsers.add_parser(
        "actor",
        parents=[listing, store],
        help="what one actor changed in a time window, newest first",
        description="What one actor changed in a time window, newest first.",
        epilog=epilog,
    )
    actor.add_argument("actor_id", type=_non_empty("actor id"), help="actor id, e.g. alice")
    actor.add_argument(
        "--since",
        type=parse_time,
        help="start of the window (a time; default: 24h before --until)",
    )
    actor.add_argument("--until", type=parse_time, help="end of the window (default: now)")
    actor.add_argument(
        "--service", type=_non_empty("service"), help="only the changes made in this service"
    )
    actor.set_defaults(func=_runner(_actor))

    transaction = subparsers.add_parser(
        "transaction",
        parents=[listing, store],
        help="everything one transaction changed, in order",
        description="Everything one committed transaction changed, in the order it happened.",
        epilog=epilog,
    )
    transaction.add_argument("transaction_id", type=parse_uuid, help="transaction id (a UUID)")
    transaction.set_defaults(func=_runner(_transaction))

    request = subparsers.add_parser(
        "request",
        parents=[listing, store],
        help="everything one request changed, across services, in commit order",
        description=(
            "Every change made under one request id -- in every service and transaction -- "
            "oldest first, in commit order. --trace-id finds them by OpenTelemetry trace id."
        ),
        epilog=epilog,
    )
    request.add_argument("request_id", nargs="?", type=_non_empty("request id"), help="request id")
    request.add_argument(
        "--trace-id", type=_non_empty("trace id"), help="an OpenTelemetry trace id instead"
    )
    request.set_defaults(func=_runner(_request))

    changes = subparsers.add_parser(
        "changes",
        parents=[listing, store],
        help="what changed in one table of one service in a time window",
        description=(
            "What changed in one table of one service between --since and --until, "
            "newest first (--oldest-first for the other order)."
        ),
        epilog=epilog,
    )
    changes.add_argument("service", type=_non_empty("service"), help="service, e.g. billing")
    changes.add_argument("table", type=_non_empty("table"), help="audited table, e.g. orders")
    changes.add_argument(
        "--since",
        type=parse_time,
        required=True,
        help="start of the window (a time, e.g. 7d)",
    )
    changes.add_argument("--until", type=parse_time, help="end of the window (default: now)")
    changes.add_argument(
        "--oldest-first", action="store_true", help="oldest change first (default: newest first)"
    )
    changes.set_defaults(func=_runner(_changes))


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
