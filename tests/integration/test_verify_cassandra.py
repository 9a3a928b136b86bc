"""``sqla-audit verify`` against real Cassandra: an untouched store passes, a record edited in
place and an event deleted from a transaction are found; ``schema migrate`` adds the seal
table to a keyspace made before it existed."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cassandra_support import cassandra_config, split_contact

from consumer.cli import main
from consumer.differ import records_for_event
from consumer.failures import EXIT_OK, EXIT_VERIFY_FAILED
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sinks.migrate import migrate
from consumer.testing import make_event
from consumer.verify import StoreVerifier
from sqla_audit.events import ChangeEvent
from sqla_audit.signing import EventSigner, Keyring

if TYPE_CHECKING:
    from cassandra.cluster import Session

KEY = b"cassandra-verify-key-0123456789ab"
RING = Keyring(signing_key_id="c1", keys={"c1": KEY})
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def store(cassandra_contact: str, cassandra_keyspace: str) -> Iterator[CassandraStore]:
    config = cassandra_config(cassandra_contact, cassandra_keyspace, request_timeout=5.0)
    apply_schema(config)
    made = CassandraStore.connect(config)
    yield made
    made.close()


def transaction(table: str, count: int) -> list[ChangeEvent]:
    """``count`` signed events of one transaction, one record each, actor alice."""
    txn = uuid.uuid4()
    events = [
        dataclasses.replace(
            make_event(
                table=table,
                record_id=str(i),
                committed_at=T0,
                transaction_id=txn,
                sequence=i,
                after={"id": str(i), "owner": "zoë", "balance": 20, "doc": {"n": [1, 2.5]}},
            ),
            transaction_event_count=count,
        )
        for i in range(count)
    ]
    return EventSigner(RING).sign(events)


def write(store: CassandraStore, events: list[ChangeEvent]) -> None:
    store.write([record for event in events for record in records_for_event(event)])


def _cli(monkeypatch: pytest.MonkeyPatch, contact: str, keyspace: str, *args: str) -> int:
    host, port = split_contact(contact)
    monkeypatch.setenv("SQLA_AUDIT_SIGNING_KEYS", f"c1={base64.b64encode(KEY).decode()}")
    return main(
        [
            "verify",
            *args,
            "--cassandra-hosts",
            host,
            "--cassandra-port",
            str(port),
            "--keyspace",
            keyspace,
        ]
    )


def test_untouched_store_verifies(
    store: CassandraStore,
    cassandra_contact: str,
    cassandra_keyspace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every record, actor window, transaction and table window of an untouched keyspace
    verifies, through the API and the command."""
    table = f"t_{uuid.uuid4().hex[:8]}"
    events = transaction(table, 3)
    write(store, events)
    verifier = StoreVerifier(store, RING)
    since = T0 - dt.timedelta(minutes=1)
    for report in (
        verifier.record("billing", table, "0"),
        verifier.actor("alice", since=since),
        verifier.transaction(events[0].transaction_id),
        verifier.table("billing", table, since=since),
    ):
        assert report.ok, report.findings
    assert verifier.table("billing", table, since=since).valid == 3
    code = _cli(
        monkeypatch,
        cassandra_contact,
        cassandra_keyspace,
        "transaction",
        str(events[0].transaction_id),
    )
    assert code == EXIT_OK, capsys.readouterr()


def test_a_record_edited_in_cassandra_is_found(
    store: CassandraStore,
    cassandra_session: Session,
    cassandra_keyspace: str,
    cassandra_contact: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value changed in place in the history table is found by ``verify record`` (exit
    5, the record named); the same edit in the by-actor view is found by ``verify actor``."""
    table = f"t_{uuid.uuid4().hex[:8]}"
    events = transaction(table, 2)
    write(store, events)
    row = cassandra_session.execute(
        f"SELECT event_time FROM {cassandra_keyspace}.changes_by_service_record "
        "WHERE service = 'billing' AND table_name = %s AND record_id = '1'",
        (table,),
    ).one()
    after = json.dumps({"id": "1", "owner": "zoë", "balance": 2_000_000, "doc": {"n": [1, 2.5]}})
    cassandra_session.execute(
        f"UPDATE {cassandra_keyspace}.changes_by_service_record SET after = %s "
        "WHERE service = 'billing' AND table_name = %s AND record_id = '1' "
        "AND event_time = %s AND event_id = %s",
        (after, table, row.event_time, events[1].event_id),
    )
    code = _cli(monkeypatch, cassandra_contact, cassandra_keyspace, "record", table, "1")
    out = capsys.readouterr().out
    assert code == EXIT_VERIFY_FAILED
    assert f"modified: billing {table} 1 event {events[1].event_id}" in out
    report = StoreVerifier(store, RING).record("billing", table, "0")
    assert report.ok, report.findings  # the neighbour is untouched
    cassandra_session.execute(
        f"UPDATE {cassandra_keyspace}.changes_by_actor SET actor_attributes = %s "
        "WHERE actor_id = 'alice' AND day = %s AND event_time = %s AND event_id = %s",
        ('{"role": "admin"}', T0.date(), row.event_time, events[0].event_id),
    )
    actor = StoreVerifier(store, RING).actor("alice", since=T0 - dt.timedelta(minutes=1))
    modified = {f.event_id for f in actor.findings if f.kind == "modified"}
    assert events[0].event_id in modified


def test_an_event_deleted_from_a_transaction_is_found(
    store: CassandraStore,
    cassandra_session: Session,
    cassandra_keyspace: str,
    cassandra_contact: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Deleting one event's rows (history and transaction view) leaves a transaction whose
    signed count says one is missing: ``verify`` names the transaction and the sequence."""
    table = f"t_{uuid.uuid4().hex[:8]}"
    events = transaction(table, 3)
    write(store, events)
    gone = events[1]
    cassandra_session.execute(
        f"DELETE FROM {cassandra_keyspace}.changes_by_transaction "
        "WHERE transaction_id = %s AND sequence = 1 AND event_id = %s",
        (gone.transaction_id, gone.event_id),
    )
    cassandra_session.execute(
        f"DELETE FROM {cassandra_keyspace}.changes_by_service_record "
        "WHERE service = 'billing' AND table_name = %s AND record_id = '1'",
        (table,),
    )
    code = _cli(monkeypatch, cassandra_contact, cassandra_keyspace, "record", table, "0", "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == EXIT_VERIFY_FAILED
    assert [f["kind"] for f in report["findings"]] == ["missing_events"]
    assert report["findings"][0]["transaction_id"] == str(gone.transaction_id)
    assert "2 of 3" in report["findings"][0]["detail"]


def test_schema_migrate_adds_the_seal_table(
    cassandra_contact: str, cassandra_session: Session
) -> None:
    """A layout-2 keyspace made before seals existed gets ``event_seals`` from ``schema
    migrate``, and signed records can then be written and verified."""
    keyspace = f"sqla_audit_seal_{uuid.uuid4().hex[:10]}"
    config = cassandra_config(cassandra_contact, keyspace, request_timeout=5.0)
    apply_schema(config)
    try:
        cassandra_session.execute(f"DROP TABLE {keyspace}.event_seals")
        migrate(config, progress=lambda _line: None)
        made = CassandraStore.connect(config)
        try:
            events = transaction("t_migrated", 1)
            write(made, events)
            assert StoreVerifier(made, RING).transaction(events[0].transaction_id).ok
        finally:
            made.close()
    finally:
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
