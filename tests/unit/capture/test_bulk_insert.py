"""Bulk INSERT statements through Session.execute: every form, keys given or generated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Country, Manager, User, brief, seed
from sqlalchemy import insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit.bulk import REASON_KEYS_UNKNOWN, REASON_KEYS_UNMATCHED, REASON_UPSERT
from sqla_audit.events import MARKER_METADATA_KEY
from sqla_audit.publishers.memory import InMemoryPublisher

pytestmark = pytest.mark.usefixtures("alice")


class OtherBase(DeclarativeBase):
    pass


class Handle(OtherBase):
    """A table with a unique column besides its key (upserts may hit another row)."""

    __tablename__ = "handles"

    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[str] = mapped_column(sa.String(20), unique=True)


def _user(i: int, name: str) -> dict[str, Any]:
    return {"id": i, "name": name, "email": None, "login_count": 0, "bio": None}


def _inserts(published: InMemoryPublisher) -> list[tuple[str, Any]]:
    return [(e.record_id, e.after) for e in published.events if e.operation.value == "insert"]


@pytest.fixture
def no_returning(engine: Engine) -> Iterator[None]:
    """Make the SQLite dialect behave like one without INSERT ... RETURNING."""
    dialect = engine.dialect
    saved = (dialect.insert_returning, dialect.insert_executemany_returning)
    dialect.insert_returning = False
    dialect.insert_executemany_returning = False  # type: ignore[misc]
    yield
    dialect.insert_returning, dialect.insert_executemany_returning = saved  # type: ignore[misc]


def test_list_of_dicts_with_keys(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """insert(Model) with dicts naming their keys: one insert each, server defaults included."""
    with maker.begin() as session:
        session.execute(
            insert(User), [{"id": 2, "display_name": "b"}, {"id": 1, "display_name": "a"}]
        )
    assert [brief(e) for e in published.events] == [
        {
            "op": "insert",
            "table": "users",
            "record_id": str(i),
            "previous_record_id": None,
            "before": None,
            "after": _user(i, name),
            "changed": ["id", "name", "email", "login_count", "bio"],
            "actor": "alice",
            "sequence": n,
        }
        for n, (i, name) in enumerate([(2, "b"), (1, "a")])
    ]


def test_list_of_dicts_with_generated_keys(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Generated keys come back through RETURNING; the caller's result stays row-less."""
    with maker.begin() as session:
        result = session.execute(insert(User), [{"display_name": "a"}, {"display_name": "b"}])
        with pytest.raises(sa.exc.ResourceClosedError):
            result.all()
    assert _inserts(published) == [("1", _user(1, "a")), ("2", _user(2, "b"))]


def test_multi_values_with_and_without_keys(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """insert(Model).values([...]) is captured whether or not the rows name their keys."""
    with maker.begin() as session:
        session.execute(
            insert(User).values([{"id": 5, "display_name": "e"}, {"id": 6, "name": "f"}])
        )
        result = session.execute(
            insert(User).values([{"display_name": "g"}, {"display_name": "h"}])
        )
        assert result.rowcount == 2  # type: ignore[attr-defined]
    assert _inserts(published) == [
        ("5", _user(5, "e")),
        ("6", _user(6, "f")),
        ("7", _user(7, "g")),
        ("8", _user(8, "h")),
    ]


def test_single_row_values_uses_the_drivers_key(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """insert(Model).values(...) of one row: the statement is unchanged, the key is the driver's."""
    with maker.begin() as session:
        result = session.execute(insert(User).values(display_name="solo"))
        assert result.inserted_primary_key == (1,)  # type: ignore[attr-defined]
        session.execute(insert(User), {"display_name": "dict"})
    assert _inserts(published) == [("1", _user(1, "solo")), ("2", _user(2, "dict"))]


def test_application_returning_is_preserved(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """The application's RETURNING rows (columns or entities) are unchanged and give the keys."""
    with maker.begin() as session:
        ids = session.scalars(
            insert(User).returning(User.id), [{"display_name": "a"}, {"display_name": "b"}]
        ).all()
        users = session.scalars(insert(User).values(display_name="c").returning(User)).all()
        assert ids == [1, 2]
        assert [u.display_name for u in users] == ["c"]
    assert [record_id for record_id, _ in _inserts(published)] == ["1", "2", "3"]


def test_insert_from_select(maker: sessionmaker[Session], published: InMemoryPublisher) -> None:
    """INSERT ... SELECT rows are captured through RETURNING of their keys."""
    seed(maker, published, Country(code="A", name="Ann"))
    with maker.begin() as session:
        session.execute(
            insert(User).from_select(["name"], select(Country.name).where(Country.code == "A"))
        )
    assert _inserts(published) == [("1", _user(1, "Ann"))]


def test_joined_inheritance_bulk_insert(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A bulk insert of a joined subclass is one event per object on the base table."""
    with maker.begin() as session:
        session.execute(insert(Manager), [{"name": "m1", "budget": 1}, {"name": "m2", "budget": 2}])
    assert [(e.table, e.record_id, e.after) for e in published.events] == [
        (
            "employees",
            str(i),
            {
                "id": i,
                "name": f"m{i}",
                "kind": "manager",
                "language": None,
                "budget": {"$type": "decimal", "v": f"{i}.00"},
            },
        )
        for i in (1, 2)
    ]


def test_generated_keys_without_returning_give_a_marker(
    maker: sessionmaker[Session], published: InMemoryPublisher, no_returning: None
) -> None:
    """Without RETURNING, rows with database-generated keys are reported by one marker."""
    with maker.begin() as session:
        session.execute(insert(User), [{"display_name": "a"}, {"display_name": "b"}])
        session.execute(insert(User), [{"id": 10, "display_name": "keyed"}])
    marker, keyed = published.events
    assert (marker.record_id, marker.operation.value, marker.after) == ("*", "insert", {})
    assert marker.metadata[MARKER_METADATA_KEY] == {
        "reason": REASON_KEYS_UNKNOWN,
        "operation": "insert",
        "rows": 2,
        "itemized": 0,
        "max_bulk_rows": 10_000,
        "statement": "INSERT INTO users (id, name, email, login_count, bio) VALUES (?, ?, ?, ?, ?)",
    }
    assert keyed.record_id == "10"


def test_upsert_on_the_primary_key_is_itemized(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An upsert keyed by the primary key gives inserts for new rows and updates for others."""
    seed(maker, published, Country(code="A", name="old"))
    stmt = sqlite.insert(Country)
    stmt = stmt.on_conflict_do_update(index_elements=["code"], set_={"name": stmt.excluded.name})
    with maker.begin() as session:
        session.execute(stmt, [{"code": "A", "name": "new"}, {"code": "B", "name": "b"}])
        session.execute(
            sqlite.insert(Country).on_conflict_do_nothing(), [{"code": "A", "name": "ignored"}]
        )
    assert [(e.operation.value, e.record_id, e.before, e.after) for e in published.events] == [
        ("update", "A", {"code": "A", "name": "old"}, {"code": "A", "name": "new"}),
        ("insert", "B", None, {"code": "B", "name": "b"}),
    ]


def test_upsert_on_a_table_with_another_unique_key_gives_a_marker(
    engine: Engine, maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An upsert that may hit another unique key is not guessed at: one marker."""
    OtherBase.metadata.create_all(engine)
    stmt = sqlite.insert(Handle).on_conflict_do_nothing()
    with maker.begin() as session:
        session.execute(stmt, [{"id": 1, "handle": "ann"}])
    (marker,) = published.events
    assert marker.metadata[MARKER_METADATA_KEY]["reason"] == REASON_UPSERT  # type: ignore[index]
    assert marker.record_id == "*"


def test_insert_then_bulk_delete_in_one_transaction_yields_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A bulk insert coalesces with a later bulk delete of the same rows."""
    with maker.begin() as session:
        session.execute(insert(Country), [{"code": "A", "name": "a"}, {"code": "B", "name": "b"}])
        session.execute(sa.delete(Country).where(Country.code == "A"))
    assert [(e.operation.value, e.record_id) for e in published.events] == [("insert", "B")]


@pytest.mark.parametrize("key", ["07", " 7", "7.0", "7.00", 7.0])
def test_key_the_database_normalises_is_itemized(
    maker: sessionmaker[Session], published: InMemoryPublisher, key: Any
) -> None:
    """insert(Model).values(id=<text or float of 7>) on an Integer key yields row 7's insert."""
    with maker.begin() as session:
        session.execute(insert(User).values(id=key, display_name="a"))
    assert _inserts(published) == [("7", _user(7, "a"))]


def test_executemany_keys_the_database_normalises_are_itemized(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """insert(Model) with key texts "08" and "09" yields the inserts of rows 8 and 9, in order."""
    with maker.begin() as session:
        session.execute(
            insert(User), [{"id": "09", "display_name": "b"}, {"id": "08", "display_name": "a"}]
        )
    assert _inserts(published) == [("9", _user(9, "b")), ("8", _user(8, "a"))]


def test_upsert_with_normalised_keys_is_itemized(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An upsert naming keys as text yields the update of the existing row and the new insert."""
    seed(maker, published, User(id=1, display_name="old"))
    statement = sqlite.insert(User).values(
        [{"id": "01", "display_name": "new"}, {"id": "02", "display_name": "two"}]
    )
    statement = statement.on_conflict_do_update(
        index_elements=[User.id], set_={"name": statement.excluded.name}
    )
    with maker.begin() as session:
        session.execute(statement)
    assert [(e.operation.value, e.record_id) for e in published.events] == [
        ("update", "1"),
        ("insert", "2"),
    ]


class Moved(OtherBase):
    """A table whose trigger moves each inserted row to another key."""

    __tablename__ = "moved"

    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str] = mapped_column(sa.String(20))


def test_inserted_row_not_found_by_its_key_gives_a_marker(
    engine: Engine, maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A bulk INSERT row that cannot be read back by its given key is reported by a marker."""
    OtherBase.metadata.create_all(engine, tables=[Moved.__table__])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER move_it AFTER INSERT ON moved "
            "BEGIN UPDATE moved SET id = NEW.id + 1000 WHERE id = NEW.id; END"
        )
    with maker.begin() as session:
        session.execute(insert(Moved), [{"id": 1, "note": "a"}, {"id": 2, "note": "b"}])
    (marker,) = published.events
    assert marker.is_marker
    description = marker.metadata[MARKER_METADATA_KEY]
    assert isinstance(description, dict)
    assert (description["reason"], description["rows"], description["itemized"]) == (
        REASON_KEYS_UNMATCHED,
        2,
        0,
    )
