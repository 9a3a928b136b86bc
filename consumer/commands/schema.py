"""``sqla-audit schema cql`` prints the Cassandra schema; ``schema apply`` creates it;
``schema migrate`` copies a keyspace of an earlier audit layout into this one.

All are idempotent and take the same schema flags (keyspace, replication, TTL, time bucket,
views, timeline bucket and shards) as ``consume``, so what is created is what the worker
expects. ``apply`` records the layout version, the views and the buckets in the keyspace's
``schema_info`` table; the worker and the query commands read them from there. Review the
printed CQL, or apply it yourself with ``cqlsh -f``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from consumer.arguments import add_cassandra_arguments
from consumer.settings import load_cassandra_config, load_schema_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print or apply the Cassandra schema",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="schema_command", metavar="ACTION", required=True)
    cql = commands.add_parser("cql", help="print the CQL that creates the audit tables")
    add_cassandra_arguments(cql, connection=False)
    cql.set_defaults(func=print_cql)
    apply = commands.add_parser("apply", help="create the keyspace and tables if missing")
    add_cassandra_arguments(apply)
    apply.set_defaults(func=apply_cql)
    migrate = commands.add_parser(
        "migrate",
        help="copy a layout-1 keyspace into the current layout (resumable, idempotent)",
    )
    add_cassandra_arguments(migrate)
    migrate.add_argument(
        "--page-size", type=int, default=500, help="rows copied per page (default 500)"
    )
    migrate.set_defaults(func=migrate_keyspace)


def print_cql(args: argparse.Namespace) -> int:
    from consumer.sinks.cassandra import CassandraSchema  # noqa: PLC0415

    schema = load_schema_config(args, os.environ)
    sys.stdout.write(CassandraSchema(schema).cql())
    return 0


def apply_cql(args: argparse.Namespace) -> int:
    from consumer.sinks.cassandra import apply_schema  # noqa: PLC0415

    config = load_cassandra_config(args, os.environ)
    statements = apply_schema(config)
    print(
        f"schema applied to keyspace {config.schema.keyspace!r} "
        f"({len(statements)} statements, all idempotent)"
    )
    return 0


def migrate_keyspace(args: argparse.Namespace) -> int:
    from consumer.sinks.migrate import migrate  # noqa: PLC0415

    config = load_cassandra_config(args, os.environ)
    if not 1 <= args.page_size <= 10_000:
        print("--page-size must be from 1 to 10000", file=sys.stderr)
        return 2
    migrate(config, progress=lambda line: print(line, flush=True), page_size=args.page_size)
    return 0


__all__ = ["apply_cql", "migrate_keyspace", "print_cql", "register"]
