"""Bulk DELETE statements through Session.execute, and the transaction rules for bulk changes."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Country, Employee, Manager, User, brief, one_transaction, seed
from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit.publishers.memory import InMemoryPublisher

pytestmark = pytest.mark.usefixtures("alice")


def _seed(maker: sessionmaker[Session], published: InMemoryPublisher, *codes: str) -> None:
    with maker.begin() as session:
        session.add_all([Country(code=code, name=f"name {code}") for code in codes])
    published.clear()


def _ops(published: InMemoryPublisher) -> list[tuple[str, str]]:
    return [(e.operation.value, e.record_id) for e in published.events]


@pytest.mark.parametrize("synchronize", ["auto", "evaluate", "fetch", False])
def test_delete_where_gives_the_deleted_rows(
    maker: sessionmaker[Session], published: InMemoryPublisher, synchronize: str | bool
) -> None:
    """A DELETE ... WHERE yields one delete per row with its full before image."""
    _seed(maker, published, "A", "B", "C")
    with maker.begin() as session:
        session.get(Country, "A")
        stmt = (
            delete(Country)
            .where(Country.code.in_(["A", "C", "Z"]))
            .execution_options(synchronize_session=synchronize)
        )
        assert session.execute(stmt).rowcount == 2  # type: ignore[attr-defined]
    events = published.events
    assert [brief(e) for e in events] == [
        {
            "op": "delete",
            "table": "countries",
            "record_id": code,
            "previous_record_id": None,
            "before": {"code": code, "name": f"name {code}"},
            "after": None,
            "changed": ["code", "name"],
            "actor": "alice",
            "sequence": n,
        }
        for n, code in enumerate("AC")
    ]
    one_transaction(events)


def test_legacy_query_delete_is_captured(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Query.delete() is an ORM DELETE statement and is captured."""
    _seed(maker, published, "A", "B")
    with maker.begin() as session:
        assert session.query(Country).filter(Country.code == "B").delete() == 1
    assert _ops(published) == [("delete", "B")]


def test_delete_with_returning_keeps_the_application_result(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """The application's own RETURNING rows come back unchanged; the deletes are captured."""
    _seed(maker, published, "A", "B")
    with maker.begin() as session:
        rows = session.execute(delete(Country).returning(Country.code)).all()
    assert sorted(code for (code,) in rows) == ["A", "B"]
    assert _ops(published) == [("delete", "A"), ("delete", "B")]


def test_deleting_rows_inserted_in_the_same_transaction_yields_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """insert (flush) then bulk delete of the same row coalesce to nothing."""
    _seed(maker, published, "A")
    with maker.begin() as session:
        session.add(Country(code="N", name="new"))
        session.execute(delete(Country).where(Country.code.in_(["A", "N"])))
    assert _ops(published) == [("delete", "A")]


def test_update_then_delete_reports_the_original_row(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A bulk update then a bulk delete of one row is one delete with the original before."""
    _seed(maker, published, "A")
    with maker.begin() as session:
        session.execute(update(Country).values(name="changed"))
        session.execute(delete(Country))
    (event,) = published.events
    assert (event.operation.value, event.before) == ("delete", {"code": "A", "name": "name A"})


def test_rolled_back_bulk_statements_yield_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A rolled-back transaction with bulk statements publishes nothing."""
    _seed(maker, published, "A", "B")
    with maker() as session:
        session.execute(update(Country).values(name="x"))
        session.execute(delete(Country).where(Country.code == "A"))
        session.execute(sa.insert(Country), [{"code": "C", "name": "c"}])
        session.rollback()
    assert published.events == []
    with maker() as session:
        assert session.get(Country, "A") is not None


def test_rolled_back_savepoint_discards_its_bulk_changes(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A SAVEPOINT rolled back drops exactly the bulk changes made inside it."""
    _seed(maker, published, "A", "B")
    with maker.begin() as session:
        session.execute(update(Country).where(Country.code == "A").values(name="outer"))
        savepoint = session.begin_nested()
        session.execute(delete(Country).where(Country.code == "B"))
        session.execute(update(Country).values(name="inner"))
        savepoint.rollback()
        with session.begin_nested():
            session.execute(delete(Country).where(Country.code == "B"))
    events = published.events
    assert [(e.operation.value, e.record_id, e.after) for e in events] == [
        ("update", "A", {"code": "A", "name": "outer"}),
        ("delete", "B", None),
    ]
    one_transaction(events)


def test_failing_statement_propagates_and_runs_once(
    engine: sa.Engine, maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A bulk statement that fails in the database raises as usual; nothing is published."""
    _seed(maker, published, "A", "B")
    executed: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        executed.append(statement.split(maxsplit=1)[0])

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with pytest.raises(sa.exc.IntegrityError), maker.begin() as session:
            session.execute(update(Country).where(Country.code == "A").values(code="B"))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert executed.count("UPDATE") == 1
    assert published.events == []


def test_joined_subclass_delete_is_reported_on_the_base_table(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """delete(Manager) is reported as the deletion of the object (base table, all columns)."""
    seed(maker, published, Manager(id=1, name="m", budget=5), Employee(id=2, name="e"))
    with maker.begin() as session:
        session.execute(delete(Manager).where(Manager.budget == 5))
    (event,) = published.events
    assert (event.table, event.record_id, event.operation.value) == ("employees", "1", "delete")
    assert event.before is not None
    assert event.before["budget"] == {"$type": "decimal", "v": "5.00"}


def test_delete_of_missing_rows_yields_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A DELETE that matches nothing publishes nothing."""
    with maker.begin() as session:
        session.execute(delete(User).where(User.id == 1))
    assert published.events == []
