"""Core capture rules on real databases: one body per rule, on SQLite, PostgreSQL, MariaDB."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import (
    Color,
    Country,
    Everything,
    Group,
    Manager,
    Post,
    Stock,
    Tag,
    User,
    brief,
    capture_tables,
    emptied,
    one_transaction,
    seed,
)
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import OutboxWriter, outbox_table
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.serialization import decode_row, registry_resolver
from sqla_audit.testing import assert_valid_events

USER_ROW = {"id": 1, "name": "Ann", "email": "ann@example.com", "login_count": 0, "bio": "b"}


@pytest.fixture(scope="module")
def schema(db_engine: Engine) -> Iterator[Engine]:
    """The capture test tables on this backend (created once per module)."""
    with capture_tables(db_engine):
        yield db_engine


@pytest.fixture
def maker(schema: Engine) -> sessionmaker[Session]:
    """A sessionmaker on empty tables."""
    return emptied(schema)


@pytest.fixture
def published(maker: sessionmaker[Session]) -> Iterator[InMemoryPublisher]:
    """Audit ``maker``; every event is validated against the schema at the end."""
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="shop")
    with audit_context(actor="alice", request_id="req-1"):
        yield publisher
    uninstall_audit(maker)
    assert_valid_events(publisher.raw_messages)


def _seed_user(maker: sessionmaker[Session], published: InMemoryPublisher) -> None:
    seed(maker, published, User(id=1, display_name="Ann", email="ann@example.com", bio="b"))


def test_insert_update_delete_with_expired_and_deferred_attributes(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Insert, update of expired/deferred attributes and delete give exact events."""
    with maker.begin() as session:
        session.add(User(id=1, display_name="Ann", email="ann@example.com", bio="b"))
    with maker() as session:
        user = session.get(User, 1)
        session.commit()
        assert user is not None
        user.display_name = "Anna"
        user.bio = "new"
        session.commit()
        session.delete(user)
        session.commit()
    insert, update, delete = published.events
    assert brief(insert) == {
        "op": "insert",
        "table": "users",
        "record_id": "1",
        "previous_record_id": None,
        "before": None,
        "after": USER_ROW,
        "changed": ["id", "name", "email", "login_count", "bio"],
        "actor": "alice",
        "sequence": 0,
    }
    changed = {**USER_ROW, "name": "Anna", "bio": "new"}
    assert brief(update)["before"] == USER_ROW
    assert brief(update)["after"] == changed
    assert update.changed_columns == ("name", "bio")
    assert brief(delete)["before"] == changed
    assert delete.after is None
    assert len({insert.transaction_id, update.transaction_id, delete.transaction_id}) == 3


def test_no_event_without_real_change(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Assigning equal values publishes nothing."""
    _seed_user(maker, published)
    with maker.begin() as session:
        user = session.get(User, 1)
        assert user is not None
        user.display_name = "Ann"
        user.email = "ann@example.com"
    assert published.events == []


def test_composite_primary_key_change(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A composite key change reports the new and the previous record id."""
    seed(maker, published, Stock(warehouse="w1", sku="s:1", quantity=1))
    with maker.begin() as session:
        stock = session.get(Stock, ("w1", "s:1"))
        assert stock is not None
        stock.warehouse = "w2"
    (event,) = published.events
    assert (event.record_id, event.previous_record_id) == ("w2:s%3A1", "w1:s%3A1")
    assert (event.before, event.after) == (
        {"warehouse": "w1", "sku": "s:1", "quantity": 1},
        {"warehouse": "w2", "sku": "s:1", "quantity": 1},
    )


def test_joined_inheritance(maker: sessionmaker[Session], published: InMemoryPublisher) -> None:
    """Joined inheritance is one event on the base table with the subclass columns."""
    with maker.begin() as session:
        session.add(Manager(id=5, name="M", budget=decimal.Decimal("1.50")))
    with maker() as session:
        manager = session.get(Manager, 5)
        session.commit()
        assert manager is not None
        manager.budget = decimal.Decimal("2.25")
        session.commit()
    insert, update = published.events
    assert insert.table == update.table == "employees"
    assert insert.after == {
        "id": 5,
        "name": "M",
        "kind": "manager",
        "language": None,
        "budget": {"$type": "decimal", "v": "1.50"},
    }
    assert update.changed_columns == ("budget",)
    assert update.before is not None
    assert update.before["budget"] == {"$type": "decimal", "v": "1.50"}


def test_many_to_many(maker: sessionmaker[Session], published: InMemoryPublisher) -> None:
    """Association rows are insert/delete events with the actor."""
    with maker.begin() as session:
        session.add(Post(id=1, title="p", tags=[Tag(id=2, label="t")]))
        session.add(Group(id=3, members=[User(id=4, display_name="u")]))
    assert {(e.table, e.record_id) for e in published.events} >= {
        ("post_tags", "1:2"),
        ("memberships", "3:4"),
    }
    one_transaction(published.events)
    published.clear()
    with maker.begin() as session:
        post = session.get(Post, 1)
        assert post is not None
        post.tags.clear()
    (removed,) = published.events
    assert brief(removed)["op"] == "delete"
    assert (removed.table, removed.before, removed.actor and removed.actor.id) == (
        "post_tags",
        {"post_id": 1, "tag_id": 2},
        "alice",
    )


def test_coalescing_rules(maker: sessionmaker[Session], published: InMemoryPublisher) -> None:
    """insert+update=insert, update+delete=delete(original), insert+delete=nothing."""
    seed(maker, published, Country(code="K", name="k"))
    with maker.begin() as session:
        new = Country(code="N", name="n")
        gone = Country(code="T", name="t")
        session.add_all([new, gone])
        session.flush()
        new.name = "n2"
        keep = session.get(Country, "K")
        assert keep is not None
        keep.name = "k2"
        session.flush()
        session.delete(keep)
        session.delete(gone)
    events = published.events
    assert [(e.operation.value, e.record_id) for e in events] == [
        ("insert", "N"),
        ("delete", "K"),
    ]
    assert events[0].after == {"code": "N", "name": "n2"}
    assert events[1].before == {"code": "K", "name": "k"}
    one_transaction(events)


def test_savepoints_and_rollback(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Rolled-back savepoints and transactions publish nothing of their work."""
    with maker() as session:
        session.add(Country(code="A", name="a"))
        outer = session.begin_nested()
        session.add(Country(code="B", name="b"))
        inner = session.begin_nested()
        session.add(Country(code="C", name="c"))
        session.flush()
        inner.rollback()
        outer.commit()
        session.commit()
        session.add(Country(code="D", name="d"))
        session.flush()
        session.rollback()
    assert [e.record_id for e in published.events] == ["A", "B"]
    one_transaction(published.events)


def test_portable_types_round_trip(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Decimal, datetime, date, time, interval, UUID, bytes, Enum and JSON come back exactly."""
    values: dict[str, Any] = {
        "amount": decimal.Decimal("12.3400"),
        "ratio": 0.5,
        "flag": True,
        "naive": dt.datetime(2026, 1, 31, 12, 30, 15, 123456),
        "day": dt.date(1999, 12, 31),
        "clock": dt.time(23, 59, 58),
        "span": dt.timedelta(days=2, seconds=5, microseconds=7),
        "token": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "blob": b"\x00\x01\xfe",
        "color": Color.GREEN,
        "doc": {"list": [1, 2.5, None, "x"], "nested": {"ok": True}},
        "text": "h\u00e9llo \u2603",
    }
    with maker.begin() as session:
        session.add(Everything(id=1, **values))
    with maker() as session:
        row = session.get(Everything, 1)
        session.commit()
        assert row is not None
        row.text = "changed"
        session.commit()
    insert, update = published.events
    with maker() as session:
        stored = session.get(Everything, 1)
        assert stored is not None
        in_db = {key: getattr(stored, key) for key in values if key != "text"}
    resolver = registry_resolver(Color)
    assert insert.after is not None
    assert update.before is not None
    # The insert reports what the application wrote; the next change's before image
    # reports what the database kept (MariaDB DATETIME/TIME drop microseconds).
    after = decode_row(insert.after, enum_resolver=resolver)
    assert {key: after[key] for key in values} == values
    before = decode_row(update.before, enum_resolver=resolver)
    assert {key: before[key] for key in in_db} == in_db
    assert update.changed_columns == ("text",)


@pytest.mark.postgres
def test_postgres_array_jsonb_and_aware_datetime(postgres_engine: Engine) -> None:
    """On PostgreSQL, ARRAY, JSONB and timestamptz values round-trip exactly."""

    class PgBase(DeclarativeBase):
        pass

    class PgThing(PgBase):
        __tablename__ = "pg_things"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[str]] = mapped_column(pg.ARRAY(sa.String))
        grid: Mapped[list[list[int]]] = mapped_column(pg.ARRAY(sa.Integer, dimensions=2))
        doc: Mapped[dict[str, Any]] = mapped_column(pg.JSONB)
        at: Mapped[dt.datetime] = mapped_column(sa.DateTime(timezone=True))

    PgBase.metadata.create_all(postgres_engine)
    maker = sessionmaker(postgres_engine)
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="pg", unknown_types="error", models=[PgThing])
    at = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    try:
        with maker.begin() as session:
            session.add(
                PgThing(id=1, tags=["a", "b"], grid=[[1, 2], [3, 4]], doc={"$type": 1}, at=at)
            )
        with maker() as session:
            thing = session.get(PgThing, 1)
            session.commit()
            assert thing is not None
            thing.tags = [*thing.tags, "c"]
            session.commit()
    finally:
        uninstall_audit(maker)
        PgBase.metadata.drop_all(postgres_engine)
    insert, update = publisher.events
    assert insert.after is not None
    assert update.before is not None
    assert update.after is not None
    after = decode_row(insert.after)
    assert (after["tags"], after["grid"], after["doc"], after["at"]) == (
        ["a", "b"],
        [[1, 2], [3, 4]],
        {"$type": 1},
        at,
    )
    loaded_at = decode_row(update.before)["at"]
    assert loaded_at == at
    assert (update.changed_columns, update.after["tags"]) == (("tags",), ["a", "b", "c"])
    assert_valid_events(publisher.events)


class _JSONText(sa.TypeDecorator[Any]):
    """JSON kept as escaped text: MariaDB's JSON type refuses a lone surrogate itself."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else json.dumps(value)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


def test_lone_surrogate_in_json_commits_in_outbox_mode(db_engine: Engine) -> None:
    """A JSON value with lone surrogates commits in outbox mode; the row decodes to it exactly."""

    class SurrogateBase(DeclarativeBase):
        pass

    class Note(SurrogateBase):
        __tablename__ = "surrogate_notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        doc: Mapped[Any] = mapped_column(sa.JSON().with_variant(_JSONText(), "mariadb", "mysql"))

    table = outbox_table(SurrogateBase.metadata, name="surrogate_outbox")
    SurrogateBase.metadata.drop_all(db_engine)
    SurrogateBase.metadata.create_all(db_engine)
    maker = sessionmaker(db_engine)
    doc = {"text": "\ud800", "k\udfff": ["a\udc80b", {"deep": "\udbff", "ok": "é"}]}
    install_audit(maker, outbox=OutboxWriter(table), service="notes")
    try:
        with maker.begin() as session:
            session.add(Note(id=1, doc=doc))
        with maker.begin() as session:
            session.get_one(Note, 1).doc = {**doc, "text": "x\udc00"}
        with maker() as session:
            stored = session.get_one(Note, 1).doc
            payloads = session.scalars(sa.select(table.c.payload).order_by(table.c.id)).all()
    finally:
        uninstall_audit(maker)
        SurrogateBase.metadata.drop_all(db_engine)
    assert stored == {**doc, "text": "x\udc00"}
    insert, update = (ChangeEvent.from_json(payload) for payload in payloads)
    assert insert.after is not None
    assert update.before is not None
    assert update.after is not None
    assert decode_row(insert.after)["doc"] == doc
    assert decode_row(update.before)["doc"] == doc
    assert decode_row(update.after)["doc"] == {**doc, "text": "x\udc00"}
