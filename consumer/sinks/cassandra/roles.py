"""Least-privilege Cassandra roles for the audit keyspace (``sqla-audit schema apply --roles``).

Two login roles:

* the **writer** (the consumer): ``MODIFY`` on each audit table of the keyspace, and
  ``SELECT`` only where the write path reads -- ``schema_info`` (the layout, read at start)
  and ``event_digests`` (the digest of an event already stored, to tell a redelivery from a
  conflicting event). No permission on ``schema_info`` beyond reading it, none on other
  keyspaces, no schema changes.
* the **reader** (the query commands, the viewer, ``verify``): ``SELECT`` on the keyspace.

:func:`role_statements` is the CQL (pure text; the passwords only in the statements run,
:func:`redacted` for anything printed or logged); :func:`apply_roles` runs it as an
administrator. Every statement is idempotent: running it again sets the same passwords and
grants the same permissions. It grants; it does not revoke what a role was granted before.
The node must run with ``PasswordAuthenticator`` and ``CassandraAuthorizer``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from consumer.config import CassandraConfig
from consumer.sinks.cassandra.connection import connect, store_error
from sqla_audit.errors import ConfigurationError, StoreError

#: Tables the writer reads besides writing (see the module docstring).
WRITER_READS: Final = ("schema_info", "event_digests")
#: Tables the writer only reads: the keyspace's layout record belongs to ``schema apply``.
READ_ONLY_TABLES: Final = frozenset({"schema_info"})

DEFAULT_WRITER_ROLE: Final = "sqla_audit_writer"
DEFAULT_READER_ROLE: Final = "sqla_audit_reader"

_PASSWORD = re.compile(r"PASSWORD = '(?:[^']|'')*'")


@dataclass(frozen=True, slots=True)
class Role:
    """A login role to create: its name and password."""

    name: str
    password: str = field(repr=False)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _login(role: Role) -> list[str]:
    options = f"PASSWORD = {_literal(role.password)} AND LOGIN = true AND SUPERUSER = false"
    return [
        f"CREATE ROLE IF NOT EXISTS {role.name} WITH {options}",
        f"ALTER ROLE {role.name} WITH PASSWORD = {_literal(role.password)} AND LOGIN = true",
    ]


def role_statements(keyspace: str, tables: Sequence[str], writer: Role, reader: Role) -> list[str]:
    """The CQL that creates both roles and grants their permissions on ``keyspace``, whose
    audit tables are ``tables`` (with ``schema_info``)."""
    if writer.name == reader.name:
        raise ConfigurationError(
            f"the writer and the reader role must differ (both are {writer.name!r})"
        )
    out = [*_login(writer), *_login(reader)]
    for table in sorted(tables):
        if table not in READ_ONLY_TABLES:
            out.append(f"GRANT MODIFY ON TABLE {keyspace}.{table} TO {writer.name}")
    out.extend(
        f"GRANT SELECT ON TABLE {keyspace}.{table} TO {writer.name}"
        for table in WRITER_READS
        if table in tables
    )
    out.append(f"GRANT SELECT ON KEYSPACE {keyspace} TO {reader.name}")
    return out


def redacted(statement: str) -> str:
    """``statement`` with its password literal replaced by ``'***'``."""
    return _PASSWORD.sub("PASSWORD = '***'", statement)


def apply_roles(config: CassandraConfig, writer: Role, reader: Role) -> list[str]:
    """Create the roles and grant their permissions on the keyspace's current tables (run
    after ``schema apply``, as a role allowed to create roles and grant); returns the
    statements run, redacted."""
    keyspace = config.schema.keyspace
    cluster = connect(config)
    try:
        session = cluster.connect()
        rows = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
        tables = [row["table_name"] if isinstance(row, dict) else row[0] for row in rows]
        if "schema_info" not in tables:
            raise ConfigurationError(
                f"keyspace {keyspace!r} holds no audit tables: run `sqla-audit schema apply` first"
            )
        statements = role_statements(keyspace, tables, writer, reader)
        timeout = max(config.request_timeout, 60.0)
        for statement in statements:
            _run(session, statement, timeout)
    except (StoreError, ConfigurationError):
        raise
    except Exception as exc:
        raise store_error("creating the roles failed", exc) from exc
    finally:
        cluster.shutdown()
    return [redacted(statement) for statement in statements]


def _run(session: object, statement: str, timeout: float) -> None:
    from cassandra import InvalidRequest, Unauthorized  # noqa: PLC0415 - optional dependency

    try:
        session.execute(statement, timeout=timeout)  # type: ignore[attr-defined]
    except InvalidRequest as exc:
        raise ConfigurationError(
            f"Cassandra refused {redacted(statement).split(' WITH ')[0]!r}: {_message(exc)}; "
            "roles need authenticator: PasswordAuthenticator and authorizer: "
            "CassandraAuthorizer in cassandra.yaml"
        ) from exc
    except Unauthorized as exc:
        raise ConfigurationError(
            f"the Cassandra user may not create roles or grant permissions "
            f"({_message(exc)}); run `schema apply --roles` as a superuser or a role with "
            "CREATE and AUTHORIZE permissions"
        ) from exc


def _message(exc: BaseException) -> str:
    return str(exc).split("message=", 1)[-1].strip().strip('"')


__all__ = [
    "DEFAULT_READER_ROLE",
    "DEFAULT_WRITER_ROLE",
    "READ_ONLY_TABLES",
    "WRITER_READS",
    "Role",
    "apply_roles",
    "redacted",
    "role_statements",
]
