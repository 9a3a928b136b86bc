"""The query side on a real Cassandra node, filled by the real consumer.

The scripted history of tests/query_support.py (100 audited changes of an ORM model on
SQLite, with deletes and re-inserts of the same primary key and primary-key changes: a
move, a swap inside one transaction, a move back) is consumed by the real worker into the
Cassandra store; ``as_of`` must then equal the database snapshot at every point. It runs
with the wall clock and with a stepped producer clock that puts several commits in each
millisecond and crosses midnight (so a day-bucketed keyspace splits the history over two
partitions). The CLI is checked against the same keyspace.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from cassandra_support import CASSANDRA_LOCAL_DC, cassandra_config, split_contact
from query_support import (
    ACTORS,
    IDS,
    STEPS,
    TABLE,
    ScriptedHistory,
    SteppedClock,
    check_as_of,
    check_moves,
    consume,
    run_script,
)

from consumer.cli import main
from consumer.config import CassandraConfig
from consumer.query import AuditQuery
from consumer.sinks.cassandra import CassandraStore, apply_schema

if TYPE_CHECKING:
    from cassandra.cluster import Session as CassandraSession

MIDNIGHT = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module", params=["wall-clock", "stepped-clock"])
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ScriptedHistory:
    """The scripted history; the stepped clock starts 20 ms before midnight, 200 µs a reading."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path_factory.mktemp('app') / 'app.db'}")
    clock = None
    if request.param == "stepped-clock":
        clock = SteppedClock(
            MIDNIGHT - dt.timedelta(milliseconds=20), dt.timedelta(microseconds=200)
        )
    try:
        made = run_script(engine, clock=clock)
    finally:
        engine.dispose()
    if clock is not None:
        assert made.points[0].committed_at < MIDNIGHT < made.points[-1].committed_at
        assert made.same_millisecond_pairs > STEPS // 2
    return made


@dataclass
class Keyspace:
    name: str
    config: CassandraConfig
    query: AuditQuery


@pytest.fixture(scope="module", params=["none", "day"])
def filled(
    request: pytest.FixtureRequest,
    history: ScriptedHistory,
    cassandra_contact: str,
    cassandra_session: CassandraSession,
) -> Iterator[Keyspace]:
    """A fresh keyspace (plain or day-bucketed) holding the history, written by the worker."""
    keyspace = f"sqla_audit_query_{request.param}_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace, time_bucket=request.param)
    apply_schema(config)
    store = CassandraStore.connect(config)
    try:
        consume(store, history.messages)
        yield Keyspace(keyspace, config, AuditQuery(store))
    finally:
        store.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def test_as_of_matches_the_database_at_every_point(
    history: ScriptedHistory, filled: Keyspace
) -> None:
    """as_of on Cassandra reproduces the actual rows (or their absence) at every point."""
    assert check_as_of(filled.query, history) >= len(IDS) * (STEPS + 2)


def test_a_key_left_by_a_move_says_where_the_row_went(
    history: ScriptedHistory, filled: Keyspace
) -> None:
    """On Cassandra too, as_of on a key a row moved away from names the new key."""
    assert check_moves(filled.query, history) >= 2


def test_history_is_every_event_newest_first(history: ScriptedHistory, filled: Keyspace) -> None:
    """Cassandra's order (ms, then the uuid event id) is commit order, across pages."""
    for record_id in map(str, IDS):
        got = [r.event_id for r in filled.query.iter_history(TABLE, record_id, page_size=7)]
        assert got == history.expected_history(record_id)


def test_actor_and_transaction(history: ScriptedHistory, filled: Keyspace) -> None:
    """by_actor and by_transaction on Cassandra return exactly the matching events (a move once)."""
    first = history.points[0].committed_at
    for actor in ACTORS:
        expected = [
            e.event_id
            for e in reversed(history.events)
            if e.actor is not None and e.actor.id == actor
        ]
        got = [r.event_id for r in filled.query.iter_by_actor(actor, since=first, page_size=9)]
        assert got == expected
    for event in [*history.events[::10], *history.moves]:
        expected = [e.event_id for e in history.events if e.transaction_id == event.transaction_id]
        assert [r.event_id for r in filled.query.by_transaction(event.transaction_id)] == expected


# --------------------------------------------------------------------------- the CLI


def cassandra_flags(filled: Keyspace) -> list[str]:
    config = filled.config
    return [
        "--store",
        "cassandra",
        "--cassandra-hosts",
        config.hosts[0],
        "--cassandra-port",
        str(config.port),
        "--local-dc",
        config.local_dc,
        "--consistency",
        "LOCAL_ONE",
        "--protocol-version",
        "5",
        "--keyspace",
        config.schema.keyspace,
    ]  # the time bucket is read from the keyspace (schema_info): readers take no write flags


def test_cli_history_and_as_of(
    history: ScriptedHistory, filled: Keyspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """history --json and as-of --json on Cassandra agree with the events and the snapshots."""
    flags = cassandra_flags(filled)
    assert main(["history", TABLE, "1", "--json", "--limit", "1000", *flags]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [
        str(event_id) for event_id in history.expected_history("1")
    ]
    point = history.points[STEPS // 2]
    at = point.committed_at.isoformat()
    assert main(["as-of", TABLE, "2", "--json", "--at", at, *flags]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["exists"] == (point.rows["2"] is not None)
    event = history.events[0]
    assert main(["transaction", str(event.transaction_id), *flags]) == 0
    assert str(event.transaction_id) in capsys.readouterr().out


def test_cli_nothing_found_on_cassandra(
    filled: Keyspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown record, transaction and actor exit 1 with a message, on Cassandra too."""
    flags = cassandra_flags(filled)
    assert main(["history", TABLE, "404", *flags]) == 1
    assert main(["transaction", str(uuid.uuid4()), *flags]) == 1
    assert main(["actor", "nobody", "--since", "30d", *flags]) == 1
    err = capsys.readouterr().err
    assert "no changes recorded for scripted_accounts 404" in err
    assert "no changes recorded for actor nobody" in err


def test_cli_missing_tables_is_a_configuration_error(
    cassandra_contact: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A keyspace without the audit tables exits 2 and says to run schema apply."""
    host, port = split_contact(cassandra_contact)
    argv = [
        "transaction",
        str(uuid.uuid4()),
        "--store",
        "cassandra",
        "--cassandra-hosts",
        host,
        "--cassandra-port",
        str(port),
        "--local-dc",
        CASSANDRA_LOCAL_DC,
        "--protocol-version",
        "5",
        "--keyspace",
        "sqla_audit_missing_" + uuid.uuid4().hex[:8],
    ]
    assert main(argv) == 2
    assert "schema apply" in capsys.readouterr().err


def test_cli_unreachable_cassandra_exits_3(
    cassandra_contact: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Cassandra address where nothing listens exits 3 with the reason."""
    with socket.socket() as probe:  # a loopback port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [
        "transaction",
        str(uuid.uuid4()),
        "--store",
        "cassandra",
        "--cassandra-hosts",
        "127.0.0.1",
        "--cassandra-port",
        str(port),
        "--protocol-version",
        "5",
    ]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("sqla-audit: error: cannot connect to Cassandra")
    assert err.count("\n") == 1
