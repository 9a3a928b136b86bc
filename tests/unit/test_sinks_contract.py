"""The AuditStore contract, run against the in-memory and the SQLite store."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.differ import records_for_event
from consumer.records import AuditRecord
from consumer.sinks.base import AuditStore, InvalidQuery
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_event, make_record
from sqla_audit.events import Actor, Operation

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    made: AuditStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "audit.db")
    )
    yield made
    made.close()


def _records(count: int, **kwargs: object) -> list[AuditRecord]:
    return [
        make_record(committed_at=T0 + dt.timedelta(seconds=i), **kwargs)  # type: ignore[arg-type]
        for i in range(count)
    ]


def test_store_satisfies_protocol(store: AuditStore) -> None:
    """Every store implementation is an AuditStore."""
    assert isinstance(store, AuditStore)


def test_history_is_newest_first_and_round_trips(store: AuditStore) -> None:
    """history returns the written records unchanged, newest first."""
    records = _records(3)
    store.write(records)
    page = store.history("accounts", "1")
    assert list(page.items) == list(reversed(records))
    assert page.next_page is None


def test_write_is_idempotent(store: AuditStore) -> None:
    """Writing the same record twice stores it once."""
    records = _records(2)
    store.write(records)
    store.write(records)
    store.write(records[:1])
    assert len(store.history("accounts", "1").items) == 2


def test_history_is_scoped_to_one_record(store: AuditStore) -> None:
    """history only returns the asked table and record id."""
    mine = make_record(committed_at=T0)
    store.write(
        [
            mine,
            make_record(committed_at=T0, record_id="2"),
            make_record(committed_at=T0, table="orders"),
        ]
    )
    assert list(store.history("accounts", "1").items) == [mine]


def test_history_pages_through_everything_once(store: AuditStore) -> None:
    """Following page tokens visits every record exactly once, in order."""
    records = _records(7)
    store.write(records)
    seen: list[AuditRecord] = []
    token: str | None = None
    pages = 0
    while True:
        page = store.history("accounts", "1", limit=3, page=token)
        seen.extend(page.items)
        pages += 1
        token = page.next_page
        if token is None:
            break
    assert seen == list(reversed(records))
    assert pages == 3


def test_exact_page_has_no_next_token(store: AuditStore) -> None:
    """A page that ends exactly at the last record has no next token."""
    store.write(_records(3))
    assert store.history("accounts", "1", limit=3).next_page is None


def test_same_millisecond_orders_by_event_id(store: AuditStore) -> None:
    """Records in the same millisecond are ordered by event id, and paging splits them."""
    records = [make_record(committed_at=T0 + dt.timedelta(microseconds=i)) for i in range(4)]
    store.write(records)
    expected = sorted(records, key=lambda r: r.event_id, reverse=True)
    first = store.history("accounts", "1", limit=2)
    second = store.history("accounts", "1", limit=2, page=first.next_page)
    assert [*first.items, *second.items] == expected


def test_since_until_are_inclusive_and_exact(store: AuditStore) -> None:
    """since/until are inclusive to the microsecond, even inside one millisecond."""
    records = [make_record(committed_at=T0 + dt.timedelta(microseconds=100 * i)) for i in range(5)]
    store.write(records)
    page = store.history(
        "accounts",
        "1",
        since=T0 + dt.timedelta(microseconds=100),
        until=T0 + dt.timedelta(microseconds=300),
    )
    assert {r.event_id for r in page.items} == {r.event_id for r in records[1:4]}


def test_state_as_of_is_newest_at_or_before(store: AuditStore) -> None:
    """history(until=t, limit=1) is the state of the record as of t."""
    records = _records(3)
    store.write(records)
    page = store.history("accounts", "1", until=T0 + dt.timedelta(seconds=1, milliseconds=500))
    assert page.items[0] == records[1]
    assert store.history("accounts", "1", until=T0 - dt.timedelta(seconds=1)).items == []


def test_by_actor_filters_actor_and_window(store: AuditStore) -> None:
    """by_actor returns one actor's records inside the window, newest first, across days."""
    day1 = make_record(committed_at=T0, actor="bob")
    day2 = make_record(committed_at=T0 + dt.timedelta(days=1), actor="bob", record_id="2")
    late = make_record(committed_at=T0 + dt.timedelta(days=5), actor="bob")
    other = make_record(committed_at=T0, actor="carol")
    anonymous = make_record(committed_at=T0, actor=None)
    store.write([day1, day2, late, other, anonymous])
    page = store.by_actor("bob", since=T0 - dt.timedelta(hours=1), until=T0 + dt.timedelta(days=2))
    assert list(page.items) == [day2, day1]
    first = store.by_actor("bob", since=T0, limit=1)
    assert list(first.items) == [late]
    rest = store.by_actor("bob", since=T0, limit=5, page=first.next_page)
    assert list(rest.items) == [day2, day1]


def test_by_transaction_is_in_sequence_order(store: AuditStore) -> None:
    """by_transaction returns every record of one transaction in sequence order."""
    txn = uuid.uuid4()
    records = [
        make_record(committed_at=T0, transaction_id=txn, sequence=i, record_id=str(10 - i))
        for i in range(4)
    ]
    store.write([*reversed(records), make_record(committed_at=T0)])
    assert store.by_transaction(txn) == records
    assert store.by_transaction(uuid.uuid4()) == []


def test_records_keep_every_field(store: AuditStore) -> None:
    """A stored record keeps nested changes, rows, actor attributes, masks and metadata."""
    record = make_record(
        committed_at=T0 + dt.timedelta(microseconds=7),
        occurred_at=T0,
        operation=Operation.UPDATE,
        before={"id": "1", "doc": {"a": [1, 2]}, "secret": {"$type": "masked", "v": None}},
        after={"id": "1", "doc": {"a": [1, 3]}, "secret": {"$type": "masked", "v": None}},
        actor=Actor("bob", {"roles": ["admin"]}),
        masked_columns=("secret",),
        changed_columns=("doc", "secret"),
        metadata={"ip": "127.0.0.1"},
        previous_record_id="0",
    )
    store.write([record])
    assert store.history("accounts", "1").items == [record]


def _moves(count: int, actor: str = "bob") -> list[tuple[AuditRecord, AuditRecord]]:
    """``count`` key changes (key i+100 to key i), one second apart: (record, departure)."""
    made = []
    for i in range(count):
        event = make_event(
            record_id=str(i),
            previous_record_id=str(i + 100),
            before={"id": str(i + 100), "balance": 1},
            after={"id": str(i), "balance": 1},
            committed_at=T0 + dt.timedelta(seconds=i),
            actor=actor,
        )
        record, departure = records_for_event(event)
        made.append((record, departure))
    return made


def test_departures_are_in_history_only(store: AuditStore) -> None:
    """A departure is in the old id's history, never in by_actor or by_transaction."""
    ((record, departure),) = _moves(1)
    store.write([record, departure])
    assert store.history("accounts", "100").items == [departure]
    assert store.history("accounts", "0").items == [record]
    assert store.by_transaction(record.transaction_id) == [record]
    assert list(store.by_actor("bob", since=T0).items) == [record]


def test_departures_are_idempotent(store: AuditStore) -> None:
    """Rewriting a move's records (a redelivery) stores each of them once."""
    ((record, departure),) = _moves(1)
    store.write([record, departure])
    store.write([departure, record])
    again = records_for_event(make_event(**_move_kwargs(record)))
    store.write(again)
    assert store.history("accounts", "100").items == [departure]
    assert store.history("accounts", "0").items == [record]


def _move_kwargs(record: AuditRecord) -> dict[str, object]:
    return {
        "event_id": record.event_id,
        "record_id": record.record_id,
        "previous_record_id": record.previous_record_id,
        "before": record.before,
        "after": record.after,
        "committed_at": record.event_time,
        "transaction_id": record.transaction_id,
        "actor": record.actor_id,
    }


def test_by_actor_pages_skip_departures(store: AuditStore) -> None:
    """Paging by actor over moves returns each real event once, newest first."""
    moves = _moves(7)
    store.write([r for pair in moves for r in pair])
    seen: list[AuditRecord] = []
    token: str | None = None
    while True:
        page = store.by_actor("bob", since=T0, limit=2, page=token)
        seen.extend(page.items)
        token = page.next_page
        if token is None:
            break
    assert seen == [record for record, _ in reversed(moves)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_000}, "limit"),
        ({"page": "not-a-token"}, "page token"),
        ({"since": dt.datetime(2026, 1, 1)}, "timezone-aware"),
        ({"since": T0, "until": T0 - dt.timedelta(seconds=1)}, "after until"),
    ],
)
def test_bad_read_arguments_raise_invalid_query(
    store: AuditStore, kwargs: dict[str, object], message: str
) -> None:
    """Bad limits, windows and page tokens raise InvalidQuery with a clear message."""
    with pytest.raises(InvalidQuery, match=message):
        store.history("accounts", "1", **kwargs)  # type: ignore[arg-type]
