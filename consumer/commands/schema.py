"""``sqla-audit schema cql`` prints the Cassandra schema; ``schema apply`` creates it.

Both are idempotent (``CREATE ... IF NOT EXISTS``) and take the same schema flags
(keyspace, replication, TTL, time bucket) as ``consume``, so what is created is what the
worker expects. Review the printed CQL, or apply it yourself with ``cqlsh -f``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from consumer.config import add_cassandra_arguments, load_cassandra_config, load_schema_config


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


__all__ = ["apply_cql", "print_cql", "register"]
