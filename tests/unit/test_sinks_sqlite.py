"""The SQLite store's reads: how many rows each page asks SQLite for, and paging across chunks."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.differ import records_for_event
from consumer.query import AuditQuery
from consumer.sinks.base import RecordRejected
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_event, make_record
from sqla_audit.errors import StoreError

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    made = SQLiteStore(tmp_path / "audit.db")
    yield made
    made.close()


@pytest.fixture
def limits(store: SQLiteStore) -> list[int]:
    """The LIMIT of every SELECT the store sends from now on."""
    seen: list[int] = []

    def trace(sql: str) -> None:
        found = re.search(r"^SELECT .* LIMIT (\d+)$", sql, re.DOTALL)
        if found:
            seen.append(int(found.group(1)))

    store._conn.set_trace_callback(trace)
    return seen


def test_a_page_asks_for_one_row_more_than_its_limit(store: SQLiteStore, limits: list[int]) -> None:
    """history(limit=n) reads n + 1 rows in one SELECT, not a fixed large chunk."""
    store.write(make_record(committed_at=T0 + dt.timedelta(seconds=i)) for i in range(50))
    page = store.history("billing", "accounts", "1", limit=1)
    assert len(page.items) == 1
    assert page.next_page is not None
    assert limits == [2]
    limits.clear()
    assert len(store.history("billing", "accounts", "1", limit=20).items) == 20
    assert limits == [21]


def test_as_of_reads_a_handful_of_rows(store: SQLiteStore, limits: list[int]) -> None:
    """as_of on a long history reads a few rows, wherever the instant falls."""
    store.write(make_record(committed_at=T0 + dt.timedelta(seconds=i)) for i in range(500))
    query = AuditQuery(store)
    for at in (T0 + dt.timedelta(seconds=250, microseconds=3), T0 + dt.timedelta(days=1)):
        limits.clear()
        assert query.as_of("accounts", "1", at).exists
        assert sum(limits) <= 5


def test_microsecond_bounds_are_exact_in_the_first_read(
    store: SQLiteStore, limits: list[int]
) -> None:
    """Rows of the boundary millisecond outside until/since are not fetched at all."""
    records = [make_record(committed_at=T0 + dt.timedelta(microseconds=i)) for i in range(10)]
    store.write(records)
    page = store.history(
        "billing",
        "accounts",
        "1",
        since=T0 + dt.timedelta(microseconds=3),
        until=T0 + dt.timedelta(microseconds=4),
        limit=2,
    )
    assert {r.event_id for r in page.items} == {records[3].event_id, records[4].event_id}
    assert page.next_page is None
    assert limits == [3]


def test_chunks_grow_when_rows_are_filtered_out(store: SQLiteStore, limits: list[int]) -> None:
    """by_actor drops departures after reading; later reads double and nothing is lost."""
    moves = []
    for i in range(40):
        event = make_event(
            record_id=str(i),
            previous_record_id=f"old-{i}",
            before={"id": f"old-{i}"},
            after={"id": str(i)},
            committed_at=T0 + dt.timedelta(seconds=i),
            actor="bob",
        )
        moves.append(records_for_event(event))
    store.write(r for pair in moves for r in pair)
    page = store.by_actor("bob", since=T0, limit=30)
    assert list(page.items) == [record for record, _ in reversed(moves)][:30]
    assert page.next_page is not None
    assert limits == [31, 62]  # half of the first 31 rows were departures


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (sqlite3.OperationalError("database is locked"), StoreError),
        (sqlite3.OperationalError("disk I/O error"), StoreError),
        (sqlite3.OperationalError("unable to open database file"), StoreError),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), StoreError),
        (sqlite3.OperationalError("string or blob too big"), RecordRejected),
        (sqlite3.DataError("string or blob too big"), RecordRejected),
        (sqlite3.IntegrityError("NOT NULL constraint failed"), RecordRejected),
        (sqlite3.InterfaceError("Error binding parameter 3"), RecordRejected),
        (
            sqlite3.ProgrammingError("Error binding parameter 1: type 'dict' is not supported"),
            RecordRejected,
        ),
        (OverflowError("Python int too large to convert to SQLite INTEGER"), RecordRejected),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), RecordRejected),
    ],
)
def test_write_errors_are_classified(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, error: Exception, kind: type
) -> None:
    """A problem of one record is RecordRejected; only the database failing is a StoreError."""

    class Failing:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def executemany(self, sql: str, params: object) -> None:
            raise error

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

    monkeypatch.setattr(store, "_conn", Failing(store._conn))
    with pytest.raises(kind) as caught:
        store.write([make_record(committed_at=T0)])
    if kind is StoreError:
        assert not isinstance(caught.value, RecordRejected)
    else:
        assert not isinstance(caught.value, StoreError)
    monkeypatch.undo()
    store.write([make_record(committed_at=T0, record_id="2")])  # the transaction was ended
