"""The query commands on a real Cassandra keyspace that holds no audit store: one line naming
``schema apply``, exit 2, and nothing created."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cassandra_support import CASSANDRA_LOCAL_DC, split_contact

from tests.integration.conftest import unique_name

if TYPE_CHECKING:
    from cassandra.cluster import Session as CassandraSession

QUERIES = [
    ["history", "users", "1"],
    ["as-of", "users", "1", "--at", "now"],
    ["changes", "shop", "users", "--since", "1h"],
]


@pytest.fixture
def empty_keyspace(cassandra_session: CassandraSession) -> Iterator[str]:
    """A keyspace with no tables (dropped after)."""
    name = unique_name()
    cassandra_session.execute(
        f"CREATE KEYSPACE {name} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    yield name
    cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {name}")


def _run(argv: list[str], contact: str, keyspace: str) -> subprocess.CompletedProcess[str]:
    host, port = split_contact(contact)
    flags = ["--cassandra-hosts", host, "--cassandra-port", str(port), "--keyspace", keyspace]
    flags += ["--local-dc", CASSANDRA_LOCAL_DC, "--protocol-version", "5"]
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *argv, "--store", "cassandra", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tables(session: CassandraSession, keyspace: str) -> list[str]:
    rows = session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    return [row.table_name for row in rows]


@pytest.mark.parametrize("argv", QUERIES, ids=lambda argv: argv[0])
def test_keyspace_without_tables_asks_for_schema_apply(
    argv: list[str],
    empty_keyspace: str,
    cassandra_contact: str,
    cassandra_session: CassandraSession,
) -> None:
    """A keyspace with no audit tables: exit 2, one line naming schema apply, none created."""
    done = _run(argv, cassandra_contact, empty_keyspace)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert f"keyspace {empty_keyspace!r} has no audit tables" in lines[0]
    assert f"sqla-audit schema apply --keyspace {empty_keyspace}" in lines[0]
    assert _tables(cassandra_session, empty_keyspace) == []


def test_missing_keyspace_asks_for_schema_apply(
    cassandra_contact: str, cassandra_session: CassandraSession
) -> None:
    """A keyspace that does not exist: exit 2, one line naming schema apply, not created."""
    keyspace = unique_name()
    done = _run(["history", "users", "1"], cassandra_contact, keyspace)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert f"sqla-audit schema apply --keyspace {keyspace}" in lines[0]
    rows = cassandra_session.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    )
    assert list(rows) == []
