"""as_of against the real database through a scripted history of 100 audited changes.

The script (tests/query_support.py, shared with the Cassandra integration test) audits an
ORM model on SQLite with ``install_audit`` into an ``InMemoryPublisher``; the published
messages go through the real consumer into the in-memory and the SQLite store, and ``as_of``
must give exactly the database snapshot at every point of the history. The script deletes
and re-inserts keys and changes primary keys (a move, a swap inside one transaction, a move
back), with the wall clock and with a clock that puts several commits in one millisecond.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from query_support import (
    ACTORS,
    BASE_IDS,
    IDS,
    MOVE_TO_SPARE,
    SPARE_ID,
    STEPS,
    SWAP_WITH_SPARE,
    TABLE,
    ScriptedHistory,
    SteppedClock,
    check_as_of,
    check_moves,
    consume,
    make_engine,
    run_script,
)

from consumer.query import AuditQuery
from consumer.sinks.base import AuditStore
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore


@pytest.fixture(scope="module", params=["wall-clock", "stepped-clock"])
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ScriptedHistory:
    """The scripted history with the real clock, and with a clock stepping 200 µs a reading."""
    engine = make_engine(tmp_path_factory.mktemp("scripted") / "app.db")
    clock = None
    if request.param == "stepped-clock":
        clock = SteppedClock(dt.datetime.now(dt.UTC), dt.timedelta(microseconds=200))
    try:
        made = run_script(engine, clock=clock)
    finally:
        engine.dispose()
    if clock is not None:  # deterministic: a flush and a commit per step, 200 µs each
        assert made.same_millisecond_pairs > STEPS // 2
    return made


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    made: AuditStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "audit.db")
    )
    yield made
    made.close()


def test_script_covers_what_it_claims(history: ScriptedHistory) -> None:
    """100 steps, one transaction each: every base key deleted and re-inserted, four moves."""
    assert len(history.points) == STEPS
    ops = [(e.record_id, e.operation.value) for e in history.events]
    for record_id in map(str, BASE_IDS):
        deletes = [i for i, op in enumerate(ops) if op == (record_id, "delete")]
        assert deletes, record_id
        assert (record_id, "insert") in ops[deletes[0] :], record_id
    # the delete and re-insert inside one transaction is one update of the key
    (event,) = [e for e in history.events if e.committed_at == history.points[55].committed_at]
    assert (event.record_id, event.operation.value) == ("3", "update")
    # key changes: one move to the spare key, a swap (two moves in one commit), a move back
    moves = history.moves
    assert len(moves) == 4
    assert moves[0].record_id == str(SPARE_ID)
    assert moves[0].committed_at == history.points[MOVE_TO_SPARE].committed_at
    swap = [e for e in moves if e.committed_at == history.points[SWAP_WITH_SPARE].committed_at]
    assert len(swap) == 2
    assert (swap[0].previous_record_id, swap[0].record_id) == (
        swap[1].record_id,
        swap[1].previous_record_id,
    )
    assert moves[-1].previous_record_id == str(SPARE_ID)


def test_event_ids_are_in_commit_order(history: ScriptedHistory) -> None:
    """Event ids grow with commits, so the store's tie-break inside a millisecond is right."""
    ids = [event.event_id for event in history.events]
    assert ids == sorted(ids)
    times = [event.committed_at for event in history.events]
    assert times == sorted(times)


def test_as_of_matches_the_database_at_every_point(
    history: ScriptedHistory, store: AuditStore
) -> None:
    """as_of reproduces the actual rows (or their absence) at every point of the history."""
    consume(store, history.messages)
    assert check_as_of(AuditQuery(store), history) >= 3 * (STEPS + 2)


def test_history_lists_every_event_newest_first(
    history: ScriptedHistory, store: AuditStore
) -> None:
    """history of each record is exactly its events, newest first."""
    consume(store, history.messages)
    query = AuditQuery(store)
    for record_id in map(str, IDS):
        got = [r.event_id for r in query.iter_history(TABLE, record_id, page_size=7)]
        assert got == history.expected_history(record_id)


def test_a_key_left_by_a_move_says_where_the_row_went(
    history: ScriptedHistory, store: AuditStore
) -> None:
    """At a move's commit, as_of on the old key says moved to the new key (not deleted)."""
    consume(store, history.messages)
    assert check_moves(AuditQuery(store), history) >= 2


def test_redelivered_messages_change_nothing(history: ScriptedHistory, store: AuditStore) -> None:
    """Consuming every message twice (at-least-once delivery) leaves as_of unchanged."""
    consume(store, history.messages)
    consume(store, list(reversed(history.messages)))
    check_as_of(AuditQuery(store), history)


def test_by_transaction_and_actor_agree_with_the_events(
    history: ScriptedHistory, store: AuditStore
) -> None:
    """Every transaction and every actor's window return exactly their events (a move once)."""
    consume(store, history.messages)
    query = AuditQuery(store)
    for event in history.events:
        expected = [e.event_id for e in history.events if e.transaction_id == event.transaction_id]
        assert [r.event_id for r in query.by_transaction(event.transaction_id)] == expected
    first = history.points[0].committed_at
    for actor in ACTORS:
        expected = [
            e.event_id
            for e in reversed(history.events)
            if e.actor is not None and e.actor.id == actor
        ]
        got = [r.event_id for r in query.iter_by_actor(actor, since=first, page_size=9)]
        assert got == expected
