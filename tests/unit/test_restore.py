"""Restoring records through the audited session, on SQLite, over the memory and SQLite stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import restore_support as rs
import sqlalchemy as sa

from consumer.restore import (
    NotAudited,
    RecordMoved,
    StaleRecord,
    UnrestorableColumns,
    plan_link_restore,
    plan_restore,
    plan_undo_transaction,
)
from consumer.sinks.base import AuditStore
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[rs.Shop]:
    store: AuditStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "audit.db")
    )
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    made = rs.Shop(engine, store)
    try:
        yield made
    finally:
        made.close()
        store.close()
        engine.dispose()


@pytest.mark.parametrize("scenario", rs.SCENARIOS, ids=lambda s: s.__name__)
def test_restore_scenario(shop: rs.Shop, scenario: Callable[[rs.Shop], None]) -> None:
    """Each restore scenario (its docstring says which) holds on SQLite."""
    scenario(shop)


def test_link_restore_re_adds_a_removed_association_row(shop: rs.Shop) -> None:
    """A many-to-many row removed later is added back through the relationship, audited."""

    def setup(session: sa.orm.Session) -> None:
        tag = rs.Tag(id=5, label="blue")
        session.add(rs.Post(id=5, title="p", tags=[tag]))

    linked = shop.commit("alice", setup)

    def unlink(session: sa.orm.Session) -> None:
        post = session.get(rs.Post, 5)
        assert post is not None
        post.tags.clear()

    shop.commit("bob", unlink)
    assert shop.links() == set()
    at = linked[-1].committed_at
    with shop.restoring() as session:
        plan = plan_link_restore(session, shop.query, rs.Post.tags, (5, 5), at=at)
        assert [r.action for r in plan.records] == ["insert"]
        plan.apply(session)
    restored = shop.sync()
    assert shop.links() == {(5, 5)}
    assert [e.table for e in restored] == [rs.post_tags.name]
    assert rs.restore_events_carry_actor(restored)


def test_undelete_refuses_excluded_and_masked_columns(shop: rs.Shop) -> None:
    """Re-inserting a row whose masked and excluded values the log lacks names them."""
    made = shop.commit("alice", lambda s: s.add(rs.Customer(id=40, name="Hal", status="new")))
    shop.commit("bob", rs.delete_row(rs.Customer, 40))
    at = made[0].committed_at
    with shop.factory() as session, pytest.raises(UnrestorableColumns) as caught:
        plan_restore(session, shop.query, rs.Customer, 40, at=at)
    assert sorted(caught.value.columns) == ["last_seen", "pin"]
    with shop.restoring() as session:
        plan_restore(session, shop.query, rs.Customer, 40, at=at, allow_unrestorable=True).apply(
            session
        )
    shop.sync()
    assert rs.matches_as_of(shop, rs.Customer, 40, rs.Customer.__tablename__, "40", at)


def test_moved_record_is_refused(shop: rs.Shop) -> None:
    """A record whose key changed since is refused with the id it moved to."""
    made = shop.commit("alice", lambda s: s.add(rs.Stock(shop="east", sku=1, qty=1)))
    shop.commit("bob", rs.set_values(rs.Stock, ("east", 1), sku=2))
    with shop.factory() as session, pytest.raises(RecordMoved) as caught:
        plan_restore(session, shop.query, rs.Stock, ("east", 1), at=made[0].committed_at)
    assert caught.value.moved_to == "east:2"


def test_undo_refuses_a_row_changed_after_the_transaction(shop: rs.Shop) -> None:
    """Undoing a transaction refuses, writing nothing, when one of its rows changed since."""
    shop.commit("alice", lambda s: s.add(rs.Customer(id=50, name="Ivy", status="new")))

    def batch(session: sa.orm.Session) -> None:
        session.add(rs.Customer(id=51, name="Jo", status="new"))
        rs.set_values(rs.Customer, 50, status="old")(session)

    undone = shop.commit("bob", batch)
    shop.commit("carol", rs.set_values(rs.Customer, 50, name="Ivo"))
    with shop.restoring() as session, pytest.raises(StaleRecord, match="name"):
        plan_undo_transaction(session, shop.query, undone[0].transaction_id, rs.Base)
    assert shop.row(rs.Customer, 51) is not None
    assert shop.sync() == []


def test_unaudited_session_is_refused(shop: rs.Shop) -> None:
    """A session no installation covers is refused: the restore would not be audited."""
    made = shop.commit("alice", lambda s: s.add(rs.Customer(id=60, name="Kay", status="new")))
    with sa.orm.Session(shop.engine) as session, pytest.raises(NotAudited):
        plan_restore(session, shop.query, rs.Customer, 60, at=made[0].committed_at)
