"""The events of one fixed scenario, compared with a stored copy (ids and clocks left out).

The capture path is tuned for speed (values encoded once, plans compiled per mapper, no
copies of what a change already owns); this test pins its *output*: every capture rule the
scenario touches -- attribute and column names, server defaults, ``onupdate`` values,
deferred and expired columns, masking, exclusion, composite and changed primary keys,
inheritance, association rows, foreign keys set by the flush, every value type of the
codec, coalescing, savepoints, bulk statements, actor, request id and metadata -- must
give exactly the wire text it gave before.

``golden_events.json`` beside this module holds the expected events. After a deliberate
change of the output, regenerate it with ``render_golden()`` and review the difference.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import (
    Account,
    Child,
    Color,
    Counter,
    Country,
    Engineer,
    Everything,
    Group,
    Manager,
    Parent,
    Post,
    Scratch,
    Stock,
    Tag,
    User,
    sqlite_engine,
)
from capture_support import Base as ModelBase
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.capture import RowChange
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.publishers.memory import InMemoryPublisher

GOLDEN = Path(__file__).with_name("golden_events.json")

#: Fields that differ on every run; replaced by stable stand-ins.
_VOLATILE = ("event_id", "occurred_at", "committed_at")


def _hook(session: Session, change: RowChange) -> dict[str, Any] | None:
    if change.table == "stock":
        return {"hooked": change.operation.value, "at": dt.date(2026, 3, 1)}
    return None


def _scenario(maker: sessionmaker[Session]) -> None:
    """Every kind of change the capture path handles, in a fixed order."""
    with audit_context(actor="alice", request_id="req-1", tenant="t1"), maker.begin() as session:
        session.add_all(
            [
                User(id=1, display_name="Ann", email="ann@x", bio="first"),
                User(id=2, display_name="Bob", email=None),
                Account(id=1, login="ann", password_hash="h1"),
                Counter(id=1, value=5),
                Stock(warehouse="W:1", sku="A%1", quantity=3),
                Country(code="FR", name="France"),
                Manager(id=1, name="Meg", budget=decimal.Decimal("10.50")),
                Engineer(id=2, name="Eve", language="py"),
                Scratch(id=1, note="hidden"),
                Everything(
                    id=1,
                    amount=decimal.Decimal("1.2300"),
                    ratio=float("inf"),
                    flag=True,
                    naive=dt.datetime(2026, 1, 2, 3, 4, 5, 6),
                    day=dt.date(2026, 1, 2),
                    clock=dt.time(12, 30),
                    span=dt.timedelta(days=1, seconds=2, microseconds=3),
                    token=uuid.UUID(int=7),
                    blob=b"\x00\xff",
                    color=Color.RED,
                    doc={"$type": "x", "list": [1, 2.5, None, "s"], "n": {"k": True}},
                    text="plain",
                ),
            ]
        )
        post = Post(id=1, title="p1", tags=[Tag(id=1, label="t1"), Tag(id=2, label="t2")])
        session.add(post)
        parent = Parent(id=1, children=[Child(id=1, name="c1"), Child(id=2, name="c2")])
        session.add(parent)
        session.add(Group(id=1, members=[]))
        session.flush()
        session.add(Group(id=2))
        # insert then update in one transaction: one insert with the final values
        user2 = session.get(User, 2)
        assert user2 is not None
        user2.email = "bob@x"

    with audit_context(actor="bob", request_id="req-2"), maker.begin() as session:
        # updates of expired objects: old values read back by a SELECT
        ann = session.get(User, 1)
        assert ann is not None
        ann.display_name = "Anne"
        ann.bio = "second"  # deferred, assigned while unloaded
        account = session.get(Account, 1)
        assert account is not None
        account.password_hash = "h2"
        account.login = "ann2"
        counter = session.get(Counter, 1)
        assert counter is not None
        counter.value = 6  # onupdate revision + 1
        stock = session.get(Stock, ("W:1", "A%1"))
        assert stock is not None
        stock.quantity = stock.quantity  # no change: no event
        country = session.get(Country, "FR")
        assert country is not None
        country.code = "FX"  # primary key change
        meg = session.get(Manager, 1)
        assert meg is not None
        meg.budget = decimal.Decimal("11.00")
        meg.name = "Megan"
        everything = session.get(Everything, 1)
        assert everything is not None
        everything.doc = {"list": [1], "when": "now"}
        everything.ratio = float("nan")
        everything.color = Color.GREEN
        everything.naive = None
        everything.flag = False
        # foreign key set by the flush: the child moves to another parent
        child = session.get(Child, 2)
        assert child is not None
        child.parent = Parent(id=2)
        post = session.get(Post, 1)
        assert post is not None
        post.tags.pop(0)
        group = session.get(Group, 1)
        assert group is not None
        group.members.append(ann)

    with audit_context(actor="carol"), maker() as session:
        # update twice (coalesced), update then delete, delete then insert
        user2 = session.get(User, 2)
        assert user2 is not None
        user2.display_name = "Bobby"
        session.flush()
        user2.display_name = "Robert"
        stock = session.get(Stock, ("W:1", "A%1"))
        assert stock is not None
        stock.quantity = 9
        session.flush()
        session.delete(stock)
        eve = session.get(Engineer, 2)
        assert eve is not None
        session.delete(eve)
        session.flush()
        session.add(Engineer(id=2, name="Eve", language="rust"))
        # a rolled-back savepoint leaves nothing
        nested = session.begin_nested()
        session.add(User(id=3, display_name="Gone"))
        session.flush()
        nested.rollback()
        # a released savepoint keeps its changes
        with session.begin_nested():
            session.add(User(id=4, display_name="Kept", email="k@x"))
        session.commit()

    with audit_context(actor="dave", request_id="req-4"):
        with maker.begin() as session:
            # bulk statements
            session.execute(sa.update(User).where(User.id >= 1).values(login_count=User.id + 10))
            session.execute(sa.insert(Stock), [{"warehouse": "W2", "sku": "B", "quantity": 1}])
            session.execute(sa.delete(Child).where(Child.id == 1))
        with maker.begin() as session:
            # deletes of loaded and expired objects, cascades, association rows
            parent1 = session.get(Parent, 1)
            assert parent1 is not None
            session.delete(parent1)
            post = session.get(Post, 1)
            assert post is not None
            session.delete(post)
            session.delete(session.get(Everything, 1))
            session.delete(session.get(Account, 1))


def _normalized(raw: list[str]) -> list[dict[str, Any]]:
    """The wire events with run-dependent values replaced (transaction ids by their rank)."""
    transactions: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for text in raw:
        data = json.loads(text)
        assert list(data)[:4] == ["schema_version", "event_id", "occurred_at", "committed_at"]
        for name in _VOLATILE:
            data[name] = "<volatile>"
        data["transaction_id"] = transactions.setdefault(data["transaction_id"], len(transactions))
        out.append(data)
    return out


@pytest.fixture
def golden_maker() -> Iterator[sessionmaker[Session]]:
    """A fresh in-memory SQLite database with the capture models."""
    engine = sqlite_engine()
    ModelBase.metadata.create_all(engine)
    yield sessionmaker(engine, expire_on_commit=True)
    engine.dispose()


def _direct_events(maker: sessionmaker[Session]) -> list[dict[str, Any]]:
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="golden", metadata_hook=_hook)
    try:
        _scenario(maker)
    finally:
        uninstall_audit(maker)
    return _normalized(publisher.raw_messages)


def render_golden() -> None:
    """Rewrite ``golden_events.json`` from the current code (after a deliberate change)."""
    engine = sqlite_engine()
    ModelBase.metadata.create_all(engine)
    events = _direct_events(sessionmaker(engine))
    GOLDEN.write_text(json.dumps(events, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def test_direct_mode_events_match_the_stored_copy(golden_maker: sessionmaker[Session]) -> None:
    """Direct mode publishes, for the fixed scenario, exactly the stored events, in order."""
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    events = _direct_events(golden_maker)
    assert len(events) == len(expected)
    for got, want in zip(events, expected, strict=True):
        assert got == want
        assert list(got) == list(want)  # same field order on the wire


def test_outbox_mode_events_match_the_stored_copy(golden_maker: sessionmaker[Session]) -> None:
    """Outbox mode hands the writer, for the fixed scenario, the same events as direct mode."""
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    writer = InMemoryTransactionalWriter()
    install_audit(golden_maker, outbox=writer, service="golden", metadata_hook=_hook)
    try:
        _scenario(golden_maker)
    finally:
        uninstall_audit(golden_maker)
    assert _normalized([event.to_json() for event in writer.events]) == expected
