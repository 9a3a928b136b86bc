"""Signed events through the transactional outbox on PostgreSQL: forged rows are parked under
``require``, the application's signed events are stored and verify."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.decoding import Decoder
from consumer.records import AuditRecord
from consumer.sinks.sqlite import SQLiteStore
from consumer.sources.outbox import OutboxSource
from consumer.testing import make_event
from consumer.verification import EventVerifier
from consumer.verify import StoreVerifier
from consumer.worker import Worker
from sqla_audit import install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import OutboxWriter, create_outbox_table, parked_rows
from sqla_audit.signing import EventSigner, Keyring

KEY = b"outbox-signing-key-0123456789abcdef"
RING = Keyring(signing_key_id="ob1", keys={"ob1": KEY})


class Base(DeclarativeBase):
    pass


class Invoice(Base):
    __tablename__ = "signed_invoices"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    status: Mapped[str]
    total: Mapped[float]


@pytest.fixture
def engine(postgres_url: str) -> Iterator[sa.Engine]:
    made = sa.create_engine(postgres_url)
    table = create_outbox_table(made)
    Base.metadata.drop_all(made)
    Base.metadata.create_all(made)
    with made.begin() as connection:
        connection.execute(table.delete())
    yield made
    made.dispose()


def test_forged_outbox_rows_are_parked_and_signed_rows_stored(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """Under ``require``: the application's signed transaction (one outbox row) is stored and
    verifies; a row holding an unsigned event and one holding a signed event whose total was
    changed, inserted straight into the outbox table, are parked with a ``signature:``
    reason."""
    maker = sessionmaker(engine)
    install_audit(maker, outbox=OutboxWriter(), service="invoicing", signing=EventSigner(RING))
    try:
        with maker.begin() as session:
            session.add_all(
                [Invoice(id=1, status="open", total=10.5), Invoice(id=2, status="open", total=1e-7)]
            )
        with maker.begin() as session:
            session.get_one(Invoice, 1).status = "paid"
    finally:
        uninstall_audit(maker)
    genuine = EventSigner(RING).sign(
        [
            dataclasses.replace(
                make_event(table="signed_invoices", record_id="7"), transaction_event_count=1
            )
        ]
    )[0]
    tampered = json.loads(genuine.to_json())
    tampered["after"]["balance"] = 1_000_000
    forged = [make_event(table="signed_invoices", record_id="6"), ChangeEvent.from_dict(tampered)]
    with engine.begin() as connection:
        OutboxWriter(layout=1).write(connection, forged)
    store = SQLiteStore(tmp_path / "audit.db")
    source = OutboxSource(engine, poll_interval=0.05)
    decoder = Decoder(verifier=EventVerifier("require", RING))
    worker = Worker(source, store, decoder=decoder, concurrency=1, wait_seconds=0.2)
    try:
        worker.run(until_empty=True)
        report = StoreVerifier(store, RING).record("invoicing", "signed_invoices", "1")
        stored = {record.record_id for record in _all(store)}
    finally:
        store.close()
    assert stored == {"1", "2"}
    assert report.ok, report.findings
    assert report.valid == 2  # the insert and the update of invoice 1
    assert report.transactions == 2
    parked = parked_rows(engine)
    assert sorted(row.record_id for row in parked) == ["6", "7"]
    assert all((row.last_error or "").startswith("signature:") for row in parked), parked


def _all(store: SQLiteStore) -> list[AuditRecord]:
    """Every record of the invoices table."""
    since = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return list(store.by_table("invoicing", "signed_invoices", since=since, limit=100).items)
