"""Model-based capture test on SQLite: replaying the published events gives the database."""

from __future__ import annotations

import pytest
from capture_model import Item, ModelBase, Owner, assert_replay_matches, model_test
from capture_support import sqlite_engine
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from sqla_audit.testing import capture_events


@pytest.mark.parametrize(
    "reuse_session", [False, True], ids=["session-per-transaction", "kept-session"]
)
def test_replayed_events_reproduce_the_committed_database(reuse_session: bool) -> None:
    """Random ORM, bulk and savepoint work: the events replay to the committed tables."""
    engine = sqlite_engine()
    try:
        model_test(engine, reuse_session=reuse_session)()
    finally:
        engine.dispose()


def test_flush_nullifying_a_stale_child_keeps_the_earlier_bulk_update() -> None:
    """Bulk UPDATE (not synchronized) of a loaded item, then deleting its owner: both survive.

    Found by the model test: the flush that sets the item's foreign key to NULL reported the
    item's stale name, and coalescing replaced the bulk UPDATE's name with it.
    """
    engine = sqlite_engine()
    ModelBase.metadata.create_all(engine)
    maker = sessionmaker(engine)
    with capture_events(maker) as published:
        with maker.begin() as session:
            session.add(Item(id=1, name="i", price=1, secret="s", owner=Owner(id=1, name="o")))
        with maker.begin() as session:
            item, owner = session.get(Item, 1), session.get(Owner, 1)
            session.execute(
                update(Item).values(name="a").execution_options(synchronize_session=False)
            )
            session.delete(owner)
            assert item is not None
        with engine.connect() as conn:
            assert_replay_matches(published.events, conn)
        update_event = next(e for e in published.events if e.operation.value == "update")
        assert update_event.after is not None
        assert (update_event.after["name"], update_event.after["owner_id"]) == ("a", None)
    engine.dispose()
