"""``consumer.verify``: re-checking stored records against their signatures (memory and
SQLite stores; Cassandra in tests/integration/test_verify_cassandra.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.differ import records_for_event
from consumer.records import MOVE_EVENT_KEY, MOVED_TO_KEY, AuditRecord, departure_event_id
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_event
from consumer.verify import StoreVerifier, rebuild_event
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.signing import EventSigner, Keyring, event_content

KEY = b"v" * 32
RING = Keyring(signing_key_id="k1", keys={"k1": KEY})
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def signed_transaction(
    count: int, *, table: str = "accounts", key_id: str = "k1", start: int = 0
) -> list[ChangeEvent]:
    """``count`` signed events of one transaction (one record each)."""
    ring = Keyring(signing_key_id=key_id, keys={key_id: KEY})
    transaction = uuid.uuid4()
    events = [
        dataclasses.replace(
            make_event(
                table=table,
                record_id=str(start + i),
                actor="alice",
                committed_at=T0 + dt.timedelta(seconds=start),
                transaction_id=transaction,
                sequence=i,
                after={"id": str(start + i), "owner": "zoë", "balance": 20, "ratio": 0.1},
            ),
            transaction_event_count=count,
        )
        for i in range(count)
    ]
    return EventSigner(ring).sign(events)


def _records(events: list[ChangeEvent]) -> list[AuditRecord]:
    return [record for event in events for record in records_for_event(event)]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    sqlite_store = SQLiteStore(tmp_path / "audit.db")
    yield sqlite_store
    sqlite_store.close()


def test_rebuilt_event_has_the_signed_content_of_the_original() -> None:
    """A record and its seal rebuild exactly the event that was signed."""
    for event in signed_transaction(3):
        (record,) = records_for_event(event)
        assert record.seal is not None
        rebuilt = rebuild_event(record, record.seal)
        assert event_content(rebuilt) == event_content(event)
        assert rebuilt.to_json() == dataclasses.replace(event, signature=None).to_json()


def test_untouched_store_verifies(store: Any) -> None:
    """Every signed record of an untouched store verifies, in every kind of window."""
    events = signed_transaction(3)
    store.write(_records(events))
    verifier = StoreVerifier(store, RING)
    for report in (
        verifier.record("billing", "accounts", "1"),
        verifier.actor("alice", since=T0 - dt.timedelta(days=1)),
        verifier.transaction(events[0].transaction_id),
        verifier.table("billing", "accounts", since=T0 - dt.timedelta(days=1)),
    ):
        assert report.ok, report.findings
        assert report.valid >= 1
    assert verifier.transaction(events[0].transaction_id).valid == 3


def test_unsigned_records_and_unknown_keys_are_reported(store: Any) -> None:
    """Unsigned records and records signed by a key the verifier does not know are findings."""
    store.write(_records(signed_transaction(1, key_id="retired", table="t2")))
    store.write(records_for_event(make_event(table="t2", record_id="9", committed_at=T0)))
    report = StoreVerifier(store, RING).table("billing", "t2", since=T0 - dt.timedelta(days=1))
    kinds = sorted(finding.kind for finding in report.findings)
    assert kinds == ["unknown_key", "unsigned"]
    assert not report.ok


def _edit_sqlite(store: SQLiteStore, sql: str, params: tuple[Any, ...]) -> None:
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute(sql, params)
    conn.close()


def test_a_record_edited_in_sqlite_is_found(tmp_path: Path) -> None:
    """Editing a stored record's values, actor or displayed change in the SQLite file is
    reported as a modified record, naming the record."""
    store = SQLiteStore(tmp_path / "audit.db")
    events = signed_transaction(3)
    store.write(_records(events))
    store.close()
    target = str(events[1].event_id)
    store = SQLiteStore(tmp_path / "audit.db")
    for sql in (
        "UPDATE audit_records SET actor_id = 'mallory' WHERE event_id = ?",
        "UPDATE audit_records SET \"after\" = replace(\"after\", '20', '2000') WHERE event_id = ?",
        "UPDATE audit_records SET changes = replace(changes, '20', '9') WHERE event_id = ?",
    ):
        _edit_sqlite(store, sql, (target,))
        report = StoreVerifier(store, RING).transaction(events[0].transaction_id)
        modified = [f for f in report.findings if f.kind == "modified"]
        assert [f.event_id for f in modified] == [events[1].event_id], sql
        assert modified[0].record_id == "1"
    store.close()


def test_a_deleted_event_inside_a_transaction_is_found(store: Any, tmp_path: Path) -> None:
    """A transaction that lost an event is reported with the missing sequence numbers."""
    events = signed_transaction(4)
    store.write(_records([events[0], events[1], events[3]]))  # sequence 2 never stored
    report = StoreVerifier(store, RING).record("billing", "accounts", "0")
    missing = [f for f in report.findings if f.kind == "missing_events"]
    assert len(missing) == 1
    assert missing[0].transaction_id == events[0].transaction_id
    assert "2" in missing[0].detail
    assert "3 of 4" in missing[0].detail


def test_a_forged_record_with_a_copied_seal_is_found(store: Any) -> None:
    """Reusing a genuine seal for a forged record (another actor) does not verify."""
    (event,) = signed_transaction(1, table="t3")
    (record,) = records_for_event(event)
    forged = dataclasses.replace(record, actor_id="mallory", event_id=uuid.uuid4())
    forged = dataclasses.replace(forged, seal=record.seal)
    store.write([forged])
    report = StoreVerifier(store, RING).table("billing", "t3", since=T0 - dt.timedelta(days=1))
    assert [f.kind for f in report.findings] == ["modified"]


def test_departures_are_not_findings(store: Any) -> None:
    """The derived record a key change leaves under the old id is not a finding."""
    event = dataclasses.replace(
        make_event(
            table="t4",
            record_id="new",
            previous_record_id="old",
            committed_at=T0,
            operation=Operation.UPDATE,
        ),
        transaction_event_count=1,
    )
    (signed,) = EventSigner(RING).sign([event])
    store.write(records_for_event(signed))
    report = StoreVerifier(store, RING).record("billing", "t4", "old")
    assert report.ok, report.findings
    assert report.derived == 1


def test_a_forged_departure_is_found(store: Any) -> None:
    """A record shaped like a key change's departure, but not derived from a signed event,
    is reported instead of being let through as derived."""
    fake_original = uuid.uuid4()
    forged = records_for_event(make_event(table="t5", record_id="x", committed_at=T0))[0]
    forged = dataclasses.replace(
        forged,
        operation=Operation.DELETE,
        after=None,
        event_id=departure_event_id(fake_original),
        metadata={MOVED_TO_KEY: "y", MOVE_EVENT_KEY: str(fake_original)},
    )
    assert forged.is_departure
    store.write([forged])
    report = StoreVerifier(store, RING).record("billing", "t5", "x")
    assert [f.kind for f in report.findings] == ["modified"]
    assert report.derived == 0
