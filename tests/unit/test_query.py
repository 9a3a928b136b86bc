"""The query API (consumer.query.AuditQuery) over the in-memory and the SQLite store."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.differ import records_for_event
from consumer.query import AuditQuery, change_order
from consumer.records import AuditRecord
from consumer.sinks.base import AuditStore, InvalidQuery
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_event, make_record
from sqla_audit.events import Operation, new_event_id
from sqla_audit.serialization import TaggedEnum, encode_value, registry_resolver

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    made: AuditStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "audit.db")
    )
    yield made
    made.close()


@pytest.fixture
def query(store: AuditStore) -> AuditQuery:
    return AuditQuery(store)


def _row(name: str, balance: str = "10.00") -> dict[str, object]:
    return {"id": "1", "name": name, "balance": {"$type": "decimal", "v": balance}}


def _lifecycle(store: AuditStore) -> list[AuditRecord]:
    """insert, update, delete, re-insert of accounts 1, one second apart."""
    records = [
        make_record(operation="insert", after=_row("a"), committed_at=T0),
        make_record(
            operation="update",
            before=_row("a"),
            after=_row("b", "12.50"),
            committed_at=T0 + dt.timedelta(seconds=1),
            actor="bob",
        ),
        make_record(
            operation="delete", before=_row("b", "12.50"), committed_at=T0 + dt.timedelta(seconds=2)
        ),
        make_record(operation="insert", after=_row("c"), committed_at=T0 + dt.timedelta(seconds=3)),
    ]
    store.write(records)
    return records


# --------------------------------------------------------------------------- history


def test_history_is_newest_first(query: AuditQuery) -> None:
    """history returns one record's changes newest first."""
    records = _lifecycle(query.store)
    assert list(query.history("accounts", "1").items) == list(reversed(records))


def test_iter_history_follows_pages(query: AuditQuery) -> None:
    """iter_history yields every change once, newest first, across many small pages."""
    records = [make_record(committed_at=T0 + i * dt.timedelta(seconds=1)) for i in range(9)]
    query.store.write(records)
    assert list(query.iter_history("accounts", "1", page_size=2)) == list(reversed(records))


def test_iter_history_respects_window(query: AuditQuery) -> None:
    """iter_history honours inclusive since/until."""
    records = [make_record(committed_at=T0 + i * dt.timedelta(seconds=1)) for i in range(6)]
    query.store.write(records)
    got = list(
        query.iter_history(
            "accounts",
            "1",
            since=T0 + dt.timedelta(seconds=1),
            until=T0 + dt.timedelta(seconds=4),
            page_size=2,
        )
    )
    assert got == list(reversed(records[1:5]))


def test_history_page_token_continues(query: AuditQuery) -> None:
    """A page's next_page token continues exactly after its last change."""
    records = [make_record(committed_at=T0 + i * dt.timedelta(seconds=1)) for i in range(5)]
    query.store.write(records)
    first = query.history("accounts", "1", limit=2)
    rest = list(query.iter_history("accounts", "1", page=first.next_page, page_size=10))
    assert [*first.items, *rest] == list(reversed(records))


@pytest.mark.parametrize(("table", "record_id"), [("", "1"), ("accounts", ""), (None, "1")])
def test_history_rejects_empty_names(query: AuditQuery, table: object, record_id: object) -> None:
    """An empty or missing table or record id is an InvalidQuery."""
    with pytest.raises(InvalidQuery, match="non-empty string"):
        query.history(table, record_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1001, True, "5"])
def test_iter_history_rejects_bad_page_size(query: AuditQuery, size: object) -> None:
    """page_size outside 1..1000 (or not an int) is an InvalidQuery."""
    with pytest.raises(InvalidQuery, match="page_size"):
        query.iter_history("accounts", "1", page_size=size)  # type: ignore[arg-type]


def test_iterators_validate_when_called(query: AuditQuery) -> None:
    """iter_history, iter_by_actor and column_history raise bad arguments at the call."""
    with pytest.raises(InvalidQuery, match="since"):
        query.iter_history("accounts", "1", since=dt.datetime(2026, 1, 1))
    with pytest.raises(InvalidQuery, match="page token"):
        query.iter_by_actor("bob", since=T0, page="nope")
    with pytest.raises(InvalidQuery, match="column"):
        query.column_history("accounts", "1", "")


def test_column_history_keeps_only_that_column(query: AuditQuery) -> None:
    """column_history yields the changes of one column, newest first, with old and new."""
    records = _lifecycle(query.store)
    got = list(query.column_history("accounts", "1", "balance"))
    assert [c.record for c in got] == list(reversed(records))
    update = got[2]
    assert update.change.old == {"$type": "decimal", "v": "10.00"}
    assert update.change.new == {"$type": "decimal", "v": "12.50"}
    assert list(query.column_history("accounts", "1", "nope")) == []


# --------------------------------------------------------------------------- as of


def test_as_of_walks_through_a_lifecycle(query: AuditQuery) -> None:
    """as_of gives nothing before the insert, the row after each change, None once deleted."""
    records = _lifecycle(query.store)
    before = query.as_of("accounts", "1", T0 - US)
    assert (before.known, before.exists, before.values, before.event) == (False, False, None, None)

    inserted = query.as_of("accounts", "1", T0)
    assert inserted.exists
    assert inserted.event == records[0]
    assert inserted.values == {"id": "1", "name": "a", "balance": decimal.Decimal("10.00")}
    assert inserted.wire_values == _row("a")

    updated = query.as_of("accounts", "1", T0 + dt.timedelta(seconds=2) - US)
    assert updated.values is not None
    assert updated.values["balance"] == decimal.Decimal("12.50")
    assert updated.event == records[1]

    deleted = query.as_of("accounts", "1", T0 + dt.timedelta(seconds=2, milliseconds=500))
    assert deleted.known
    assert deleted.deleted
    assert not deleted.exists
    assert deleted.values is None
    assert deleted.wire_values is None
    assert deleted.event == records[2]

    again = query.as_of("accounts", "1", T0 + dt.timedelta(days=1))
    assert again.exists
    assert again.values is not None
    assert again.values["name"] == "c"


def test_as_of_is_exact_to_the_microsecond(query: AuditQuery) -> None:
    """A change committed at t is included at t and excluded at t - 1 µs, inside one ms."""
    first = make_record(operation="insert", after=_row("a"), committed_at=T0 + 100 * US)
    second = make_record(before=_row("a"), after=_row("b"), committed_at=T0 + 200 * US)
    query.store.write([first, second])
    assert query.as_of("accounts", "1", T0 + 199 * US).event == first
    assert query.as_of("accounts", "1", T0 + 200 * US).event == second


def test_as_of_same_millisecond_orders_by_commit_time_not_event_id(query: AuditQuery) -> None:
    """In one millisecond, the latest commit time wins even if its event id sorts first."""
    ids = sorted(new_event_id() for _ in range(3))
    # commit times run opposite to event-id order
    records = [
        make_record(
            operation="update",
            before=_row(str(i)),
            after=_row(str(i + 1)),
            committed_at=T0 + (300 - 100 * i) * US,
            event_id=ids[i],
        )
        for i in range(3)
    ]
    query.store.write(records)
    state = query.as_of("accounts", "1", T0 + dt.timedelta(milliseconds=1))
    assert state.event == records[0]
    assert query.as_of("accounts", "1", T0 + 250 * US).event == records[1]


def test_as_of_many_changes_in_one_millisecond(query: AuditQuery) -> None:
    """More same-millisecond candidates than one read page are all considered."""
    records = [
        make_record(
            before=_row(str(i)), after=_row(str(i + 1)), committed_at=T0 + (i * 50 + 1) * US
        )
        for i in range(12)
    ]
    older = make_record(
        before=_row("x"), after=_row("y"), committed_at=T0 - dt.timedelta(seconds=1)
    )
    query.store.write([older, *reversed(records)])
    assert query.as_of("accounts", "1", T0 + dt.timedelta(milliseconds=5)).event == records[-1]


def test_as_of_same_commit_uses_sequence(query: AuditQuery) -> None:
    """Delete then re-insert in one transaction (same commit time): the higher sequence wins."""
    txn = uuid.uuid4()
    ids = sorted(new_event_id() for _ in range(2))
    delete = make_record(
        operation="delete",
        before=_row("a"),
        committed_at=T0,
        transaction_id=txn,
        sequence=0,
        event_id=ids[1],
    )
    insert = make_record(
        operation="insert",
        after=_row("b"),
        committed_at=T0,
        transaction_id=txn,
        sequence=1,
        event_id=ids[0],
    )
    query.store.write([delete, insert])
    state = query.as_of("accounts", "1", T0)
    assert state.exists
    assert state.event == insert
    assert change_order(insert) > change_order(delete)


def test_as_of_swap_in_one_commit_keeps_the_arriving_row(query: AuditQuery) -> None:
    """Keys swapped in one commit: on each key the arrival wins over the departure."""
    txn = uuid.uuid4()
    # row a moves 1 -> 2 (sequence 0), row b moves 2 -> 1 (sequence 1)
    a_moves = make_event(
        record_id="2",
        previous_record_id="1",
        before=_row("a"),
        after={**_row("a"), "id": "2"},
        committed_at=T0,
        transaction_id=txn,
        sequence=0,
    )
    b_moves = make_event(
        record_id="1",
        previous_record_id="2",
        before={**_row("b"), "id": "2"},
        after=_row("b"),
        committed_at=T0,
        transaction_id=txn,
        sequence=1,
    )
    records = [*records_for_event(a_moves), *records_for_event(b_moves)]
    query.store.write(records)
    on_one, on_two = query.as_of("accounts", "1", T0), query.as_of("accounts", "2", T0)
    assert on_one.values is not None
    assert on_one.values["name"] == "b"
    assert on_two.values is not None
    assert on_two.values["name"] == "a"
    departure = next(r for r in records if r.record_id == "2" and r.is_departure)
    arrival = next(r for r in records if r.record_id == "2" and not r.is_departure)
    assert departure.sequence > arrival.sequence  # sequence alone would pick the departure
    assert change_order(departure) < change_order(arrival)


@pytest.mark.parametrize("at", [dt.datetime(2026, 1, 1), "2026-01-01T00:00:00Z", None])
def test_as_of_rejects_naive_or_non_datetime(query: AuditQuery, at: object) -> None:
    """as_of needs a timezone-aware datetime."""
    with pytest.raises(InvalidQuery, match="timezone-aware"):
        query.as_of("accounts", "1", at)  # type: ignore[arg-type]


def test_as_of_accepts_any_timezone(query: AuditQuery) -> None:
    """An instant given with a non-UTC offset is the same instant."""
    records = _lifecycle(query.store)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    state = query.as_of("accounts", "1", (T0 + dt.timedelta(seconds=1)).astimezone(plus_two))
    assert state.event == records[1]


def test_as_of_decodes_enums_with_a_resolver(store: AuditStore) -> None:
    """Enum values decode to members with an enum_resolver, else to TaggedEnum."""
    row = {"id": "1", "color": encode_value(Color.RED)}
    store.write([make_record(operation="insert", after=row, committed_at=T0)])
    plain = AuditQuery(store).as_of("accounts", "1", T0)
    assert plain.values is not None
    assert isinstance(plain.values["color"], TaggedEnum)
    resolved = AuditQuery(store, enum_resolver=registry_resolver(Color)).as_of("accounts", "1", T0)
    assert resolved.values == {"id": "1", "color": Color.RED}


def test_as_of_other_records_do_not_interfere(query: AuditQuery) -> None:
    """as_of only looks at the asked table and record id."""
    query.store.write(
        [
            make_record(operation="insert", after=_row("a"), committed_at=T0),
            make_record(operation="delete", record_id="2", committed_at=T0 + US),
            make_record(operation="delete", table="orders", committed_at=T0 + US),
        ]
    )
    assert query.as_of("accounts", "1", T0 + dt.timedelta(seconds=1)).exists


# --------------------------------------------------------------------------- actor, transaction


def test_by_actor_and_iter_by_actor(query: AuditQuery) -> None:
    """by_actor pages one actor's changes newest first; iter_by_actor follows the pages."""
    mine = [
        make_record(committed_at=T0 + i * dt.timedelta(hours=7), actor="bob", record_id=str(i))
        for i in range(6)
    ]
    query.store.write([*mine, make_record(committed_at=T0, actor="carol")])
    page = query.by_actor("bob", since=T0, limit=4)
    assert list(page.items) == list(reversed(mine))[:4]
    assert page.next_page is not None
    assert list(query.iter_by_actor("bob", since=T0, page_size=4)) == list(reversed(mine))
    window = list(
        query.iter_by_actor(
            "bob", since=T0 + dt.timedelta(hours=7), until=T0 + dt.timedelta(hours=14)
        )
    )
    assert window == [mine[2], mine[1]]


def test_by_actor_rejects_naive_since(query: AuditQuery) -> None:
    """by_actor needs an aware since."""
    with pytest.raises(InvalidQuery, match="since"):
        query.by_actor("bob", since=dt.datetime(2026, 1, 1))


def test_by_transaction_accepts_uuid_or_text(query: AuditQuery) -> None:
    """by_transaction takes a UUID or its text and returns the changes in sequence order."""
    txn = uuid.uuid4()
    records = [
        make_record(committed_at=T0, transaction_id=txn, sequence=i, record_id=str(i))
        for i in range(3)
    ]
    query.store.write(list(reversed(records)))
    assert query.by_transaction(txn) == records
    assert query.by_transaction(f"  {str(txn).upper()} ") == records
    assert query.by_transaction(uuid.uuid4()) == []


@pytest.mark.parametrize("bad", ["not-a-uuid", "", 42])
def test_by_transaction_rejects_non_uuid(query: AuditQuery, bad: object) -> None:
    """A transaction id that is not a UUID is an InvalidQuery."""
    with pytest.raises(InvalidQuery, match="UUID"):
        query.by_transaction(bad)  # type: ignore[arg-type]


def test_deleted_state_keeps_operation(query: AuditQuery) -> None:
    """The delete event of a deleted state says delete and carries the old row."""
    records = _lifecycle(query.store)
    state = query.as_of("accounts", "1", T0 + dt.timedelta(seconds=2))
    assert state.event is not None
    assert state.event.operation is Operation.DELETE
    assert state.event.before == records[1].after
