"""The embedded outbox source on SQLite: leases, ack/release/reject, and the worker on top."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import String, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.sinks.memory import MemoryStore
from consumer.sources.base import Message, MessageSource
from consumer.sources.outbox import OutboxSource
from consumer.testing import make_event
from consumer.worker import Worker
from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.errors import ConfigurationError, TransportError
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    made = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(made)
    yield made
    made.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(engine: sa.Engine, clock: FakeClock) -> Iterator[OutboxSource]:
    made = OutboxSource(engine, poll_interval=0.01, clock=clock)
    yield made
    made.close()


def write_events(engine: sa.Engine, events: list[ChangeEvent]) -> None:
    """One row per event (layout 1): these tests are about rows and leases."""
    with engine.begin() as connection:
        OutboxWriter(layout=1).write(connection, events)


def events(count: int) -> list[ChangeEvent]:
    return [
        make_event(operation=Operation.INSERT, record_id=str(i), sequence=i) for i in range(count)
    ]


def row_count(engine: sa.Engine) -> int:
    return sum(outbox_counts(engine))


def test_it_is_a_message_source(source: OutboxSource) -> None:
    """OutboxSource implements the MessageSource protocol."""
    assert isinstance(source, MessageSource)


def test_receive_hands_out_pending_rows_in_id_order(
    engine: sa.Engine, source: OutboxSource
) -> None:
    """Rows come out oldest first, one message per row, body = the event JSON."""
    written = events(5)
    write_events(engine, written)
    first = source.receive(3, 0)
    second = source.receive(10, 0)
    assert [m.message_id for m in first + second] == [str(e.event_id) for e in written]
    assert [ChangeEvent.from_json(m.body) for m in first + second] == written
    assert first[0].attributes["table"] == "accounts"
    assert first[0].attributes["record_id"] == "0"
    assert first[0].receive_count == 1


def test_empty_outbox_returns_no_messages(source: OutboxSource) -> None:
    """receive with wait 0 on an empty outbox returns an empty list at once."""
    assert source.receive(10, 0) == []


def test_leased_rows_are_not_handed_out_twice(engine: sa.Engine, source: OutboxSource) -> None:
    """Rows of an unsettled batch are not received again by the same source."""
    write_events(engine, events(2))
    assert len(source.receive(10, 0)) == 2
    assert source.receive(10, 0) == []


def test_ack_deletes_the_rows(engine: sa.Engine, source: OutboxSource) -> None:
    """Acknowledged rows are deleted; the others stay."""
    write_events(engine, events(3))
    messages = source.receive(10, 0)
    source.ack(messages[:2])
    assert row_count(engine) == 1
    source.ack(messages[2:])
    assert row_count(engine) == 0


def test_released_rows_come_back(engine: sa.Engine, source: OutboxSource) -> None:
    """A released row is pending again and is delivered again (receive_count 2)."""
    write_events(engine, events(1))
    (message,) = source.receive(10, 0)
    source.release([message], 0)
    (again,) = source.receive(10, 0)
    assert again.message_id == message.message_id
    assert again.receive_count == 2
    assert row_count(engine) == 1


def test_release_with_visibility_hides_the_row_until_then(
    engine: sa.Engine, source: OutboxSource, clock: FakeClock
) -> None:
    """Released with a visibility, the row comes back only once that time has passed."""
    write_events(engine, events(1))
    (message,) = source.receive(10, 0)
    source.release([message], 30)
    assert source.receive(10, 0) == []
    clock.now += 31
    assert [m.message_id for m in source.receive(10, 0)] == [message.message_id]


def test_reject_parks_the_row_with_the_reason(engine: sa.Engine, source: OutboxSource) -> None:
    """A rejected row is parked (failed_at, last_error) and no longer received."""
    write_events(engine, events(2))
    bad, good = source.receive(10, 0)
    source.reject([bad], "not a change event")
    source.ack([good])
    assert outbox_counts(engine) == (0, 1)
    table = outbox_table()
    with engine.connect() as connection:
        reason = connection.execute(select(table.c.last_error)).scalar_one()
    assert reason == "not a change event"
    assert source.receive(10, 0) == []


def test_settling_twice_or_with_foreign_handles_is_ignored(
    engine: sa.Engine, source: OutboxSource
) -> None:
    """A second ack, or a message this source never handed out, changes nothing."""
    write_events(engine, events(2))
    first, second = source.receive(10, 0)
    source.ack([first])
    source.ack([first])
    source.release([Message("x", "{}", handle="not ours")])
    source.reject([Message("y", "{}", handle=(999, 1))], "stale")
    assert outbox_counts(engine) == (1, 0)
    source.ack([second])
    assert row_count(engine) == 0


def test_close_leaves_unsettled_rows_pending(engine: sa.Engine) -> None:
    """Rows received but never settled stay in the outbox for the next consumer."""
    write_events(engine, events(2))
    crashed = OutboxSource(engine)
    assert len(crashed.receive(10, 0)) == 2
    crashed.close()
    crashed.close()
    assert crashed.receive(10, 0) == []
    successor = OutboxSource(engine)
    try:
        assert len(successor.receive(10, 0)) == 2
    finally:
        successor.close()


def test_receive_waits_for_rows_written_meanwhile(engine: sa.Engine) -> None:
    """With a wait, receive polls until a row arrives."""
    source = OutboxSource(engine, poll_interval=0.01)
    writer = threading.Timer(0.05, write_events, args=(engine, events(1)))
    writer.start()
    try:
        received: list[Message] = []
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            received = source.receive(10, 30)
        assert len(received) == 1
    finally:
        writer.join()
        source.close()


def test_close_interrupts_a_waiting_receive(engine: sa.Engine) -> None:
    """A receive waiting on an empty outbox returns [] when the source is closed."""
    source = OutboxSource(engine, poll_interval=0.01)
    result: list[list[Message]] = []
    thread = threading.Thread(target=lambda: result.append(source.receive(10, 60)))
    thread.start()
    source.close()
    thread.join(30)
    assert result == [[]]


def test_unreachable_database_raises_transport_error(tmp_path: Path) -> None:
    """A database that cannot be opened is a retryable TransportError."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'app.db'}")
    source = OutboxSource(engine)
    try:
        with pytest.raises(TransportError, match="reading the outbox failed"):
            source.receive(10, 0)
        with pytest.raises(TransportError, match="cannot reach"):
            source.check()
    finally:
        source.close()
        engine.dispose()


def test_check_reports_a_missing_table(tmp_path: Path, engine: sa.Engine) -> None:
    """check() passes on a ready outbox and names the create-table command when it is missing."""
    OutboxSource(engine).check()
    bare = sa.create_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    try:
        with pytest.raises(ConfigurationError, match="outbox create-table"):
            OutboxSource(bare).check()
    finally:
        bare.dispose()


def test_from_url_validates_the_url(tmp_path: Path) -> None:
    """from_url refuses malformed URLs and in-memory SQLite, and reads a named table."""
    with pytest.raises(ConfigurationError, match="invalid database URL"):
        OutboxSource.from_url("not a url")
    with pytest.raises(ConfigurationError, match="in-memory SQLite"):
        OutboxSource.from_url("sqlite://")
    with pytest.raises(ConfigurationError, match="cannot use database URL"):
        OutboxSource.from_url("nosuchdialect://x/y")
    with pytest.raises(ConfigurationError, match="poll_interval"):
        OutboxSource(sa.create_engine("sqlite://"), poll_interval=0)
    url = f"sqlite:///{tmp_path / 'named.db'}"
    engine = sa.create_engine(url)
    table = create_outbox_table(engine, outbox_table(sa.MetaData(), name="audit_outbox"))
    with engine.begin() as connection:
        OutboxWriter(table).write(connection, events(1))
    engine.dispose()
    source = OutboxSource.from_url(url, table_name="audit_outbox")
    try:
        source.check()
        assert len(source.receive(10, 0)) == 1
    finally:
        source.close()


def test_failed_delete_is_logged_and_the_row_delivered_again(
    engine: sa.Engine,
    source: OutboxSource,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If the delete fails, the row stays pending: a harmless redelivery, never a loss."""
    write_events(engine, events(1))
    (message,) = source.receive(10, 0)

    def broken(*_args: object) -> None:
        raise OperationalError("DELETE", {}, Exception("database is locked"))

    monkeypatch.setattr(source, "_apply", broken)
    source.ack([message])
    monkeypatch.undo()
    assert "delivered again" in caplog.text
    (again,) = source.receive(10, 0)
    assert again.message_id == message.message_id


# --------------------------------------------------------------------------- with the worker


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(50))
    balance: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))


def drain(worker: Worker, source: OutboxSource) -> int:
    """Process batches until the outbox has nothing more to hand out; messages handled."""
    handled = 0
    while messages := source.receive(worker.batch_size, 0):
        result = worker.process(messages)
        handled += len(result.acked) + len(result.rejected)
        if result.released:
            break
    return handled


@pytest.fixture
def audited(engine: sa.Engine) -> Iterator[sessionmaker[sa.orm.Session]]:
    Base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    install_audit(maker, outbox=OutboxWriter(), service="bank")
    yield maker
    uninstall_audit(maker)


def run_changes(maker: sessionmaker[sa.orm.Session]) -> None:
    with audit_context(actor="alice"), maker.begin() as session:
        session.add_all(
            [
                Account(id=1, owner="ann", balance=Decimal("10.00")),
                Account(id=2, owner="ben", balance=Decimal("5.00")),
            ]
        )
    with audit_context(actor="bob"), maker.begin() as session:
        account = session.get(Account, 1)
        assert account is not None
        account.balance = Decimal("12.50")
    with audit_context(actor="mallory"):
        session = maker()
        account = session.get(Account, 2)
        assert account is not None
        account.owner = "mallory"
        session.flush()
        session.rollback()
        session.close()
    with audit_context(actor="carol"), maker.begin() as session:
        account = session.get(Account, 2)
        assert account is not None
        session.delete(account)


def test_worker_consumes_the_outbox_into_the_store(
    engine: sa.Engine, audited: sessionmaker[sa.orm.Session]
) -> None:
    """Committed changes reach the store with their actors; rolled-back ones never do."""
    run_changes(audited)
    assert outbox_counts(engine) == (4, 0)
    source = OutboxSource(engine)
    store = MemoryStore()
    worker = Worker(source, store, concurrency=1, batch_size=2, wait_seconds=0)
    try:
        assert drain(worker, source) == 4
    finally:
        source.close()
    assert outbox_counts(engine) == (0, 0)
    history = {
        record_id: [
            (r.operation.value, r.actor_id)
            for r in reversed(store.history("bank", "accounts", record_id).items)
        ]
        for record_id in ("1", "2")
    }
    assert history == {
        "1": [("insert", "alice"), ("update", "bob")],
        "2": [("insert", "alice"), ("delete", "carol")],
    }
    assert all(r.actor_id != "mallory" for r in store.records)


def test_store_outage_keeps_the_rows_until_written(engine: sa.Engine) -> None:
    """Rows whose write failed stay leased and pending until the store takes them."""
    write_events(engine, events(3))
    source = OutboxSource(engine)
    store = MemoryStore()
    store.fail_next(2)
    worker = Worker(source, store, concurrency=1, wait_seconds=0, max_backoff=0.01)
    try:
        result = worker.process(source.receive(10, 0))
        assert len(result.acked) == 3
        assert result.released == []
        assert store.write_calls == 3
    finally:
        source.close()
    assert row_count(engine) == 0
    assert len(store.records) == 3


def test_undecodable_row_is_parked_by_the_worker(engine: sa.Engine) -> None:
    """A row whose payload is not a change event is parked, the valid rows are written."""
    write_events(engine, events(1))
    table = outbox_table()
    with engine.begin() as connection:
        connection.execute(
            table.insert().values(
                event_id="bad",
                transaction_id="bad",
                table_name="accounts",
                record_id="x",
                payload="{not json",
                created_at=make_event().committed_at,
            )
        )
    source = OutboxSource(engine)
    store = MemoryStore()
    worker = Worker(source, store, concurrency=1, wait_seconds=0)
    try:
        assert drain(worker, source) == 2
    finally:
        source.close()
    assert outbox_counts(engine) == (0, 1)
    assert len(store.records) == 1


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def test_running_worker_with_several_pollers_writes_each_event_once(engine: sa.Engine) -> None:
    """Three pollers sharing one SQLite outbox source: every row written once, outbox empty."""
    written = events(60)
    source = OutboxSource(engine, poll_interval=0.01)
    store = MemoryStore()
    worker = Worker(source, store, concurrency=3, batch_size=7, wait_seconds=0.05)
    worker.start()
    try:
        for start in range(0, 60, 10):
            write_events(engine, written[start : start + 10])
        wait_for(lambda: len(store.records) == 60 and row_count(engine) == 0)
    finally:
        worker.stop()
        worker.join(30)
        source.close()
    assert sorted(r.event_id for r in store.records) == sorted(e.event_id for e in written)
