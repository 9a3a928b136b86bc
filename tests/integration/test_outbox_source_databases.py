"""The embedded outbox source on real databases: SKIP LOCKED leases shared by several readers."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.records import AuditRecord
from consumer.sinks.base import RecordRejected
from consumer.sinks.memory import MemoryStore
from consumer.sources.outbox import OutboxSource
from consumer.testing import make_event
from consumer.worker import Worker
from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.outbox import (
    OutboxWriter,
    create_outbox_table,
    outbox_counts,
    outbox_table,
    outbox_tally,
)

LOCKING = [
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=LOCKING)
def locking_url(request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL or MariaDB database (per module) with an empty outbox table."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(url)
    table = create_outbox_table(engine)
    with engine.begin() as connection:
        connection.execute(table.delete())
    engine.dispose()
    return url


@pytest.fixture
def engine_factory() -> Iterator[Callable[[str], sa.Engine]]:
    """Engines standing for separate consumer processes (each with its own pool)."""
    made: list[sa.Engine] = []

    def make(url: str) -> sa.Engine:
        engine = sa.create_engine(url, pool_size=10)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def write_events(engine: sa.Engine, events: list[ChangeEvent], **writer: Any) -> None:
    """One row per event (layout 1) unless told: most tests here are about rows and locks."""
    writer.setdefault("layout", 1)
    with engine.begin() as connection:
        OutboxWriter(**writer).write(connection, events)


def events(count: int) -> list[ChangeEvent]:
    return [make_event(operation=Operation.INSERT, record_id=str(i)) for i in range(count)]


def test_two_sources_never_share_rows(
    locking_url: str, engine_factory: Callable[[str], sa.Engine]
) -> None:
    """A second reader skips the rows the first one holds, and gets them once it lets go."""
    first_engine, second_engine = engine_factory(locking_url), engine_factory(locking_url)
    write_events(first_engine, events(20))
    first, second = OutboxSource(first_engine), OutboxSource(second_engine)
    try:
        assert first.locks_rows
        held = first.receive(10, 0)
        taken = second.receive(10, 0)
        assert len(held) == len(taken) == 10
        assert not {m.message_id for m in held} & {m.message_id for m in taken}
        assert second.receive(10, 0) == []
        second.ack(taken)
        first.close()  # like a crash: the lease's transaction rolls back
        again = second.receive(20, 0)
        assert sorted(m.message_id for m in again) == sorted(m.message_id for m in held)
        second.ack(again)
    finally:
        first.close()
        second.close()
    assert outbox_counts(first_engine) == (0, 0)


def test_open_lease_does_not_block_the_application(
    locking_url: str, engine_factory: Callable[[str], sa.Engine]
) -> None:
    """While a consumer holds a batch, the application keeps committing outbox rows."""
    engine = engine_factory(locking_url)
    write_events(engine, events(5))
    source = OutboxSource(engine_factory(locking_url))
    try:
        held = source.receive(10, 0)
        assert len(held) == 5
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            else:
                connection.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 5"))
            OutboxWriter().write(connection, events(3))
        assert outbox_counts(engine) == (8, 0)
        source.ack(held)
        assert outbox_counts(engine) == (3, 0)
    finally:
        source.close()


class CountingStore(MemoryStore):
    """A memory store that counts how many times each event was written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter[uuid.UUID] = Counter()
        self._count_lock = threading.Lock()

    def write(self, records: Iterable[AuditRecord]) -> None:
        batch = list(records)
        super().write(batch)
        with self._count_lock:
            self.writes.update(record.event_id for record in batch)


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)


def test_two_workers_write_each_event_exactly_once(
    locking_url: str, engine_factory: Callable[[str], sa.Engine]
) -> None:
    """Two consumers with three pollers each drain a growing outbox; no event is taken twice."""
    app = engine_factory(locking_url)
    written = events(300)
    store = CountingStore()
    sources = [OutboxSource(engine_factory(locking_url), poll_interval=0.02) for _ in range(2)]
    workers = [
        Worker(source, store, concurrency=3, batch_size=10, wait_seconds=0.1) for source in sources
    ]
    for worker in workers:
        worker.start()
    try:
        for start in range(0, 300, 25):
            write_events(app, written[start : start + 25])
        wait_for(lambda: len(store.writes) == 300 and outbox_counts(app) == (0, 0))
    finally:
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(30)
        for source in sources:
            source.close()
    assert set(store.writes) == {event.event_id for event in written}
    assert set(store.writes.values()) == {1}


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "outbox_source_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(50))
    balance: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))


def test_application_in_outbox_mode_is_consumed_directly(
    db_url: str, engine_factory: Callable[[str], sa.Engine]
) -> None:
    """On SQLite, PostgreSQL and MariaDB: committed changes reach the store with their actor,
    a rolled-back change does not, and the outbox ends empty."""
    engine = engine_factory(db_url)
    table = outbox_table(Base.metadata)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    install_audit(maker, outbox=OutboxWriter(table), service="bank")
    try:
        with audit_context(actor="alice"), maker.begin() as session:
            session.add(Account(id=1, owner="ann", balance=Decimal("1.00")))
        with audit_context(actor="mallory"), maker() as session:
            session.get_one(Account, 1).owner = "mallory"
            session.flush()
            session.rollback()
        with audit_context(actor="bob"), maker.begin() as session:
            session.get_one(Account, 1).balance = Decimal("2.50")
    finally:
        uninstall_audit(maker)
    source = OutboxSource(engine_factory(db_url), table=table)
    store = MemoryStore()
    worker = Worker(source, store, concurrency=1, wait_seconds=0)
    try:
        while messages := source.receive(10, 0):
            worker.process(messages)
    finally:
        source.close()
    history = store.history("bank", "outbox_source_accounts", "1").items
    assert [(r.operation, r.actor_id) for r in reversed(history)] == [
        (Operation.INSERT, "alice"),
        (Operation.UPDATE, "bob"),
    ]
    assert outbox_counts(engine, table) == (0, 0)


class RefusingStore(CountingStore):
    """Refuses, for good, every write holding a record of the table ``refused``, with a
    reason no text column takes as is (a lone surrogate, a NUL)."""

    def write(self, records: Iterable[AuditRecord]) -> None:
        batch = list(records)
        if any(record.table == "refused" for record in batch):
            raise RecordRejected("value out of range: '\ud800' \x00")
        super().write(batch)


def test_a_poison_row_is_parked_and_its_batch_stored(
    locking_url: str, engine_factory: Callable[[str], sa.Engine]
) -> None:
    """A row the store refuses for good is parked with its reason inside the lease that
    deletes the valid rows of its batch; none of them is retried."""
    app = engine_factory(locking_url)
    valid = events(19)
    poison = make_event(table="refused", record_id="p")
    write_events(app, [*valid[:7], poison, *valid[7:]])
    store = RefusingStore()
    source = OutboxSource(engine_factory(locking_url), poll_interval=0.02)
    worker = Worker(source, store, concurrency=2, batch_size=10, wait_seconds=0.1)
    worker.start()
    try:
        wait_for(lambda: outbox_counts(app) == (0, 1), 60)
    finally:
        worker.stop()
        worker.join(30)
        source.close()
    assert set(store.writes) == {event.event_id for event in valid}
    assert set(store.writes.values()) == {1}
    table = outbox_table()
    with app.connect() as connection:
        [(event_id, error)] = connection.execute(
            sa.select(table.c.event_id, table.c.last_error).where(table.c.failed_at.is_not(None))
        ).all()
    assert event_id == str(poison.event_id)
    assert "value out of range" in error


def test_a_poison_event_of_a_transaction_row_is_parked_alone(
    locking_url: str, engine_factory: Callable[[str], sa.Engine]
) -> None:
    """In a row holding a whole transaction (layout 2), the event the store refuses is parked
    in a row of its own, in the lease that deletes the row; its 19 neighbours are stored once."""
    app = engine_factory(locking_url)
    valid = events(19)
    poison = make_event(table="refused", record_id="p")
    write_events(app, [*valid[:7], poison, *valid[7:]], layout=2)
    write_events(app, events(2), layout=1)  # rows as an older producer wrote them
    assert outbox_tally(app) == (22, 0, 3, 0)
    store = RefusingStore()
    source = OutboxSource(engine_factory(locking_url), poll_interval=0.02)
    worker = Worker(source, store, concurrency=2, batch_size=10, wait_seconds=0.1)
    worker.start()
    try:
        wait_for(lambda: outbox_counts(app) == (0, 1), 60)
    finally:
        worker.stop()
        worker.join(30)
        source.close()
    assert set(store.writes.values()) == {1}
    assert {event.event_id for event in valid} <= set(store.writes)
    assert len(store.writes) == 21
    table = outbox_table()
    with app.connect() as connection:
        [(event_id, payload, error)] = connection.execute(
            sa.select(table.c.event_id, table.c.payload, table.c.last_error)
        ).all()
    assert event_id == str(poison.event_id)
    assert payload == poison.to_json()
    assert "value out of range" in error
