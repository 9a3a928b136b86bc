"""Outbox mode writes wire texts made straight from the captured changes, the same bytes as
the envelopes' ``to_json``, through the writer's ``write_encoded``."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sqla_audit.capture
import sqla_audit.delivery
from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.changes import RowChange
from sqla_audit.delivery import (
    EncodedEvents,
    EncodedTransactionalWriter,
    InMemoryTransactionalWriter,
    build_events,
    encode_changes,
)
from sqla_audit.events import Actor, ChangeEvent, Operation, new_event_ids
from sqla_audit.outbox import LAYOUT_EVENT, OutboxWriter, create_outbox_table, outbox_table
from sqla_audit.signing import EventSigner, Keyring

NOW = dt.datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
LATER = dt.datetime(2026, 5, 6, 7, 8, 10, tzinfo=dt.UTC)


def _changes() -> list[RowChange]:
    """Changes with what the envelope can hold: shared and distinct actors and metadata,
    proxies, masked columns, a moved key, awkward text."""
    actor = Actor("u-1", {"roles": ["a", "b"], "name": "Zoë"})
    shared = {"tenant": "t\u2028", "n": 1.5}
    return [
        RowChange(
            table="items",
            operation=Operation.INSERT,
            record_id="1",
            primary_key={"id": 1},
            before=None,
            after={"id": 1, "name": "é\u2603", "price": {"$type": "decimal", "v": "1.10"}},
            changed_columns=("id", "name", "price"),
            occurred_at=NOW,
            actor=actor,
            request_id="req-1",
            metadata=shared,
        ),
        RowChange(
            table="items",
            operation=Operation.UPDATE,
            record_id="2",
            previous_record_id="1",
            previous_primary_key={"id": 1},
            primary_key=MappingProxyType({"id": 2}),
            before=MappingProxyType({"id": 1, "secret": None}),
            after={"id": 2, "secret": None},
            changed_columns=("id",),
            masked_columns=("secret",),
            occurred_at=NOW,
            actor=actor,
            request_id="req-1",
            metadata=shared,
        ),
        RowChange(
            table='odd "table"',
            operation=Operation.DELETE,
            record_id="a:b%3A",
            primary_key={"a": "a", "b": "b:"},
            before={"a": "a", "b": "b:", "big": 2**70, "f": 1e-07},
            after=None,
            changed_columns=(),
            occurred_at=LATER,
            metadata=MappingProxyType({"other": [1, None, True]}),
        ),
    ]


@pytest.fixture
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Event ids handed out again from the start on every call, so two encodings of the
    same changes get the same ids."""
    ids = new_event_ids(10)
    monkeypatch.setattr(sqla_audit.delivery, "new_event_ids", lambda count: ids[:count])
    texts = [str(i) for i in ids]
    monkeypatch.setattr(sqla_audit.delivery, "new_event_id_texts", lambda count: texts[:count])
    return ids


def _reference(event: ChangeEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)


def test_encoded_changes_are_the_envelopes_json(fixed_ids: list[uuid.UUID]) -> None:
    """encode_changes writes, per change, exactly the JSON of the envelope build_events makes."""
    txn = uuid.uuid4()
    changes = _changes()
    encoded = encode_changes(changes, service="svc", committed_at=LATER, transaction_id=txn)
    events = build_events(changes, service="svc", committed_at=LATER, transaction_id=txn)
    assert list(encoded.texts) == [_reference(event) for event in events]
    assert list(encoded.texts) == [event.to_json() for event in events]
    assert list(encoded.event_ids) == [str(i) for i in fixed_ids[:3]]
    assert list(encoded.transaction_ids) == [str(txn)] * 3
    assert list(encoded.tables) == [c.table for c in changes]
    assert list(encoded.record_ids) == [c.record_id for c in changes]


def test_encoded_signed_changes_are_the_signed_envelopes_json(fixed_ids: list[uuid.UUID]) -> None:
    """With a signer, the texts are the signed envelopes' JSON (count and signature last)."""
    signer = EventSigner(Keyring("k1", {"k1": b"0123456789abcdef0123456789abcdef"}))
    txn = uuid.uuid4()
    changes = _changes()
    encoded = encode_changes(
        changes, service="svc", committed_at=LATER, transaction_id=txn, signer=signer
    )
    events = build_events(
        changes, service="svc", committed_at=LATER, transaction_id=txn, signer=signer
    )
    assert all(event.signature is not None for event in events)
    assert list(encoded.texts) == [_reference(event) for event in events]


def test_encoded_events_of_envelopes_follow_the_sequence() -> None:
    """EncodedEvents.of_events orders envelopes by sequence and takes each one's fields."""
    events = build_events(_changes(), service="svc")
    encoded = EncodedEvents.of_events(list(reversed(events)))
    assert list(encoded.texts) == [event.to_json() for event in events]
    assert list(encoded.event_ids) == [str(event.event_id) for event in events]
    assert list(encoded.transaction_ids) == [str(event.transaction_id) for event in events]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class RecordingWriter(OutboxWriter):
    """An OutboxWriter that notes which of its entry points capture called."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.calls: list[str] = []

    def write(self, connection: sa.Connection, events: Any) -> None:
        self.calls.append("write")
        super().write(connection, events)

    def write_encoded(self, connection: sa.Connection, events: EncodedEvents) -> None:
        self.calls.append("write_encoded")
        super().write_encoded(connection, events)


@pytest.fixture
def maker(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A SQLite file database with the outbox table and the items table."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    Base.metadata.create_all(engine)
    yield sessionmaker(engine)
    engine.dispose()


def _payloads(maker: sessionmaker[Session]) -> list[dict[str, Any]]:
    table = outbox_table()
    with maker() as session:
        rows = session.execute(sa.select(table).order_by(table.c.id)).mappings().all()
    return [dict(row) for row in rows]


def _commit_items(maker: sessionmaker[Session]) -> None:
    with audit_context(actor=Actor("u-1", {"role": "clerk"}), request_id="r-1"), maker() as s:
        s.add_all([Item(id=i, name=f"n{i}\u00e9") for i in range(3)])
        s.commit()
    with maker() as s:
        s.get_one(Item, 1).name = "renamed"
        s.commit()


def test_outbox_mode_writes_encoded_changes(maker: sessionmaker[Session]) -> None:
    """Capture hands an OutboxWriter the encoded transaction, never envelopes to encode."""
    writer = RecordingWriter()
    install_audit(maker, outbox=writer, service="svc")
    try:
        _commit_items(maker)
    finally:
        uninstall_audit(maker)
    assert writer.calls == ["write_encoded", "write_encoded"]
    rows = _payloads(maker)
    assert [row["event_count"] for row in rows] == [3, 1]
    first = json.loads(rows[0]["payload"])
    assert [event["record_id"] for event in first] == ["0", "1", "2"]
    assert rows[0]["event_id"] == first[0]["event_id"]
    assert rows[0]["transaction_id"] == first[0]["transaction_id"]


@pytest.mark.parametrize("layout", [LAYOUT_EVENT, 2])
def test_outbox_rows_hold_the_bytes_of_the_envelopes(
    maker: sessionmaker[Session], layout: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows written from encoded changes are the rows writing the envelopes gave, byte
    for byte (same ids and clocks for both runs)."""
    ids = new_event_ids(8)
    monkeypatch.setattr(sqla_audit.delivery, "new_event_ids", lambda n: ids[:n])
    texts = [str(i) for i in ids]
    monkeypatch.setattr(sqla_audit.delivery, "new_event_id_texts", lambda n: texts[:n])
    monkeypatch.setattr(sqla_audit.delivery, "new_event_id", lambda: ids[7])
    monkeypatch.setattr(sqla_audit.delivery, "utcnow", lambda: LATER)
    monkeypatch.setattr(sqla_audit.capture, "utcnow", lambda: NOW)
    envelopes = InMemoryTransactionalWriter()
    install_audit(maker, outbox=envelopes, service="svc")
    try:
        _commit_items(maker)
    finally:
        uninstall_audit(maker)
    with maker() as s:
        s.execute(sa.delete(Item))
        s.commit()
    writer = OutboxWriter(layout=layout)
    install_audit(maker, outbox=writer, service="svc")
    try:
        _commit_items(maker)
    finally:
        uninstall_audit(maker)
    expected = [[event.to_json() for event in batch] for batch in envelopes.batches]
    rows = _payloads(maker)
    if layout == LAYOUT_EVENT:
        assert [row["payload"] for row in rows] == [t for batch in expected for t in batch]
    else:
        assert [row["payload"] for row in rows] == ["[" + ",".join(expected[0]) + "]", *expected[1]]


def test_writers_without_write_encoded_still_get_envelopes(maker: sessionmaker[Session]) -> None:
    """A TransactionalWriter with only write() keeps receiving ChangeEvents."""
    writer = InMemoryTransactionalWriter()
    assert not isinstance(writer, EncodedTransactionalWriter)
    assert isinstance(OutboxWriter(), EncodedTransactionalWriter)
    install_audit(maker, outbox=writer, service="svc")
    try:
        _commit_items(maker)
    finally:
        uninstall_audit(maker)
    assert [len(batch) for batch in writer.batches] == [3, 1]
    assert all(isinstance(event, ChangeEvent) for event in writer.events)
