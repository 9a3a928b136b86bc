"""Restore scenarios shared by the SQLite unit tests and the PostgreSQL/MariaDB integration tests.

The audit trail is built the real way: ``install_audit`` with an in-memory publisher, each
published event fed through :func:`consumer.differ.records_for_event` into an audit store,
questions asked with :class:`AuditQuery`. Restores go through the audited session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from consumer.differ import records_for_event
from consumer.query import AuditQuery
from consumer.restore import (
    RESTORE_METADATA_KEY,
    StaleRecord,
    UnrestorableColumns,
    plan_restore,
    plan_undo_transaction,
)
from consumer.sinks.base import AuditStore
from sqla_audit.context import audit_context
from sqla_audit.events import ChangeEvent
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.serialization import encode_value

SERVICE = "shop"
RESTORER = "restorer"


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "rs_customers"
    __audit__ = {"mask": ["pin"], "exclude": ["last_seen"]}

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(40))
    status: Mapped[str] = mapped_column(sa.String(20))
    pin: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    last_seen: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)


class Stock(Base):
    """A composite primary key."""

    __tablename__ = "rs_stock"

    shop: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    sku: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    qty: Mapped[int] = mapped_column(sa.Integer)


post_tags = sa.Table(
    "rs_post_tags",
    Base.metadata,
    sa.Column("post_id", sa.ForeignKey("rs_posts.id"), primary_key=True),
    sa.Column("tag_id", sa.ForeignKey("rs_tags.id"), primary_key=True),
)


class Tag(Base):
    __tablename__ = "rs_tags"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    label: Mapped[str] = mapped_column(sa.String(20))


class Post(Base):
    __tablename__ = "rs_posts"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(sa.String(40))
    tags: Mapped[list[Tag]] = relationship(secondary=post_tags)


class Shop:
    """An audited application database whose events reach an audit store as they commit."""

    def __init__(self, engine: sa.Engine, store: AuditStore) -> None:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        self.engine = engine
        self.factory = sessionmaker(engine, expire_on_commit=False)
        self.publisher = InMemoryPublisher()
        self.store = store
        self.query = AuditQuery(store)
        self._fed = 0
        install_audit(self.factory, publisher=self.publisher, service=SERVICE)

    def close(self) -> None:
        uninstall_audit(self.factory)
        Base.metadata.drop_all(self.engine)

    def commit(self, actor: str, change: Callable[[Session], Any]) -> list[ChangeEvent]:
        """Run ``change`` in one audited transaction; return its events (now in the store)."""
        with audit_context(actor=actor), self.factory.begin() as session:
            change(session)
        return self.sync()

    def sync(self) -> list[ChangeEvent]:
        """Feed the events published since the last call through the differ into the store."""
        events = self.publisher.events[self._fed :]
        self._fed += len(events)
        for event in events:
            self.store.write(records_for_event(event))
        return events

    @contextmanager
    def restoring(self) -> Iterator[Session]:
        """An audited transaction acting as :data:`RESTORER`."""
        with audit_context(actor=RESTORER), self.factory.begin() as session:
            yield session

    def row(self, model: type[Any], key: Any) -> dict[str, Any] | None:
        """The row now, as wire values of its columns (``None`` if absent)."""
        with self.factory() as session:
            obj = session.get(model, key)
            if obj is None:
                return None
            mapper: Any = sa.inspect(model)
            return {
                column.name: encode_value(getattr(obj, prop.key))
                for prop in mapper.column_attrs
                for column in prop.columns[:1]
            }

    def links(self) -> set[tuple[int, int]]:
        with self.engine.connect() as conn:
            return {(r.post_id, r.tag_id) for r in conn.execute(sa.select(post_tags))}


def matches_as_of(
    shop: Shop, model: type[Any], key: Any, table: str, record_id: str, at: dt.datetime
) -> bool:
    """The database row equals ``as_of(at)`` on every column the log holds unmasked."""
    state = shop.query.as_of(table, record_id, at, service=SERVICE)
    row = shop.row(model, key)
    if not state.exists:
        return row is None
    assert state.wire_values is not None
    if row is None:
        return False
    masked = set(state.event.masked_columns if state.event else ())
    return all(
        row[name] == value for name, value in state.wire_values.items() if name not in masked
    )


def restore_events_carry_actor(events: list[ChangeEvent]) -> bool:
    """Every restore event names the restoring actor and the restore metadata."""
    return bool(events) and all(
        event.actor is not None
        and event.actor.id == RESTORER
        and RESTORE_METADATA_KEY in event.metadata
        for event in events
    )


# --------------------------------------------------------------------------- scenarios


def set_values(model: type[Any], key: Any, **values: Any) -> Callable[[Session], None]:
    def change(session: Session) -> None:
        obj = session.get(model, key)
        assert obj is not None
        for name, value in values.items():
            setattr(obj, name, value)

    return change


def delete_row(model: type[Any], key: Any) -> Callable[[Session], None]:
    return lambda session: session.delete(session.get(model, key))


def scenario_update(shop: Shop) -> None:
    """An updated row goes back to its earlier values; the restore is audited."""
    first = shop.commit("alice", lambda s: s.add(Customer(id=1, name="Ann", status="new")))
    shop.commit("bob", set_values(Customer, 1, name="Anne", status="vip"))
    at = first[0].committed_at
    with shop.factory() as session:
        plan = plan_restore(session, shop.query, Customer, 1, at=at)
    assert [(c.column, c.current, c.restored) for c in plan.records[0].changes] == [
        ("name", "Anne", "Ann"),
        ("status", "vip", "new"),
    ]
    assert plan.records[0].action == "update"
    assert shop.row(Customer, 1) is not None
    assert shop.row(Customer, 1)["name"] == "Anne"  # type: ignore[index]  # the dry run wrote nothing
    with shop.restoring() as session:
        plan_restore(session, shop.query, Customer, "1", at=at).apply(session)
    restored = shop.sync()
    assert matches_as_of(shop, Customer, 1, Customer.__tablename__, "1", at)
    assert restore_events_carry_actor(restored)
    assert restored[0].metadata[RESTORE_METADATA_KEY] == {
        "event_id": str(first[0].event_id),
        "at": at.isoformat(),
        "transaction_id": None,
    }


def scenario_undelete(shop: Shop) -> None:
    """A deleted row is re-inserted with its values at the chosen event (composite key)."""
    created = shop.commit("alice", lambda s: s.add(Stock(shop="north", sku=7, qty=3)))
    shop.commit("alice", set_values(Stock, ("north", 7), qty=5))
    shop.commit("bob", delete_row(Stock, ("north", 7)))
    with shop.restoring() as session:
        plan = plan_restore(session, shop.query, Stock, ("north", 7), event_id=created[0].event_id)
        assert plan.records[0].action == "insert"
        plan.apply(session)
    restored = shop.sync()
    at = created[0].committed_at
    assert matches_as_of(shop, Stock, ("north", 7), Stock.__tablename__, created[0].record_id, at)
    assert shop.row(Stock, ("north", 7))["qty"] == 3  # type: ignore[index]
    assert restore_events_carry_actor(restored)


def scenario_delete_of_later_insert(shop: Shop) -> None:
    """A row inserted after the chosen instant is deleted by the restore."""
    before = shop.commit("alice", lambda s: s.add(Customer(id=2, name="Ben", status="new")))
    shop.commit("bob", lambda s: s.add(Customer(id=3, name="Cat", status="new")))
    at = before[0].committed_at
    with shop.restoring() as session:
        plan = plan_restore(session, shop.query, Customer, 3, at=at)
        assert plan.records[0].action == "delete"
        plan.apply(session)
    restored = shop.sync()
    assert matches_as_of(shop, Customer, 3, Customer.__tablename__, "3", at)
    assert shop.row(Customer, 3) is None
    assert restore_events_carry_actor(restored)


def scenario_transaction_undone(shop: Shop) -> None:
    """Undoing a transaction reverses its insert, update, delete and link in one commit."""

    def setup(session: Session) -> None:
        session.add_all([Customer(id=10, name="Dee", status="new"), Tag(id=1, label="red")])
        session.add(Post(id=1, title="hello"))
        session.add(Stock(shop="south", sku=1, qty=9))

    before = shop.commit("alice", setup)

    def batch(session: Session) -> None:
        session.add(Customer(id=11, name="Eve", status="new"))
        customer = session.get(Customer, 10)
        assert customer is not None
        customer.status = "gone"
        session.delete(session.get(Stock, ("south", 1)))
        post = session.get(Post, 1)
        tag = session.get(Tag, 1)
        assert post is not None
        assert tag is not None
        post.tags.append(tag)

    undone = shop.commit("bob", batch)
    assert shop.links() == {(1, 1)}
    with shop.restoring() as session:
        plan = plan_undo_transaction(session, shop.query, undone[0].transaction_id, Base)
        assert sorted(r.action for r in plan.records) == ["delete", "delete", "insert", "update"]
        plan.apply(session)
    restored = shop.sync()
    at = before[0].committed_at
    assert {e.transaction_id for e in restored} == {restored[0].transaction_id}
    stock_id = next(e.record_id for e in undone if e.table == Stock.__tablename__)
    for model, key, record_id in (
        (Customer, 10, "10"),
        (Customer, 11, "11"),
        (Stock, ("south", 1), stock_id),
    ):
        assert matches_as_of(shop, model, key, model.__tablename__, record_id, at)
    assert shop.links() == set()
    assert restore_events_carry_actor(restored)
    named = restored[0].metadata[RESTORE_METADATA_KEY]
    assert isinstance(named, dict)
    assert named["transaction_id"] == str(undone[0].transaction_id)


def scenario_optimistic_refusal(shop: Shop) -> None:
    """A restore refuses when the row is not what the caller saw, or changed since the plan."""
    first = shop.commit("alice", lambda s: s.add(Customer(id=20, name="Fay", status="new")))
    shop.commit("bob", set_values(Customer, 20, name="Faye"))
    at = first[0].committed_at
    with shop.factory() as session, pytest.raises(StaleRecord, match="name"):
        plan_restore(session, shop.query, Customer, 20, at=at, expected={"name": "Fay"})
    with shop.factory() as session:  # the dry run the caller reviews
        plan = plan_restore(session, shop.query, Customer, 20, at=at, expected={"name": "Faye"})
    shop.commit("carol", set_values(Customer, 20, status="vip"))
    with shop.restoring() as session, pytest.raises(StaleRecord, match="status"):
        plan.apply(session)
    assert shop.row(Customer, 20)["status"] == "vip"  # type: ignore[index]
    assert shop.sync() == []


def scenario_masked_refusal(shop: Shop) -> None:
    """A masked column changed since the instant is refused by name, unless accepted."""
    first = shop.commit(
        "alice", lambda s: s.add(Customer(id=30, name="Gil", status="new", pin="1"))
    )
    shop.commit("bob", set_values(Customer, 30, name="Gill", pin="2"))
    at = first[0].committed_at
    with shop.factory() as session, pytest.raises(UnrestorableColumns, match="pin") as caught:
        plan_restore(session, shop.query, Customer, 30, at=at)
    assert caught.value.columns == ("pin",)
    with shop.restoring() as session:
        plan = plan_restore(session, shop.query, Customer, 30, at=at, allow_unrestorable=True)
        assert plan.records[0].unrestorable == ("pin",)
        plan.apply(session)
    restored = shop.sync()
    assert matches_as_of(shop, Customer, 30, Customer.__tablename__, "30", at)
    assert shop.row(Customer, 30)["pin"] == "2"  # type: ignore[index]
    assert restore_events_carry_actor(restored)


SCENARIOS = [
    scenario_update,
    scenario_undelete,
    scenario_delete_of_later_insert,
    scenario_transaction_undone,
    scenario_optimistic_refusal,
    scenario_masked_refusal,
]
