"""Changed primary keys, end to end: install_audit -> InMemoryPublisher -> worker -> store -> query.

A country's natural key is renamed; the old key is later reused by another row, and the
renamed row finally moves back onto it. Every step is a real ORM commit on SQLite whose
events go through the real consumer into the in-memory and the SQLite store.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from query_support import consume
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from consumer.cli import main
from consumer.query import AuditQuery
from consumer.render import render_state
from consumer.sinks.base import AuditStore
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from sqla_audit.context import audit_context
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher

TABLE = "move_countries"


class Base(DeclarativeBase):
    pass


class Country(Base):
    __tablename__ = TABLE

    code: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))


@dataclass(frozen=True)
class Story:
    """The commits of the scenario, by name, and every event published."""

    commits: dict[str, list[ChangeEvent]]
    messages: list[str]

    def at(self, name: str) -> dt.datetime:
        return self.commits[name][0].committed_at

    def event(self, name: str) -> ChangeEvent:
        (event,) = self.commits[name]
        return event


def _rename(session: Session, old: str, new: str, name: str | None = None) -> None:
    country = session.get(Country, old)
    assert country is not None
    country.code = new
    if name is not None:
        country.name = name


def _run_story(engine: sa.Engine) -> Story:
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    publisher = InMemoryPublisher()
    steps = [
        ("insert", "alice", lambda s: s.add(Country(code="NOR", name="Norway"))),
        ("rename", "bob", lambda s: _rename(s, "NOR", "NO", "Norge")),
        ("update", "carol", lambda s: _rename(s, "NO", "NO", "Noreg")),
        ("reuse", "alice", lambda s: s.add(Country(code="NOR", name="Nordland"))),
        ("drop", "alice", lambda s: s.delete(s.get(Country, "NOR"))),
        ("back", "bob", lambda s: _rename(s, "NO", "NOR")),
    ]
    commits: dict[str, list[ChangeEvent]] = {}
    install_audit(factory, publisher=publisher, service="geo")
    try:
        for name, actor, change in steps:
            published = len(publisher.events)
            with audit_context(actor=actor), factory.begin() as session:
                change(session)
            commits[name] = publisher.events[published:]
            assert len(commits[name]) == 1, name
    finally:
        uninstall_audit(factory)
    return Story(commits, publisher.raw_messages)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path_factory.mktemp('moves') / 'a.db'}")
    try:
        return _run_story(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, story: Story) -> Iterator[AuditStore]:
    made: AuditStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "audit.db")
    )
    consume(made, story.messages)
    yield made
    made.close()


@pytest.fixture
def query(store: AuditStore) -> AuditQuery:
    return AuditQuery(store)


def test_the_producer_reports_the_rename_under_the_new_key(story: Story) -> None:
    """The rename is one update under NO naming NOR as the previous record id."""
    rename = story.event("rename")
    assert (rename.operation, rename.record_id, rename.previous_record_id) == (
        Operation.UPDATE,
        "NO",
        "NOR",
    )


def test_old_key_after_the_rename_says_moved(story: Story, query: AuditQuery) -> None:
    """as_of on the old key after the rename: no row, moved to the new key, not deleted."""
    state = query.as_of(TABLE, "NOR", story.at("rename"))
    assert not state.exists
    assert state.values is None
    assert state.known
    assert state.moved_to == "NO"
    assert not state.deleted
    assert state.event is not None
    assert state.event.actor_id == "bob"
    assert state.event.before == {"code": "NOR", "name": "Norway"}
    before = query.as_of(TABLE, "NOR", story.at("rename") - dt.timedelta(microseconds=1))
    assert before.values == {"code": "NOR", "name": "Norway"}


def test_new_key_exists_from_the_rename_on(story: Story, query: AuditQuery) -> None:
    """as_of on the new key: unknown before the rename, the renamed row from then on."""
    assert not query.as_of(TABLE, "NO", story.at("insert")).known
    assert query.as_of(TABLE, "NO", story.at("rename")).values == {"code": "NO", "name": "Norge"}
    assert query.as_of(TABLE, "NO", story.at("update")).values == {"code": "NO", "name": "Noreg"}


def test_reused_old_key_and_move_back(story: Story, query: AuditQuery) -> None:
    """The old key holds the new row once reused, and the renamed row once it moves back."""
    reused = query.as_of(TABLE, "NOR", story.at("reuse"))
    assert reused.values == {"code": "NOR", "name": "Nordland"}
    dropped = query.as_of(TABLE, "NOR", story.at("drop"))
    assert dropped.deleted
    assert dropped.moved_to is None
    back = query.as_of(TABLE, "NOR", story.at("back"))
    assert back.values == {"code": "NOR", "name": "Noreg"}
    left = query.as_of(TABLE, "NO", story.at("back"))
    assert (left.exists, left.moved_to, left.deleted) == (False, "NOR", False)


def _sides(query: AuditQuery, key: str) -> list[tuple[Operation, str | None, str | None]]:
    return [(r.operation, r.moved_to, r.previous_record_id) for r in query.iter_history(TABLE, key)]


def test_histories_show_both_sides_of_each_move(story: Story, query: AuditQuery) -> None:
    """Each key's history lists the row arriving and leaving, newest first."""
    assert _sides(query, "NOR") == [
        (Operation.UPDATE, None, "NO"),  # the renamed row moved back
        (Operation.DELETE, None, None),  # Nordland deleted
        (Operation.INSERT, None, None),  # the key reused
        (Operation.DELETE, "NO", None),  # the rename left the key
        (Operation.INSERT, None, None),
    ]
    assert _sides(query, "NO") == [
        (Operation.DELETE, "NOR", None),
        (Operation.UPDATE, None, None),
        (Operation.UPDATE, None, "NOR"),
    ]


def test_a_move_counts_once_by_transaction_and_by_actor(story: Story, query: AuditQuery) -> None:
    """by_transaction and by_actor list the real event of a move, not its departure."""
    rename = story.event("rename")
    assert [r.event_id for r in query.by_transaction(rename.transaction_id)] == [rename.event_id]
    bobs = list(query.iter_by_actor("bob", since=story.at("insert")))
    assert [r.event_id for r in bobs] == [story.event("back").event_id, rename.event_id]
    assert not any(r.is_departure for r in bobs)


def test_redelivery_rewrites_the_same_rows(story: Story, store: AuditStore) -> None:
    """Consuming every message again leaves each key's history unchanged."""
    query = AuditQuery(store)
    before = {key: list(query.iter_history(TABLE, key)) for key in ("NOR", "NO")}
    consume(store, story.messages)
    assert {key: list(query.iter_history(TABLE, key)) for key in ("NOR", "NO")} == before


def test_cli_as_of_json_names_the_new_key(
    story: Story,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`sqla-audit as-of --json` on the old key: not existing, the event names the new key."""
    for name in ("SQLA_AUDIT_STORE", "SQLA_AUDIT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "cli.db"
    store = SQLiteStore(path)
    consume(store, story.messages)
    store.close()
    at = story.at("rename").isoformat()
    argv = ["as-of", TABLE, "NOR", "--at", at, "--json", "--store", "sqlite"]
    assert main([*argv, "--store-url", str(path)]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["exists"] is False
    assert state["event"]["operation"] == "delete"
    assert state["event"]["metadata"]["sqla_audit.moved_to"] == "NO"


def test_readable_state_names_the_new_key(story: Story, query: AuditQuery) -> None:
    """The readable as-of output of a moved row says where it went, not that it was deleted."""
    text = render_state(query.as_of(TABLE, "NOR", story.at("rename")))
    assert "moved to NO" in text
    assert "deleted" not in text
