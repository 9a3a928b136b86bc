"""``sqla-audit schema cql`` prints the Cassandra schema; ``schema apply`` creates it;
``schema migrate`` copies a keyspace of an earlier audit layout into this one.

All are idempotent and take the same schema flags (keyspace, replication, TTL, time bucket,
views, timeline bucket and shards) as ``consume``, so what is created is what the worker
expects. ``apply`` records the layout version, the views and the buckets in the keyspace's
``schema_info`` table; the worker and the query commands read them from there. Review the
printed CQL, or apply it yourself with ``cqlsh -f``.

``schema apply --roles`` also creates two least-privilege login roles (docs/security.md): a
writer for the consumer (MODIFY on the audit tables; SELECT on ``schema_info`` and
``event_digests`` only) and a reader for the query commands and the viewer (SELECT). Run it
as a Cassandra superuser; the roles' passwords come from flags or the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from consumer.arguments import add_cassandra_arguments
from consumer.settings import load_cassandra_config, load_schema_config, setting
from sqla_audit.errors import ConfigurationError


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
    _add_estimate_arguments(cql)
    cql.set_defaults(func=print_cql)
    apply = commands.add_parser("apply", help="create the keyspace and tables if missing")
    add_cassandra_arguments(apply)
    _add_estimate_arguments(apply)
    _add_role_arguments(apply)
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


def _add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("partition sizes (docs/cql.md, Partition sizes)")
    group.add_argument(
        "--expect",
        help="expected rates of the busiest partition of each view, view=rate pairs from "
        "actor, record, table, request, trace (e.g. actor=1000000/day,record=10000/day): "
        "prints each view's largest partition and warns over 100 MB [SQLA_AUDIT_EXPECT]",
    )
    group.add_argument(
        "--row-bytes",
        help="bytes per row per view, view=bytes pairs (default: the measured sizes) "
        "[SQLA_AUDIT_ROW_BYTES]",
    )


def _report_partition_sizes(args: argparse.Namespace, schema: Any) -> None:
    """Print the partition-size estimate lines (stderr) when rates are expected."""
    from consumer.sinks.partition_sizes import (  # noqa: PLC0415
        describe,
        estimate_partitions,
        parse_expectations,
        parse_row_bytes,
    )

    expect = setting(getattr(args, "expect", None), os.environ, "SQLA_AUDIT_EXPECT")
    sizes = setting(getattr(args, "row_bytes", None), os.environ, "SQLA_AUDIT_ROW_BYTES")
    if not expect:
        return
    try:
        rates = parse_expectations(expect)
        row_bytes = parse_row_bytes(sizes or "")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    for estimate in estimate_partitions(schema, rates, row_bytes):
        print(describe(estimate), file=sys.stderr)


def _add_role_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("roles (--roles)")
    group.add_argument(
        "--roles",
        action="store_true",
        help="also create the writer and reader login roles and grant their permissions",
    )
    group.add_argument(
        "--writer-role",
        help="the consumer's role (default: sqla_audit_writer) [SQLA_AUDIT_WRITER_ROLE]",
    )
    group.add_argument(
        "--writer-password", help="its password; prefer the variable [SQLA_AUDIT_WRITER_PASSWORD]"
    )
    group.add_argument(
        "--reader-role",
        help="the query commands' role (default: sqla_audit_reader) [SQLA_AUDIT_READER_ROLE]",
    )
    group.add_argument(
        "--reader-password", help="its password; prefer the variable [SQLA_AUDIT_READER_PASSWORD]"
    )


def _role(args: argparse.Namespace, kind: str, default: str) -> Any:
    from consumer.config import _IDENTIFIER  # noqa: PLC0415
    from consumer.sinks.cassandra.roles import Role  # noqa: PLC0415

    upper = kind.upper()
    name = setting(getattr(args, f"{kind}_role", None), os.environ, f"SQLA_AUDIT_{upper}_ROLE")
    name = name or default
    if not _IDENTIFIER.match(name):
        raise ConfigurationError(
            f"--{kind}-role / SQLA_AUDIT_{upper}_ROLE must be a CQL identifier (a letter, then "
            f"letters, digits or _), got {name!r}"
        )
    password = getattr(args, f"{kind}_password", None) or os.environ.get(
        f"SQLA_AUDIT_{upper}_PASSWORD"
    )
    if not password:
        raise ConfigurationError(
            f"--roles needs the {kind} role's password: --{kind}-password / "
            f"SQLA_AUDIT_{upper}_PASSWORD"
        )
    return Role(name, password)


def print_cql(args: argparse.Namespace) -> int:
    from consumer.sinks.cassandra import CassandraSchema  # noqa: PLC0415

    schema = load_schema_config(args, os.environ)
    _report_partition_sizes(args, schema)
    sys.stdout.write(CassandraSchema(schema).cql())
    return 0


def apply_cql(args: argparse.Namespace) -> int:
    from consumer.sinks.cassandra import apply_schema  # noqa: PLC0415

    config = load_cassandra_config(args, os.environ)
    _report_partition_sizes(args, config.schema)
    roles = None
    if getattr(args, "roles", False):
        from consumer.sinks.cassandra.roles import (  # noqa: PLC0415
            DEFAULT_READER_ROLE,
            DEFAULT_WRITER_ROLE,
        )

        roles = (
            _role(args, "writer", DEFAULT_WRITER_ROLE),
            _role(args, "reader", DEFAULT_READER_ROLE),
        )
    statements = apply_schema(config)
    print(
        f"schema applied to keyspace {config.schema.keyspace!r} "
        f"({len(statements)} statements, all idempotent)"
    )
    if roles is not None:
        from consumer.sinks.cassandra.roles import apply_roles  # noqa: PLC0415

        writer, reader = roles
        granted = apply_roles(config, writer, reader)
        print(
            f"roles {writer.name!r} (writer) and {reader.name!r} (reader) created with their "
            f"permissions on keyspace {config.schema.keyspace!r} ({len(granted)} statements, "
            "all idempotent)"
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
