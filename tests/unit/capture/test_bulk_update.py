"""Bulk UPDATE statements through Session.execute: one event per changed row, before/after."""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import (
    Account,
    Counter,
    Employee,
    Engineer,
    Manager,
    Scratch,
    Stock,
    User,
    brief,
    one_transaction,
    seed,
)
from sqlalchemy import event, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import ChangeEvent, audit_context, install_audit, uninstall_audit
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.publishers.memory import InMemoryPublisher

pytestmark = pytest.mark.usefixtures("alice")


def _seed_users(maker: sessionmaker[Session], published: InMemoryPublisher, count: int = 4) -> None:
    with maker.begin() as session:
        for i in range(1, count + 1):
            session.add(User(id=i, display_name=f"u{i}", email=f"u{i}@x", bio=f"bio{i}"))
    published.clear()


def _row(i: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": i,
        "name": f"u{i}",
        "email": f"u{i}@x",
        "login_count": 0,
        "bio": f"bio{i}",
    }
    row.update(changes)
    return row


def _changes(published: InMemoryPublisher) -> list[tuple[str, str, list[str]]]:
    return [(e.operation.value, e.record_id, list(e.changed_columns)) for e in published.events]


@pytest.mark.parametrize("synchronize", ["auto", "evaluate", "fetch", False])
def test_update_where_gives_one_event_per_matched_row(
    maker: sessionmaker[Session], published: InMemoryPublisher, synchronize: str | bool
) -> None:
    """An UPDATE ... WHERE yields exact before/after images per row, whatever the sync option."""
    _seed_users(maker, published)
    with maker.begin() as session:
        loaded = session.get(User, 2)
        stmt = (
            update(User)
            .where(User.id >= 2, User.id <= 3)
            .values(display_name="renamed")
            .execution_options(synchronize_session=synchronize)
        )
        result = session.execute(stmt)
        assert result.rowcount == 2  # type: ignore[attr-defined]
        assert loaded is not None
    events = published.events
    assert [brief(e) for e in events] == [
        {
            "op": "update",
            "table": "users",
            "record_id": str(i),
            "previous_record_id": None,
            "before": _row(i),
            "after": _row(i, name="renamed"),
            "changed": ["name"],
            "actor": "alice",
            "sequence": n,
        }
        for n, i in enumerate((2, 3))
    ]
    assert all(e.request_id == "req-1" for e in events)
    one_transaction(events)


def test_sql_expressions_and_onupdate_values_are_read_back(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """After images come from the database: SQL expressions and onupdate columns included."""
    seed(maker, published, Counter(id=1, value=5), Counter(id=2, value=7))
    with maker.begin() as session:
        session.execute(update(Counter).values(value=Counter.value * 10))
    assert [
        (e.record_id, e.before, e.after, list(e.changed_columns)) for e in published.events
    ] == [
        (
            "1",
            {"id": 1, "value": 5, "revision": 1},
            {"id": 1, "value": 50, "revision": 2},
            ["value", "revision"],
        ),
        (
            "2",
            {"id": 2, "value": 7, "revision": 1},
            {"id": 2, "value": 70, "revision": 2},
            ["value", "revision"],
        ),
    ]


def test_update_that_changes_nothing_yields_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Rows whose audited values end up equal produce no event (as for flushes)."""
    _seed_users(maker, published, 2)
    with maker.begin() as session:
        session.execute(update(User).values(display_name=User.display_name))
        session.execute(update(User).where(User.id == 99).values(email="nobody"))
    assert published.events == []


def test_update_by_primary_key_with_a_list_of_dicts(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """update(Model) with parameter dicts: each keyed row is an event; unchanged rows none."""
    _seed_users(maker, published, 3)
    with maker.begin() as session:
        session.execute(
            update(User),
            [
                {"id": 3, "email": "three@x"},
                {"id": 1, "display_name": "one", "email": "u1@x"},
                {"id": 2, "email": "u2@x"},
            ],
        )
    assert [brief(e)["before"] for e in published.events] == [_row(1), _row(3)]
    assert [brief(e)["after"] for e in published.events] == [
        _row(1, name="one"),
        _row(3, email="three@x"),
    ]
    assert _changes(published) == [("update", "1", ["name"]), ("update", "3", ["email"])]


def test_update_by_primary_key_with_extra_criteria(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Rows the extra WHERE of a by-key UPDATE leaves alone produce no event."""
    _seed_users(maker, published, 3)
    with maker.begin() as session:
        session.execute(
            update(User).where(User.email != "u2@x").execution_options(synchronize_session=None),
            [{"id": 1, "email": "a"}, {"id": 2, "email": "b"}, {"id": 3, "email": "c"}],
        )
    assert _changes(published) == [("update", "1", ["email"]), ("update", "3", ["email"])]


def test_bound_parameters_of_the_where_clause_are_honoured(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A WHERE with bindparam() values given to execute() selects the same rows."""
    _seed_users(maker, published, 3)
    stmt = (
        update(User)
        .where(User.id == sa.bindparam("target"))
        .values(email=sa.bindparam("new_email"))
    )
    with maker.begin() as session:
        session.execute(stmt, {"target": 2, "new_email": "two@x"})
    assert [(e.record_id, e.after["email"] if e.after else None) for e in published.events] == [
        ("2", "two@x")
    ]


def test_legacy_query_update_is_captured(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Query.update() runs an ORM UPDATE statement and is captured the same way."""
    _seed_users(maker, published, 3)
    with maker.begin() as session:
        count = session.query(User).filter(User.id < 3).update({User.email: "legacy"})
        assert count == 2
    assert _changes(published) == [("update", "1", ["email"]), ("update", "2", ["email"])]


def test_masked_and_excluded_columns(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Masked columns never leave as values; a change of excluded columns only is silent."""
    seed(maker, published, Account(id=1, login="ann", password_hash="secret-1", last_seen=1))
    with maker.begin() as session:
        session.execute(update(Account).values(password_hash="secret-2"))
        session.execute(update(Account).values(last_seen=2))
    (event,) = published.events
    masked = {"$type": "masked", "v": None}
    assert event.before == {"id": 1, "login": "ann", "password_hash": masked}
    assert event.after == {"id": 1, "login": "ann", "password_hash": masked}
    assert event.changed_columns == ("password_hash",)
    assert event.masked_columns == ("password_hash",)
    assert "secret" not in event.to_json()


def test_composite_keys(maker: sessionmaker[Session], published: InMemoryPublisher) -> None:
    """Composite primary keys give composite record ids; by-key updates work with them."""
    with maker.begin() as session:
        session.add_all(
            [Stock(warehouse="w:1", sku="a", quantity=1), Stock(warehouse="w2", sku="b")]
        )
    published.clear()
    with maker.begin() as session:
        session.execute(update(Stock).where(Stock.sku == "a").values(quantity=5))
        session.execute(update(Stock), [{"warehouse": "w2", "sku": "b", "quantity": 9}])
    assert [(e.record_id, e.primary_key, e.after) for e in published.events] == [
        (
            "w%3A1:a",
            {"warehouse": "w:1", "sku": "a"},
            {"warehouse": "w:1", "sku": "a", "quantity": 5},
        ),
        ("w2:b", {"warehouse": "w2", "sku": "b"}, {"warehouse": "w2", "sku": "b", "quantity": 9}),
    ]


def test_joined_and_single_table_inheritance(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Subclass statements report the base table with the subclass's columns, only its rows."""
    with maker.begin() as session:
        session.add_all(
            [
                Manager(id=1, name="m", budget=10),
                Engineer(id=2, name="e", language="py"),
                Employee(id=3, name="plain"),
            ]
        )
    published.clear()
    with maker.begin() as session:
        session.execute(update(Manager).where(Manager.budget == 10).values(budget=20))
        session.execute(update(Engineer).values(language="rust"))
        session.execute(update(Manager), [{"id": 1, "name": "boss", "budget": 30}])
    events = published.events
    assert [(e.table, e.record_id, list(e.changed_columns)) for e in events] == [
        ("employees", "1", ["name", "budget"]),
        ("employees", "2", ["language"]),
    ]
    assert events[0].before == {
        "id": 1,
        "name": "m",
        "kind": "manager",
        "language": None,
        "budget": {"$type": "decimal", "v": "10.00"},
    }
    assert events[0].after is not None
    assert events[0].after["budget"] == {"$type": "decimal", "v": "30.00"}


def test_bulk_update_coalesces_with_flushed_changes(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A row inserted by a flush and then bulk-updated is one insert with the final values."""
    _seed_users(maker, published, 1)
    with maker.begin() as session:
        session.add(User(id=10, display_name="new", email="n@x"))
        user = session.get(User, 1)
        assert user is not None
        user.email = "flushed@x"
        session.execute(update(User).values(login_count=User.login_count + 1))
    events = published.events
    assert [(e.operation.value, e.record_id) for e in events] == [("insert", "10"), ("update", "1")]
    assert events[0].after is not None
    assert events[0].after["login_count"] == 1
    assert events[1].before == _row(1)
    assert events[1].after == _row(1, email="flushed@x", login_count=1)
    assert events[1].changed_columns == ("email", "login_count")


def test_autoflush_option_false_leaves_pending_rows_alone(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """With autoflush disabled the pending object is not part of the bulk statement."""
    _seed_users(maker, published, 1)
    with maker.begin() as session:
        session.add(User(id=10, display_name="new"))
        session.execute(update(User).values(email="bulk").execution_options(autoflush=False))
    assert [
        (e.operation.value, e.record_id, e.after and e.after["email"]) for e in published.events
    ] == [
        ("update", "1", "bulk"),
        ("insert", "10", None),
    ]


def test_disabled_and_excluded_models_are_not_read(
    engine: sa.Engine, maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A model that is not audited costs no extra statement and yields no event."""
    with maker.begin() as session:
        session.add(Scratch(id=1, note="a"))
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with maker.begin() as session:
            session.execute(update(Scratch).values(note="b"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert published.events == []
    assert [s.split()[0] for s in statements if not s.startswith(("BEGIN", "COMMIT"))] == ["UPDATE"]


class _CountingPublisher:
    """A publisher that only counts (the schema check of 1,000 events is not this test's)."""

    def __init__(self) -> None:
        self.count = 0

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        self.count += len(events)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None


def test_statement_cost_is_one_read_before_and_the_update_returning_its_rows(
    engine: sa.Engine, maker: sessionmaker[Session]
) -> None:
    """A 1,000-row UPDATE on SQLite costs one SELECT before it and no read after it (the
    UPDATE returns the after images)."""
    with maker.begin() as session:
        session.execute(sa.insert(User), [{"id": i, "display_name": f"u{i}"} for i in range(1000)])
    publisher = _CountingPublisher()
    install_audit(maker, publisher=publisher, service="shop")
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(maxsplit=1)[0])

    event.listen(engine, "before_cursor_execute", record)
    try:
        with maker.begin() as session:
            session.execute(update(User).values(email="all"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
        uninstall_audit(maker)
    assert [s for s in statements if s not in ("BEGIN", "COMMIT")] == ["SELECT", "UPDATE"]
    assert publisher.count == 1000


def test_core_statements_on_tables_are_not_captured(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Statements on a Table (not the mapped class) are Core: documented as not captured."""
    _seed_users(maker, published, 1)
    users = User.__table__
    with maker.begin() as session:
        session.execute(update(users).values(email="core"))
        session.execute(sa.text("UPDATE users SET email = 'text'"))
    assert published.events == []


def test_select_statements_pass_through(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """ORM SELECTs are untouched by the listener."""
    _seed_users(maker, published, 2)
    with maker() as session:
        assert session.scalars(select(User.id).order_by(User.id)).all() == [1, 2]
    assert published.events == []


def test_metadata_hook_sees_bulk_changes(maker: sessionmaker[Session]) -> None:
    """The metadata hook is applied to bulk changes as to flushed ones."""
    publisher = InMemoryPublisher()
    install_audit(
        maker,
        publisher=publisher,
        service="shop",
        metadata_hook=lambda session, change: {"via": change.operation.value},
    )
    try:
        with maker.begin() as session:
            session.add(User(id=1, display_name="a"))
        publisher.clear()
        with audit_context(actor="bob", source="job"), maker.begin() as session:
            session.execute(update(User).values(email="e"))
    finally:
        uninstall_audit(maker)
    (event_,) = publisher.events
    assert event_.metadata == {"source": "job", "via": "update"}
    assert event_.actor is not None
    assert event_.actor.id == "bob"


def test_outbox_mode_writes_bulk_changes_in_the_transaction(
    maker: sessionmaker[Session],
) -> None:
    """In outbox mode bulk changes are written by the writer at commit."""
    writer = InMemoryTransactionalWriter()
    with maker.begin() as session:
        session.add_all([User(id=1, display_name="a"), User(id=2, display_name="b")])
    install_audit(maker, outbox=writer, service="shop")
    try:
        with maker.begin() as session:
            session.execute(update(User).values(email="o"))
    finally:
        uninstall_audit(maker)
    assert [(e.record_id, e.changed_columns) for e in writer.events] == [
        ("1", ("email",)),
        ("2", ("email",)),
    ]


def test_update_with_application_returning(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """The application's RETURNING rows of an UPDATE are returned unchanged."""
    _seed_users(maker, published, 2)
    with maker.begin() as session:
        rows = session.execute(update(User).values(email="r").returning(User.id, User.email)).all()
    assert sorted(tuple(row) for row in rows) == [(1, "r"), (2, "r")]
    assert _changes(published) == [("update", "1", ["email"]), ("update", "2", ["email"])]


class _DecimalText(sa.types.TypeDecorator[decimal.Decimal]):
    """Stores a Decimal as its exact text, so equal values can read back differently."""

    impl = sa.String(40)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Any) -> decimal.Decimal | None:
        return None if value is None else decimal.Decimal(value)


class _ReadingBase(DeclarativeBase):
    pass


class _Reading(_ReadingBase):
    __tablename__ = "bulk_readings"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[decimal.Decimal] = mapped_column(_DecimalText())
    note: Mapped[str]


def test_after_image_keeps_the_new_encoding_of_an_equal_value() -> None:
    """An equal but differently written new value (1.00 for 1.0) appears as written."""
    engine = sa.create_engine("sqlite://")
    _ReadingBase.metadata.create_all(engine)
    local_maker = sessionmaker(engine)
    publisher = InMemoryPublisher()
    install_audit(local_maker, publisher=publisher, service="t")
    try:
        with local_maker.begin() as session:
            session.add(_Reading(id=1, value=decimal.Decimal("1.0"), note="a"))
        publisher.clear()
        with local_maker.begin() as session:
            session.execute(
                update(_Reading).where(_Reading.id == 1).values(value="1.00", note="b"),
                execution_options={"synchronize_session": False},
            )
        (event_,) = publisher.events
        assert event_.changed_columns == ("note",)
        assert event_.before is not None
        assert event_.after is not None
        assert event_.before["value"] == {"$type": "decimal", "v": "1.0"}
        assert event_.after["value"] == {"$type": "decimal", "v": "1.00"}
    finally:
        uninstall_audit(local_maker)
        engine.dispose()


@pytest.mark.parametrize("synchronize", ["auto", "evaluate", "fetch", False])
def test_bulk_update_survives_a_later_flush_of_a_loaded_object(
    maker: sessionmaker[Session], published: InMemoryPublisher, synchronize: str | bool
) -> None:
    """A bulk UPDATE, then a flush of another column of the loaded row: both changes are kept."""
    _seed_users(maker, published, 3)
    with maker.begin() as session:
        user = session.get(User, 3)
        assert user is not None
        session.execute(
            update(User)
            .where(User.id == 3)
            .values(login_count=700)
            .execution_options(synchronize_session=synchronize)
        )
        user.email = "later@x"
    with maker() as session:
        assert session.scalar(select(User.login_count).where(User.id == 3)) == 700
    (event,) = published.events
    assert (event.before, event.after, event.changed_columns) == (
        _row(3),
        _row(3, email="later@x", login_count=700),
        ("email", "login_count"),
    )


@pytest.mark.parametrize("synchronize", ["auto", "evaluate", "fetch", False])
def test_insert_then_bulk_update_then_flush_keeps_the_bulk_value(
    maker: sessionmaker[Session], published: InMemoryPublisher, synchronize: str | bool
) -> None:
    """A flushed insert, a bulk UPDATE, then a flush of another column: one insert, final row."""
    with maker.begin() as session:
        user = User(id=5, display_name="u5", email="u5@x", bio="bio5")
        session.add(user)
        session.flush()
        session.execute(
            update(User)
            .where(User.id == 5)
            .values(login_count=9)
            .execution_options(synchronize_session=synchronize)
        )
        user.email = "later@x"
    (event,) = published.events
    assert (event.operation.value, event.after) == (
        "insert",
        _row(5, email="later@x", login_count=9),
    )


@pytest.mark.parametrize("by_key", [False, True], ids=["where", "by-primary-key"])
def test_stale_object_in_a_later_transaction_reports_the_database_values(
    engine: sa.engine.Engine, by_key: bool
) -> None:
    """expire_on_commit=False: a later flush of an object a bulk UPDATE made stale shows the
    bulk value in both images, for an assigned attribute and for a synchronized foreign key."""
    from capture_model import Item, ModelBase, Owner  # noqa: PLC0415 -- its own tables

    from sqla_audit.testing import capture_events  # noqa: PLC0415

    ModelBase.metadata.create_all(engine)
    maker = sessionmaker(engine, expire_on_commit=False)
    with capture_events(maker) as published, maker() as session:
        with session.begin():
            owner = Owner(id=1, name="o")
            session.add_all(
                [
                    Item(id=1, name="i", price=1, owner=owner),
                    Item(id=2, name="j", price=2, owner=owner),
                ]
            )
        with session.begin():
            if by_key:
                session.execute(update(Item), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
            else:
                statement = update(Item).values(name=sa.func.upper(Item.name))
                session.execute(statement.execution_options(synchronize_session=False))
        with session.begin():
            session.get(Item, 1).price = 5  # type: ignore[union-attr]
        with session.begin():
            session.delete(owner)  # sets both items' owner_id to NULL
        with maker() as reader:
            stored = {i.id: i.name for i in reader.scalars(select(Item))}
        images = [
            (e.record_id, e.before["name"], e.after["name"])  # type: ignore[index]
            for e in published.events
            if e.table == "model_items" and e.operation.value == "update"
        ]
    assert stored == ({1: "a", 2: "b"} if by_key else {1: "I", 2: "J"})
    bulk, later = images[:2], images[2:]
    assert later == [
        ("1", stored[1], stored[1]),
        ("1", stored[1], stored[1]),
        ("2", stored[2], stored[2]),
    ]
    assert [after for _, _, after in bulk] == [stored[1], stored[2]]
