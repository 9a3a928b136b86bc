"""The scripted history shared by the query tests (unit tests on SQLite, Cassandra integration).

An ORM model on SQLite is audited with ``install_audit`` into an ``InMemoryPublisher``; the
published messages go through the real consumer (``Worker.process``: decode, diff, write)
into a store. After every commit the script snapshots the actual rows, so a test can check
that ``as_of`` gives exactly the snapshot at every point of the history -- at the commit
instant itself and one microsecond before the next commit.

The script deletes and re-inserts the same primary key (in separate transactions and inside
one transaction) and changes primary keys: a row moves to the spare key with another change
in the same update, two rows swap keys inside one transaction (through a temporary key),
and the row on the spare key moves back to a base key. It runs fast enough that consecutive
commits often share a millisecond; :class:`SteppedClock` makes that certain.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from consumer.query import AuditQuery
from consumer.records import departure_event_id, to_millis
from consumer.sinks.base import AuditStore
from consumer.sources.base import Message
from consumer.sources.memory import MemorySource
from consumer.worker import Worker
from sqla_audit.context import audit_context
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher

TABLE = "scripted_accounts"
#: Keys the random steps use.
BASE_IDS = (1, 2, 3)
#: The spare key: only the key-change steps move rows onto it and off it.
SPARE_ID = 4
#: Every key the snapshots (and so the as_of checks) cover.
IDS = (*BASE_IDS, SPARE_ID)
#: A key used only inside the swap transaction (never committed).
TEMPORARY_ID = 99
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

    @property
    def moves(self) -> list[ChangeEvent]:
        """The updates that changed a primary key."""
        return [
            e
            for e in self.events
            if e.previous_record_id is not None and e.previous_record_id != e.record_id
        ]

    def expected_history(self, record_id: str) -> list[uuid.UUID]:
        """The event ids a store lists for ``record_id``, newest first.

        Each event under its own record id, plus a departure record (derived id) under the
        old id of every key change; ordered like every store: event time ms, then event id.
        """
        found: list[tuple[int, uuid.UUID]] = []
        for event in self.events:
            millis = to_millis(event.committed_at)
            if event.record_id == record_id:
                found.append((millis, event.event_id))
            moved = event.operation is Operation.UPDATE and event.record_id != record_id
            if moved and event.previous_record_id == record_id:
                found.append((millis, departure_event_id(event.event_id)))
        return [event_id for _, event_id in sorted(found, reverse=True)]


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
#: Fixed key changes: a base row to the spare key; a swap with it; the spare row back.
MOVE_TO_SPARE = 25
SWAP_WITH_SPARE = 60
MOVE_BACK = 85


def _occupied(session: Session) -> list[Account]:
    found = (session.get(Account, account_id) for account_id in BASE_IDS)
    return [account for account in found if account is not None]


def _spare(session: Session) -> Account:
    account = session.get(Account, SPARE_ID)
    assert account is not None, "the script expects a row on the spare key"
    return account


def _key_change(session: Session, step: int, rng: random.Random) -> None:
    """One of the fixed primary-key changes (each one transaction)."""
    if step == MOVE_TO_SPARE:
        occupied = _occupied(session)
        assert occupied, "the script expects a base row to move"
        account = rng.choice(occupied)
        account.id = SPARE_ID
        account.balance += 1  # a key change and a value change in one update
    elif step == SWAP_WITH_SPARE:
        spare, base = _spare(session), rng.choice(_occupied(session))
        target = base.id
        spare.id = TEMPORARY_ID
        session.flush()
        base.id = SPARE_ID
        session.flush()
        spare.id = target
    elif step == MOVE_BACK:
        spare = _spare(session)
        free = [i for i in BASE_IDS if session.get(Account, i) is None]
        if not free:  # free a key in the same transaction: a delete and an arrival on it
            session.delete(_occupied(session)[0])
            session.flush()
            free = [i for i in BASE_IDS if session.get(Account, i) is None]
        spare.id = free[0]


def _step(session: Session, step: int, rng: random.Random) -> None:
    """One scripted change; a few steps are fixed so the script always covers them."""
    if step < len(BASE_IDS):
        session.add(_new_account(BASE_IDS[step], rng))
        return
    if step in (MOVE_TO_SPARE, SWAP_WITH_SPARE, MOVE_BACK):
        _key_change(session, step, rng)
        return
    account_id = (
        DELETES.get(step)
        or REINSERTS.get(step)
        or DELETE_AND_REINSERT.get(step)
        or rng.choice(BASE_IDS)
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
    """Assert as_of equals the database snapshot at every instant; returns the checks made.

    Where a key has no row because its row moved away, ``as_of`` must say so (``moved_to``
    names another key, ``deleted`` is false) rather than report a delete.
    """
    checks = 0
    for at, rows in instants(history):
        for record_id, expected in rows.items():
            state = query.as_of(TABLE, record_id, at)
            assert state.exists == (expected is not None), (at, record_id, state.event)
            assert state.values == expected, (at, record_id)
            if state.moved_to is not None:
                assert state.moved_to in rows, (at, record_id, state.moved_to)
                assert state.moved_to != record_id
                assert not state.deleted, (at, record_id)
                assert state.event is not None
                assert state.event.operation is Operation.DELETE
            checks += 1
    return checks


def check_moves(query: AuditQuery, history: ScriptedHistory) -> int:
    """Assert what as_of says around every key change; returns the moves checked in full.

    At the move's commit the new key holds the moved row; the old key, unless another row
    arrived on it in the same commit (a swap), holds nothing, names the new key in
    ``moved_to`` and is not reported deleted; right after the previous commit it still
    held the row as the move's ``before``.
    """
    arrivals = {(e.committed_at, e.record_id) for e in history.events}
    previous = {b.committed_at: a.committed_at for a, b in itertools.pairwise(history.points)}
    checked = 0
    for move in history.moves:
        assert move.previous_record_id is not None
        new = query.as_of(TABLE, move.record_id, move.committed_at)
        assert new.exists
        assert new.wire_values == move.after
        old = query.as_of(TABLE, move.previous_record_id, move.committed_at)
        if (move.committed_at, move.previous_record_id) in arrivals:
            assert old.exists  # a swap: another row arrived on the old key in the same commit
            continue
        assert not old.exists
        assert old.moved_to == move.record_id
        assert not old.deleted
        assert old.event is not None
        assert old.event.before == move.before
        before = query.as_of(TABLE, move.previous_record_id, previous[move.committed_at])
        assert before.exists
        assert before.wire_values == move.before
        checked += 1
    return checked


def make_engine(path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite+pysqlite:///{path}")


__all__ = [
    "ACTORS",
    "BASE_IDS",
    "IDS",
    "MOVE_BACK",
    "MOVE_TO_SPARE",
    "SPARE_ID",
    "STEPS",
    "SWAP_WITH_SPARE",
    "TABLE",
    "Point",
    "ScriptedHistory",
    "SteppedClock",
    "check_as_of",
    "check_moves",
    "consume",
    "instants",
    "make_engine",
    "run_script",
]
