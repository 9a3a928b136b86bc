"""The CQL of ``schema apply --roles`` and its settings: least privilege per role, idempotent
statements, passwords quoted and never printed, settings checked before connecting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from consumer.sinks.cassandra.roles import Role, redacted, role_statements
from sqla_audit.errors import ConfigurationError

TABLES = ["schema_info", "changes_by_service_record", "record_services", "event_digests"]
WRITER = Role("audit_writer", "w-pass")
READER = Role("audit_reader", "r-pass")


def test_writer_may_modify_audit_tables_but_only_read_layout_and_digests() -> None:
    """MODIFY on every audit table except schema_info; SELECT only on schema_info and
    event_digests; nothing on the keyspace as a whole."""
    grants = [s for s in role_statements("ks", TABLES, WRITER, READER) if "audit_writer" in s]
    grants = [s for s in grants if s.startswith("GRANT")]
    assert sorted(grants) == sorted(
        [
            "GRANT MODIFY ON TABLE ks.changes_by_service_record TO audit_writer",
            "GRANT MODIFY ON TABLE ks.event_digests TO audit_writer",
            "GRANT MODIFY ON TABLE ks.record_services TO audit_writer",
            "GRANT SELECT ON TABLE ks.schema_info TO audit_writer",
            "GRANT SELECT ON TABLE ks.event_digests TO audit_writer",
        ]
    )


def test_reader_may_only_select_the_keyspace() -> None:
    """The reader's one grant is SELECT on the keyspace."""
    grants = [
        s
        for s in role_statements("ks", TABLES, WRITER, READER)
        if s.startswith("GRANT") and s.endswith("audit_reader")
    ]
    assert grants == ["GRANT SELECT ON KEYSPACE ks TO audit_reader"]


def test_roles_are_created_idempotently_as_plain_login_roles() -> None:
    """CREATE ROLE IF NOT EXISTS then ALTER ROLE (same password every run), never superuser."""
    statements = role_statements("ks", TABLES, WRITER, READER)
    assert statements[0] == (
        "CREATE ROLE IF NOT EXISTS audit_writer WITH PASSWORD = 'w-pass' AND LOGIN = true "
        "AND SUPERUSER = false"
    )
    assert statements[1] == "ALTER ROLE audit_writer WITH PASSWORD = 'w-pass' AND LOGIN = true"
    assert all(
        s.startswith(("CREATE ROLE IF NOT EXISTS", "ALTER ROLE", "GRANT")) for s in statements
    )


def test_quotes_in_a_password_are_escaped_and_redacted() -> None:
    """A quote in a password is doubled in the CQL, and redacted() hides the whole literal."""
    statements = role_statements("ks", TABLES, Role("w", "it's"), READER)
    assert "PASSWORD = 'it''s'" in statements[0]
    assert redacted(statements[0]) == (
        "CREATE ROLE IF NOT EXISTS w WITH PASSWORD = '***' AND LOGIN = true AND SUPERUSER = false"
    )
    assert "it" not in redacted(statements[1]).split("PASSWORD")[1]


def test_writer_and_reader_must_differ() -> None:
    """One role for both jobs would defeat the split: refused."""
    with pytest.raises(ConfigurationError, match="must differ"):
        role_statements("ks", TABLES, Role("same", "a"), Role("same", "b"))


def _schema_apply(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "schema", "apply", "--roles", *argv],
        capture_output=True,
        text=True,
        # port 9 (discard) on loopback: nothing must be contacted when a setting is wrong
        env={"PATH": "/usr/bin:/bin", "SQLA_AUDIT_CASSANDRA_PORT": "9", **env},
        timeout=120,
        check=False,
    )


def test_roles_without_passwords_is_a_configuration_error() -> None:
    """--roles without the writer's password: exit 2, one line naming flag and variable."""
    done = _schema_apply(env={"SQLA_AUDIT_READER_PASSWORD": "r"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "--writer-password / SQLA_AUDIT_WRITER_PASSWORD" in lines[0]


def test_role_name_must_be_an_identifier() -> None:
    """A role name that is not a CQL identifier is refused before connecting."""
    env = {"SQLA_AUDIT_WRITER_PASSWORD": "w", "SQLA_AUDIT_READER_PASSWORD": "r"}
    done = _schema_apply("--reader-role", "x; DROP KEYSPACE ks", env=env)
    assert done.returncode == 2, done.stderr
    assert "--reader-role / SQLA_AUDIT_READER_ROLE must be a CQL identifier" in done.stderr
