"""as_of against the real database through a scripted history of 100 audited changes.

An ORM model on SQLite is audited with ``install_audit`` into an ``InMemoryPublisher``; the
published messages go through the real consumer (``Worker.process``: decode, diff, write)
into a store. After every commit the test snapshots the actual rows; afterwards, for every
point of the history, ``as_of`` must give exactly the snapshot -- at the commit instant
itself and one microsecond before the next commit. The script deletes and re-inserts the
same primary key (in separate transactions and inside one transaction) and runs fast
enough that consecutive commits often share a millisecond.

:func:`run_script` and :func:`check_as_of` are shared with the Cassandra integration test.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from consumer.query import AuditQuery
from consumer.records import to_millis
from consumer.sinks.base import AuditStore
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.sources.base import Message
from consumer.sources.memory import MemorySource
from consumer.worker import Worker
from sqla_audit.context import audit_context
from sqla_audit.events import ChangeEvent
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher

TABLE = "scripted_accounts"
IDS = (1, 2, 3)
ACTORS = ("alice", "bob", "carol")
STEPS = 100
US = dt.timedelta(microseconds=1)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(sa.String(40))
    balance: Mapped[int]
    note: Mapped[str | None] = mapped_column(sa.String(200))
    tags: Mapped[list[str]] = mapped_column(sa.JSON)
    opened: Mapped[dt.date]


Row = dict[str, Any]


@dataclass(frozen=True)
class Point:
    """The database right after one committed step."""

    step: int
    committed_at: dt.datetime
    rows: dict[str, Row | None]


@dataclass(frozen=True)
class ScriptedHistory:
    points: list[Point]
    events: list[ChangeEvent]
    messages: list[str]

    @property
    def same_millisecond_pairs(self) -> int:
        """How many consecutive commits fell in the same millisecond."""
        millis = [to_millis(p.committed_at) for p in self.points]
        return sum(1 for a, b in itertools.pairwise(millis) if a == b)


def _new_account(account_id: int, rng: random.Random) -> Account:
    return Account(
        id=account_id,
        owner=rng.choice(ACTORS),
        balance=rng.randint(0, 1000),
        note=rng.choice([None, "new", "vip"]),
        tags=[rng.choice(["a", "b", "c"])],
        opened=dt.date(2026, 1, 1) + dt.timedelta(days=rng.randint(0, 30)),
    )


def _update(account: Account, rng: random.Random) -> None:
    account.balance += rng.randint(1, 50)  # every update changes something
    if rng.random() < 0.4:
        account.note = rng.choice([None, "checked", "flagged", "note with\nnewline"])
    if rng.random() < 0.3:
        account.tags = [*account.tags, rng.choice(["x", "y", "z"])]
    if rng.random() < 0.2:
        account.owner = rng.choice(ACTORS)
    if rng.random() < 0.2:
        account.opened = account.opened + dt.timedelta(days=1)


#: Fixed steps: delete a key, re-insert it in the next transaction; both in one transaction.
DELETES = {10: 1, 40: 2, 70: 3}
REINSERTS = {11: 1, 41: 2, 71: 3}
DELETE_AND_REINSERT = {55: 3}


def _step(session: Session, step: int, rng: random.Random) -> None:
    """One scripted change; a few steps are fixed so the script always covers them."""
    if step < len(IDS):
        session.add(_new_account(IDS[step], rng))
        return
    account_id = (
        DELETES.get(step) or REINSERTS.get(step) or DELETE_AND_REINSERT.get(step) or rng.choice(IDS)
    )
    account = session.get(Account, account_id)
    if account is None:
        session.add(_new_account(account_id, rng))
    elif step in DELETE_AND_REINSERT:
        session.delete(account)
        session.flush()
        session.add(_new_account(account_id, rng))
    elif step in DELETES or (step not in REINSERTS and rng.random() < 0.08):
        session.delete(account)
    else:
        _update(account, rng)


def _snapshot(engine: sa.Engine) -> dict[str, Row | None]:
    with engine.connect() as conn:
        rows = {row.id: dict(row._mapping) for row in conn.execute(sa.select(Account.__table__))}
    return {str(i): rows.get(i) for i in IDS}


class SteppedClock:
    """A producer clock that advances a fixed step per reading: several commits per ms."""

    def __init__(self, start: dt.datetime, step: dt.timedelta) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> dt.datetime:
        self.now += self.step
        return self.now


def run_script(
    engine: sa.Engine,
    *,
    steps: int = STEPS,
    seed: int = 20260110,
    clock: Callable[[], dt.datetime] | None = None,
) -> ScriptedHistory:
    """Run the scripted history on ``engine`` with auditing installed; snapshot every step.

    ``clock`` replaces the producer's clock (flush and commit times) for the run.
    """
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    publisher = InMemoryPublisher()
    rng = random.Random(seed)
    points: list[Point] = []
    with pytest.MonkeyPatch.context() as patch:
        if clock is not None:
            patch.setattr("sqla_audit.capture.utcnow", clock)
            patch.setattr("sqla_audit.delivery.utcnow", clock)
        install_audit(factory, publisher=publisher, service="scripted")
        try:
            for step in range(steps):
                published = len(publisher.batches)
                with audit_context(actor=rng.choice(ACTORS)), factory.begin() as session:
                    _step(session, step, rng)
                batches = publisher.batches[published:]
                assert len(batches) == 1, f"step {step} published {len(batches)} transactions"
                committed = {event.committed_at for event in batches[0]}
                assert len(committed) == 1, f"step {step}: one commit time per transaction"
                points.append(Point(step, committed.pop(), _snapshot(engine)))
        finally:
            uninstall_audit(factory)
    return ScriptedHistory(points, publisher.events, publisher.raw_messages)


def consume(store: AuditStore, bodies: Sequence[str], *, batch_size: int = 10) -> None:
    """Feed message bodies through the real worker into ``store``; every one must be acked."""
    worker = Worker(MemorySource(), store, concurrency=1, batch_size=batch_size)
    for start in range(0, len(bodies), batch_size):
        batch = [
            Message(message_id=f"m-{start + i}", body=body)
            for i, body in enumerate(bodies[start : start + batch_size])
        ]
        result = worker.process(batch)
        assert len(result.acked) == len(batch), (result.rejected, result.released)


def instants(history: ScriptedHistory) -> Iterator[tuple[dt.datetime, dict[str, Row | None]]]:
    """Every instant to check and the rows expected then (None: no row)."""
    points = history.points
    yield points[0].committed_at - US, dict.fromkeys(points[0].rows)
    for point, following in zip(points, [*points[1:], None], strict=True):
        yield point.committed_at, point.rows
        if following is not None and following.committed_at - US > point.committed_at:
            yield following.committed_at - US, point.rows
    yield points[-1].committed_at + dt.timedelta(days=1), points[-1].rows


def check_as_of(query: AuditQuery, history: ScriptedHistory) -> int:
    """Assert as_of equals the database snapshot at every instant; returns the checks made."""
    checks = 0
    for at, rows in instants(history):
        for record_id, expected in rows.items():
            state = query.as_of(TABLE, record_id, at)
            assert state.exists == (expected is not None), (at, record_id, state.event)
            assert state.values == expected, (at, record_id)
            checks += 1
    return checks


def make_engine(path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite+pysqlite:///{path}")


@pytest.fixture(scope="module", params=["wall-clock", "stepped-clock"])
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ScriptedHistory:
    """The scripted history with the real clock, and with a clock stepping 200 µs a reading."""
    engine = make_engine(tmp_path_factory.mktemp("scripted") / "app.db")
    clock = None
    if request.param == "stepped-clock":
        clock = SteppedClock(dt.datetime.now(dt.UTC), dt.timedelta(microseconds=200))
    try:
        made = run_script(engine, clock=clock)
    finally:
        engine.dispose()
    if clock is not None:  # deterministic: a flush and a commit per step, 200 µs each
        assert made.same_millisecond_pairs > STEPS // 2
    return made


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    made: AuditStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "audit.db")
    )
    yield made
    made.close()


def test_script_covers_what_it_claims(history: ScriptedHistory) -> None:
    """100 steps, one transaction each, deleting and re-inserting every key at least once."""
    assert len(history.points) == STEPS
    ops = [(e.record_id, e.operation.value) for e in history.events]
    for record_id in map(str, IDS):
        deletes = [i for i, op in enumerate(ops) if op == (record_id, "delete")]
        assert deletes, record_id
        assert (record_id, "insert") in ops[deletes[0] :], record_id
    # the delete and re-insert inside one transaction is one update of the key
    (event,) = [e for e in history.events if e.committed_at == history.points[55].committed_at]
    assert (event.record_id, event.operation.value) == ("3", "update")


def test_event_ids_are_in_commit_order(history: ScriptedHistory) -> None:
    """Event ids grow with commits, so the store's tie-break inside a millisecond is right."""
    ids = [event.event_id for event in history.events]
    assert ids == sorted(ids)
    times = [event.committed_at for event in history.events]
    assert times == sorted(times)


def test_as_of_matches_the_database_at_every_point(
    history: ScriptedHistory, store: AuditStore
) -> None:
    """as_of reproduces the actual rows (or their absence) at every point of the history."""
    consume(store, history.messages)
    assert check_as_of(AuditQuery(store), history) >= 3 * (STEPS + 2)


def test_history_lists_every_event_newest_first(
    history: ScriptedHistory, store: AuditStore
) -> None:
    """history of each record is exactly its events, newest first."""
    consume(store, history.messages)
    query = AuditQuery(store)
    for record_id in map(str, IDS):
        expected = [e.event_id for e in reversed(history.events) if e.record_id == record_id]
        got = [r.event_id for r in query.iter_history(TABLE, record_id, page_size=7)]
        assert got == expected


def test_redelivered_messages_change_nothing(history: ScriptedHistory, store: AuditStore) -> None:
    """Consuming every message twice (at-least-once delivery) leaves as_of unchanged."""
    consume(store, history.messages)
    consume(store, list(reversed(history.messages)))
    check_as_of(AuditQuery(store), history)


def test_by_transaction_and_actor_agree_with_the_events(
    history: ScriptedHistory, store: AuditStore
) -> None:
    """Every transaction and every actor's window return exactly their events."""
    consume(store, history.messages)
    query = AuditQuery(store)
    for event in history.events:
        assert [r.event_id for r in query.by_transaction(event.transaction_id)] == [event.event_id]
    first = history.points[0].committed_at
    for actor in ACTORS:
        expected = [
            e.event_id
            for e in reversed(history.events)
            if e.actor is not None and e.actor.id == actor
        ]
        got = [r.event_id for r in query.iter_by_actor(actor, since=first, page_size=9)]
        assert got == expected
