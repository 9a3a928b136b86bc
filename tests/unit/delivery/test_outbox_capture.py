"""Outbox mode end to end on SQLite: ORM commits write outbox rows, rollbacks write none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_table
from sqla_audit.outbox.relay import OutboxRelay
from sqla_audit.publishers.sns import SNSSender
from sqla_audit.retry import RetryPolicy


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str]
    balance: Mapped[int]


@pytest.fixture
def maker(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A session factory on SQLite with the outbox table, audited in outbox mode."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'bank.db'}")
    Base.metadata.create_all(engine)
    create_outbox_table(engine)
    factory = sessionmaker(engine)
    install_audit(factory, outbox=OutboxWriter(), service="bank")
    yield factory
    uninstall_audit(factory)
    engine.dispose()


def outbox_events(maker: sessionmaker[Session]) -> list[ChangeEvent]:
    table = outbox_table()
    with maker() as session:
        payloads = session.execute(sa.select(table.c.payload).order_by(table.c.id)).scalars()
        return [ChangeEvent.from_json(p) for p in payloads]


def test_committed_changes_are_in_the_outbox(maker: sessionmaker[Session]) -> None:
    """Insert, update and delete each leave one outbox row, committed with the data."""
    with maker.begin() as session:
        session.add(Account(id=1, owner="ann", balance=10))
    with maker.begin() as session:
        session.get_one(Account, 1).balance = 20
    with maker.begin() as session:
        session.delete(session.get_one(Account, 1))
    events = outbox_events(maker)
    assert [e.operation for e in events] == [Operation.INSERT, Operation.UPDATE, Operation.DELETE]
    assert events[1].before is not None
    assert events[1].after is not None
    assert (events[1].before["balance"], events[1].after["balance"]) == (10, 20)
    assert {e.service for e in events} == {"bank"}


def test_rolled_back_changes_leave_nothing(maker: sessionmaker[Session]) -> None:
    """A transaction that rolls back leaves neither data nor outbox rows."""
    with maker() as session:
        session.add(Account(id=2, owner="bob", balance=5))
        session.flush()
        session.rollback()
    assert outbox_events(maker) == []


def test_relay_publishes_what_capture_wrote(maker: sessionmaker[Session], fake_sns: Any) -> None:
    """The relay sends the captured events in commit order and empties the outbox."""
    for i in range(3):
        with maker.begin() as session:
            session.add(Account(id=10 + i, owner=f"o{i}", balance=i))
    expected = [str(e.event_id) for e in outbox_events(maker)]
    engine = maker.kw["bind"]
    sender = SNSSender("arn:aws:sns:us-east-1:1:audit", client=fake_sns, retry=RetryPolicy(1))
    assert OutboxRelay(engine, sender).drain().published == 3
    assert fake_sns.accepted_ids == expected
    assert outbox_events(maker) == []
