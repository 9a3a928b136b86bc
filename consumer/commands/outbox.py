"""``sqla-audit outbox``: manage the outbox table of outbox mode.

* ``create-table`` creates the table if it is missing (idempotent) -- for applications
  without Alembic; with Alembic, add ``sqla_audit.outbox.outbox_table(Base.metadata)`` to
  your metadata and let autogenerate write the migration. ``--sql`` prints the DDL for the
  database's dialect instead of running it.
* ``status`` prints the number of pending and parked rows (parked: refused by SNS for good).
* ``requeue`` makes parked rows pending again, once the cause of the refusal is fixed.

The database URL comes from ``--db`` or ``SQLA_AUDIT_DB_URL`` (prefer the variable: a URL
holds a password, and command lines are visible to other users of the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.schema import CreateTable

from consumer.config import setting
from sqla_audit.errors import ConfigurationError
from sqla_audit.outbox import (
    DEFAULT_TABLE_NAME,
    create_outbox_table,
    outbox_counts,
    outbox_table,
    requeue_parked,
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


def outbox_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Engine, Table]:
    """The engine and the outbox table named by the arguments (or the environment)."""
    url = setting(getattr(args, "db", None), env, DB_ENV)
    if url is None:
        raise ConfigurationError(f"a database URL is needed: --db or {DB_ENV}")
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from exc
    name = setting(getattr(args, "table", None), env, TABLE_ENV) or DEFAULT_TABLE_NAME
    schema = setting(getattr(args, "schema", None), env, SCHEMA_ENV)
    return engine, outbox_table(MetaData(), name=name, schema=schema)


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
    status = actions.add_parser("status", help="count pending and parked rows")
    add_outbox_arguments(status)
    status.set_defaults(func=show_status)
    requeue = actions.add_parser("requeue", help="make parked rows pending again")
    add_outbox_arguments(requeue)
    requeue.set_defaults(func=requeue_rows)


def _database_error(exc: SQLAlchemyError) -> int:
    print(f"sqla-audit: database error: {exc}", file=sys.stderr)
    return 2


def create_table(args: argparse.Namespace) -> int:
    engine, table = outbox_from_args(args, os.environ)
    try:
        if args.sql:
            ddl = CreateTable(table).compile(dialect=engine.dialect)
            sys.stdout.write(f"{str(ddl).strip()};\n")
            return 0
        create_outbox_table(engine, table)
    except SQLAlchemyError as exc:
        return _database_error(exc)
    finally:
        engine.dispose()
    print(f"outbox table {table.fullname} is ready")
    return 0


def show_status(args: argparse.Namespace) -> int:
    engine, table = outbox_from_args(args, os.environ)
    try:
        pending, parked = outbox_counts(engine, table)
    except SQLAlchemyError as exc:
        return _database_error(exc)
    finally:
        engine.dispose()
    print(f"pending {pending}")
    print(f"parked {parked}")
    return 0


def requeue_rows(args: argparse.Namespace) -> int:
    engine, table = outbox_from_args(args, os.environ)
    try:
        count = requeue_parked(engine, table)
    except SQLAlchemyError as exc:
        return _database_error(exc)
    finally:
        engine.dispose()
    print(f"requeued {count} parked row(s)")
    return 0


__all__ = [
    "add_outbox_arguments",
    "create_table",
    "outbox_from_args",
    "register",
    "requeue_rows",
    "show_status",
]
