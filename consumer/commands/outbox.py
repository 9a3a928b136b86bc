"""``sqla-audit outbox``: manage the outbox table of outbox mode.

* ``create-table`` creates the table if it is missing (idempotent) -- for applications
  without Alembic; with Alembic, add ``sqla_audit.outbox.outbox_table(Base.metadata)`` to
  your metadata and let autogenerate write the migration. ``--sql`` prints the DDL for the
  database's dialect instead of running it.
* ``status`` prints the number of pending and parked events (parked: refused by SNS for
  good, or by the consumer reading the outbox) -- a row written in layout 2 holds the events
  of one transaction, so rows are fewer, and counted too -- and each parked row's error;
  ``--json`` for tools.
* ``requeue`` makes parked rows pending again, once the cause of the refusal is fixed;
  ``--id-from``/``--id-to``, ``--error TEXT`` and ``--older-than DURATION`` choose rows,
  ``--dry-run`` only lists them.

``status`` and ``requeue`` never create a database: a SQLite file that does not exist is
an error.

The database URL comes from ``--db`` or ``SQLA_AUDIT_DB_URL`` (prefer the variable: a URL
holds a password, and command lines are visible to other users of the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.schema import CreateTable

from consumer.failures import EXIT_NOTHING, one_line
from consumer.settings import setting
from consumer.times import parse_time
from sqla_audit.errors import ConfigurationError
from sqla_audit.outbox import (
    DEFAULT_TABLE_NAME,
    PAYLOAD_STORAGE_DDL,
    ParkedRowInfo,
    ParkedSelection,
    create_outbox_table,
    outbox_table,
    outbox_tally,
    parked_rows,
    requeue_parked_rows,
)

DB_ENV = "SQLA_AUDIT_DB_URL"
TABLE_ENV = "SQLA_AUDIT_OUTBOX_TABLE"
SCHEMA_ENV = "SQLA_AUDIT_OUTBOX_SCHEMA"


def add_outbox_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db``, ``--table`` and ``--schema``, shared with ``sqla-audit relay``."""
    group = parser.add_argument_group("outbox")
    group.add_argument("--db", help=f"SQLAlchemy database URL [{DB_ENV}]")
    group.add_argument(
        "--table",
        "--outbox-table",
        dest="table",
        help=f"outbox table name (default {DEFAULT_TABLE_NAME}) [{TABLE_ENV}]",
    )
    group.add_argument(
        "--schema",
        "--outbox-schema",
        dest="schema",
        help=f"schema of the outbox table [{SCHEMA_ENV}]",
    )


def outbox_from_args(
    args: argparse.Namespace,
    env: Mapping[str, str],
    *,
    must_exist: bool = False,
    write: bool = False,
) -> tuple[Engine, Table]:
    """The engine and the outbox table named by the arguments (or the environment).

    ``must_exist``: a SQLite file that does not exist, or that this user cannot read (with
    ``write``: write), is an error (it is not created)."""
    url = setting(getattr(args, "db", None), env, DB_ENV)
    if url is None:
        raise ConfigurationError(f"a database URL is needed: --db or {DB_ENV}")
    if must_exist:
        require_sqlite_file(url, f"--db / {DB_ENV}", write=write)
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from exc
    name = setting(getattr(args, "table", None), env, TABLE_ENV) or DEFAULT_TABLE_NAME
    schema = setting(getattr(args, "schema", None), env, SCHEMA_ENV)
    return engine, outbox_table(MetaData(), name=name, schema=schema)


def require_sqlite_file(url: str, where: str, *, write: bool = False) -> None:
    """For a SQLite URL, raise :class:`ConfigurationError` unless its file exists (opening
    a missing file would create an empty database: a read-only command must not) and this
    user may read it (and, with ``write``, write it)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from exc
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database or "")
    if parsed.query.get("mode") == "memory" or str(path).startswith("file:"):
        return
    if not path.exists():
        raise ConfigurationError(
            f"the SQLite database {str(path)!r} does not exist; check {where} "
            "(the application's database file, e.g. sqlite:///path/app.db)"
        )
    mode = os.R_OK | (os.W_OK if write else 0)
    if not os.access(path, mode):
        raise ConfigurationError(
            f"permission denied: this user cannot {'write' if write else 'read'} the SQLite "
            f"database {str(path)!r}; check its permissions ({where})"
        )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "outbox",
        help="create and inspect the outbox table (outbox mode)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    create = actions.add_parser("create-table", help="create the outbox table if it is missing")
    add_outbox_arguments(create)
    create.add_argument(
        "--sql", action="store_true", help="print the CREATE TABLE statement instead of running it"
    )
    create.set_defaults(func=create_table)
    status = actions.add_parser(
        "status",
        help="count pending and parked events, and show each parked row's error",
        description="Count pending and parked events (and the rows holding them) and list "
        "the parked rows: id, event id, table, record id, when it was parked and the last "
        "error. Exit status 0.",
    )
    add_outbox_arguments(status)
    status.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: pending, parked (events), pending_row_count, "
        "parked_row_count, parked_rows (id, event_id, table, record_id, created_at, "
        "parked_at, last_error, event_count)",
    )
    status.set_defaults(func=show_status)
    requeue = actions.add_parser(
        "requeue",
        help="make parked rows pending again (all, or chosen by id, error or age)",
        description="Make parked rows pending again, once the cause of the refusal is fixed; "
        "prints each row it requeued. Without a filter every parked row is requeued. "
        "Exit status: 0 rows requeued (or listed with --dry-run), 1 no parked row matched.",
    )
    add_outbox_arguments(requeue)
    filters = requeue.add_argument_group("which parked rows (all criteria must hold)")
    filters.add_argument("--id-from", type=_row_id, metavar="ID", help="lowest row id")
    filters.add_argument("--id-to", type=_row_id, metavar="ID", help="highest row id")
    filters.add_argument(
        "--error", metavar="TEXT", help="a case-insensitive part of the row's last error"
    )
    filters.add_argument(
        "--older-than",
        type=parse_time,
        metavar="TIME",
        help="parked before this time: 90m, 12h, 7d back, or an ISO 8601 time with a zone",
    )
    requeue.add_argument(
        "--dry-run",
        action="store_true",
        help="list the rows that would be requeued; change nothing",
    )
    requeue.set_defaults(func=requeue_rows)


def _row_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive row id, got {text!r}")
    return value


def _time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _row_json(row: ParkedRowInfo) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "table": row.table_name,
        "record_id": row.record_id,
        "created_at": _time(row.created_at),
        "parked_at": _time(row.failed_at),
        "last_error": row.last_error,
        "event_count": row.event_count,
    }


def _row_line(row: ParkedRowInfo) -> str:
    error = one_line(row.last_error or "", 300)
    what = f"event {row.event_id}"
    if row.event_count > 1:  # a row that could not be read at all
        what = f"{row.event_count} events from {row.event_id}"
    return (
        f"  #{row.id}  {row.table_name} {row.record_id}  {what}  "
        f"parked {_time(row.failed_at)}: {error}"
    )


def _count_line(label: str, events: int, rows: int) -> str:
    if events == rows:
        return f"{label} {events}"
    return f"{label} {events} (in {rows} row{'' if rows == 1 else 's'})"


def create_table(args: argparse.Namespace) -> int:
    engine, table = outbox_from_args(args, os.environ)
    try:
        if args.sql:
            ddl = CreateTable(table).compile(dialect=engine.dialect)
            sys.stdout.write(f"{str(ddl).strip()};\n")
            if engine.dialect.name == "postgresql":
                storage = PAYLOAD_STORAGE_DDL.against(table).compile(dialect=engine.dialect)
                sys.stdout.write(f"{str(storage).strip()};\n")
            return 0
        create_outbox_table(engine, table)
    finally:
        engine.dispose()
    print(f"outbox table {table.fullname} is ready")
    return 0


def show_status(args: argparse.Namespace) -> int:
    engine, table = outbox_from_args(args, os.environ, must_exist=True)
    try:
        tally = outbox_tally(engine, table)
        rows = parked_rows(engine, table) if tally.parked_rows else []
    finally:
        engine.dispose()
    if args.json:
        document = {
            "table": table.fullname,
            "pending": tally.pending,
            "parked": tally.parked,
            "pending_row_count": tally.pending_rows,
            "parked_row_count": tally.parked_rows,
            "parked_rows": [_row_json(row) for row in rows],
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    print(_count_line("pending", tally.pending, tally.pending_rows))
    print(_count_line("parked", tally.parked, tally.parked_rows))
    for row in rows:
        print(_row_line(row))
    return 0


def requeue_rows(args: argparse.Namespace) -> int:
    engine, table = outbox_from_args(args, os.environ, must_exist=True, write=not args.dry_run)
    selection = ParkedSelection(
        id_from=args.id_from,
        id_to=args.id_to,
        error=args.error or None,
        parked_before=args.older_than,
    )
    try:
        if args.dry_run:
            rows = parked_rows(engine, table, selection)
        else:
            rows = requeue_parked_rows(engine, table, selection)
    finally:
        engine.dispose()
    if not rows:
        print("sqla-audit: no parked row matched; nothing requeued", file=sys.stderr)
        return EXIT_NOTHING
    verb = "would requeue" if args.dry_run else "requeued"
    events = sum(row.event_count for row in rows)
    held = f" ({events} events)" if events != len(rows) else ""
    print(f"{verb} {len(rows)} parked row(s){held}:")
    for row in rows:
        print(_row_line(row))
    return 0


__all__ = [
    "add_outbox_arguments",
    "create_table",
    "outbox_from_args",
    "register",
    "requeue_rows",
    "require_sqlite_file",
    "show_status",
]
