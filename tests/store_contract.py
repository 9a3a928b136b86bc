"""The AuditStore contract: the tests every store implementation must pass, with the same
answers from each.

A test module imports these functions and provides a ``store`` fixture (function or module
scope): tests/unit/test_sinks_contract.py runs them on the in-memory and SQLite stores,
tests/integration/test_store_contract_cassandra.py on Cassandra. Each test writes under its
own table name and actor (:func:`fresh`), so a store may be shared by the tests of a module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from typing import Any

import pytest

from consumer.differ import records_for_event
from consumer.records import AuditRecord
from consumer.sinks.base import (
    AuditStore,
    InvalidQuery,
    RecordConflict,
    RecordRejected,
    commit_key,
)
from consumer.testing import make_event, make_record
from sqla_audit.errors import StoreError
from sqla_audit.events import MARKER_METADATA_KEY, MARKER_RECORD_ID, Actor, Operation
from sqla_audit.tracing import SPAN_ID_KEY, TRACE_ID_KEY

#: A fixed day a week before the run: recent, so by-actor reads of "since T0 until now" touch
#: few day partitions in Cassandra, and whole, so day boundaries are where the tests expect.
T0 = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0) - dt.timedelta(
    days=7
)


#: The service :func:`consumer.testing.make_event` puts on its events.
SERVICE = "billing"


def fresh(prefix: str = "t") -> str:
    """A name no other test uses (a table or an actor id)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _records(table: str, count: int, **kwargs: object) -> list[AuditRecord]:
    return [
        make_record(table=table, committed_at=T0 + dt.timedelta(seconds=i), **kwargs)
        for i in range(count)
    ]


def test_store_satisfies_protocol(store: AuditStore) -> None:
    """Every store implementation is an AuditStore."""
    assert isinstance(store, AuditStore)


def test_history_is_newest_first_and_round_trips(store: AuditStore) -> None:
    """history returns the written records unchanged, newest first."""
    table = fresh()
    records = _records(table, 3)
    store.write(records)
    page = store.history(SERVICE, table, "1")
    assert list(page.items) == list(reversed(records))
    assert page.next_page is None


def test_write_is_idempotent(store: AuditStore) -> None:
    """Writing the same record twice stores it once."""
    table = fresh()
    records = _records(table, 2)
    store.write(records)
    store.write(records)
    store.write(records[:1])
    assert len(store.history(SERVICE, table, "1").items) == 2


def test_history_is_scoped_to_one_record(store: AuditStore) -> None:
    """history only returns the asked table and record id."""
    table = fresh()
    mine = make_record(table=table, committed_at=T0)
    store.write(
        [
            mine,
            make_record(table=table, committed_at=T0, record_id="2"),
            make_record(committed_at=T0, table=fresh()),
        ]
    )
    assert list(store.history(SERVICE, table, "1").items) == [mine]


def test_history_pages_through_everything_once(store: AuditStore) -> None:
    """Following page tokens visits every record exactly once, in order."""
    table = fresh()
    records = _records(table, 7)
    store.write(records)
    seen: list[AuditRecord] = []
    token: str | None = None
    pages = 0
    while True:
        page = store.history(SERVICE, table, "1", limit=3, page=token)
        seen.extend(page.items)
        pages += 1
        token = page.next_page
        if token is None:
            break
    assert seen == list(reversed(records))
    assert pages == 3


def test_exact_page_has_no_next_token(store: AuditStore) -> None:
    """A page that ends exactly at the last record has no next token."""
    table = fresh()
    store.write(_records(table, 3))
    assert store.history(SERVICE, table, "1", limit=3).next_page is None


def test_same_millisecond_orders_by_event_id(store: AuditStore) -> None:
    """Records in the same millisecond are ordered by event id, and paging splits them."""
    table = fresh()
    records = [
        make_record(table=table, committed_at=T0 + dt.timedelta(microseconds=i)) for i in range(4)
    ]
    store.write(records)
    expected = sorted(records, key=lambda r: r.event_id, reverse=True)
    first = store.history(SERVICE, table, "1", limit=2)
    second = store.history(SERVICE, table, "1", limit=2, page=first.next_page)
    assert [*first.items, *second.items] == expected


def test_since_until_are_inclusive_and_exact(store: AuditStore) -> None:
    """since/until are inclusive to the microsecond, even inside one millisecond."""
    table = fresh()
    records = [
        make_record(table=table, committed_at=T0 + dt.timedelta(microseconds=100 * i))
        for i in range(5)
    ]
    store.write(records)
    page = store.history(
        SERVICE,
        table,
        "1",
        since=T0 + dt.timedelta(microseconds=100),
        until=T0 + dt.timedelta(microseconds=300),
    )
    assert {r.event_id for r in page.items} == {r.event_id for r in records[1:4]}


def test_state_as_of_is_newest_at_or_before(store: AuditStore) -> None:
    """history(until=t, limit=1) is the state of the record as of t."""
    table = fresh()
    records = _records(table, 3)
    store.write(records)
    page = store.history(SERVICE, table, "1", until=T0 + dt.timedelta(seconds=1, milliseconds=500))
    assert page.items[0] == records[1]
    assert store.history(SERVICE, table, "1", until=T0 - dt.timedelta(seconds=1)).items == []


def test_by_actor_filters_actor_and_window(store: AuditStore) -> None:
    """by_actor returns one actor's records inside the window, newest first, across days."""
    table, bob = fresh(), fresh("bob")
    day1 = make_record(table=table, committed_at=T0, actor=bob)
    day2 = make_record(
        table=table, committed_at=T0 + dt.timedelta(days=1), actor=bob, record_id="2"
    )
    late = make_record(table=table, committed_at=T0 + dt.timedelta(days=5), actor=bob)
    other = make_record(table=table, committed_at=T0, actor=fresh("carol"))
    anonymous = make_record(table=table, committed_at=T0, actor=None)
    store.write([day1, day2, late, other, anonymous])
    page = store.by_actor(bob, since=T0 - dt.timedelta(hours=1), until=T0 + dt.timedelta(days=2))
    assert list(page.items) == [day2, day1]
    first = store.by_actor(bob, since=T0, limit=1)
    assert list(first.items) == [late]
    rest = store.by_actor(bob, since=T0, limit=5, page=first.next_page)
    assert list(rest.items) == [day2, day1]


def test_by_transaction_is_in_sequence_order(store: AuditStore) -> None:
    """by_transaction returns every record of one transaction in sequence order."""
    table = fresh()
    txn = uuid.uuid4()
    records = [
        make_record(
            table=table, committed_at=T0, transaction_id=txn, sequence=i, record_id=str(10 - i)
        )
        for i in range(4)
    ]
    store.write([*reversed(records), make_record(table=table, committed_at=T0)])
    assert store.by_transaction(txn) == records
    assert store.by_transaction(uuid.uuid4()) == []


def test_records_keep_every_field(store: AuditStore) -> None:
    """A stored record keeps nested changes, rows, actor attributes, masks and metadata."""
    table, bob = fresh(), fresh("bob")
    record = make_record(
        table=table,
        committed_at=T0 + dt.timedelta(microseconds=7),
        occurred_at=T0,
        operation=Operation.UPDATE,
        before={"id": "1", "doc": {"a": [1, 2]}, "secret": {"$type": "masked", "v": None}},
        after={"id": "1", "doc": {"a": [1, 3]}, "secret": {"$type": "masked", "v": None}},
        actor=Actor(bob, {"roles": ["admin"]}),
        masked_columns=("secret",),
        changed_columns=("doc", "secret"),
        metadata={"ip": "127.0.0.1"},
        previous_record_id="0",
    )
    store.write([record])
    assert store.history(SERVICE, table, "1").items == [record]


def _moves(table: str, count: int, actor: str) -> list[tuple[AuditRecord, AuditRecord]]:
    """``count`` key changes (key i+100 to key i), one second apart: (record, departure)."""
    made = []
    for i in range(count):
        event = make_event(
            table=table,
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
    table, bob = fresh(), fresh("bob")
    ((record, departure),) = _moves(table, 1, bob)
    store.write([record, departure])
    assert store.history(SERVICE, table, "100").items == [departure]
    assert store.history(SERVICE, table, "0").items == [record]
    assert store.by_transaction(record.transaction_id) == [record]
    assert list(store.by_actor(bob, since=T0).items) == [record]


def test_departures_are_idempotent(store: AuditStore) -> None:
    """Rewriting a move's records (a redelivery) stores each of them once."""
    table, bob = fresh(), fresh("bob")
    ((record, departure),) = _moves(table, 1, bob)
    store.write([record, departure])
    store.write([departure, record])
    again = records_for_event(make_event(table=table, **_move_kwargs(record)))
    store.write(again)
    assert store.history(SERVICE, table, "100").items == [departure]
    assert store.history(SERVICE, table, "0").items == [record]


def _move_kwargs(record: AuditRecord) -> dict[str, Any]:
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
    table, bob = fresh(), fresh("bob")
    moves = _moves(table, 7, bob)
    store.write([r for pair in moves for r in pair])
    seen: list[AuditRecord] = []
    token: str | None = None
    while True:
        page = store.by_actor(bob, since=T0, limit=2, page=token)
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
    table = fresh()
    with pytest.raises(InvalidQuery, match=message):
        store.history(SERVICE, table, "1", **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- duplicates


def _same_event_again(record: AuditRecord, **changes: object) -> AuditRecord:
    """The record of a redelivery of ``record``'s event, with ``changes`` to its content."""
    fields: dict[str, object] = {
        "event_id": record.event_id,
        "table": record.table,
        "record_id": record.record_id,
        "committed_at": record.event_time,
        "occurred_at": record.occurred_at,
        "transaction_id": record.transaction_id,
        "sequence": record.sequence,
        "actor": record.actor_id,
        "before": record.before,
        "after": record.after,
    }
    fields.update(changes)
    return make_record(**fields)


def test_redelivery_with_the_same_content_changes_nothing(store: AuditStore) -> None:
    """A record rebuilt from a redelivered event (same id, same content) is accepted, once."""
    table = fresh()
    record = make_record(table=table, committed_at=T0)
    store.write([record])
    again = _same_event_again(record)
    assert again == record
    assert again is not record
    store.write([again, again])
    assert list(store.history(SERVICE, table, "1").items) == [record]


def test_conflicting_duplicate_keeps_the_first_record(
    store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Same event id, different content: RecordConflict naming the id, a warning, first kept."""
    table = fresh()
    record = make_record(table=table, committed_at=T0)
    store.write([record])
    forged = _same_event_again(record, after={"id": "1", "owner": "mallory", "balance": 10**6})
    with caplog.at_level(logging.WARNING), pytest.raises(RecordConflict) as caught:
        store.write([forged])
    assert caught.value.event_id == record.event_id
    assert isinstance(caught.value, RecordRejected)
    assert str(record.event_id) in caplog.text
    assert list(store.history(SERVICE, table, "1").items) == [record]


def test_conflict_elsewhere_is_refused_and_does_not_block_neighbours(store: AuditStore) -> None:
    """A forged duplicate under another record id is refused; its neighbours are written
    (now, or by the rewrite the contract allows)."""
    table = fresh()
    record = make_record(table=table, committed_at=T0)
    store.write([record])
    forged = _same_event_again(record, record_id="2", after={"id": "2", "balance": 5})
    before = make_record(table=table, record_id="3", committed_at=T0)
    after = make_record(table=table, record_id="4", committed_at=T0)
    with pytest.raises(RecordConflict):
        store.write([before, forged, after])
    store.write([before, after])
    assert list(store.history(SERVICE, table, "2").items) == []
    assert list(store.history(SERVICE, table, "1").items) == [record]
    assert list(store.history(SERVICE, table, "3").items) == [before]
    assert list(store.history(SERVICE, table, "4").items) == [after]


def test_conflict_inside_one_batch_keeps_the_first(store: AuditStore) -> None:
    """Two records with one event id and different content in one write: the first wins."""
    table = fresh()
    record = make_record(table=table, committed_at=T0)
    forged = _same_event_again(record, after={"id": "1", "owner": "x", "balance": 0})
    with pytest.raises(RecordConflict):
        store.write([record, forged])
    store.write([record])
    assert list(store.history(SERVICE, table, "1").items) == [record]


# --------------------------------------------------------------------------- rejection


def _unstorable(table: str) -> list[tuple[str, AuditRecord]]:
    """Records built directly (bypassing decode) that no store can hold."""
    return [
        ("sequence 2**70", make_record(table=table, committed_at=T0, sequence=2**70)),
        ("sequence 2**31", make_record(table=table, committed_at=T0, sequence=2**31)),
        ("surrogate in table", make_record(table=table + "\ud800", committed_at=T0)),
        ("surrogate in record id", make_record(table=table, record_id="\udc00", committed_at=T0)),
        (
            "surrogate in a value",
            make_record(
                table=table, committed_at=T0, after={"id": "1", "owner": "\ud800", "balance": 1}
            ),
        ),
        (
            "surrogate in request id",
            make_record(table=table, committed_at=T0, request_id="r\ud800"),
        ),
        (
            "NaN in a value",
            make_record(
                table=table, committed_at=T0, after={"id": "1", "owner": "a", "balance": 1e999}
            ),
        ),
    ]


def test_a_record_no_store_can_hold_is_rejected_not_an_outage(store: AuditStore) -> None:
    """Out-of-range integers, lone surrogates and non-finite numbers are RecordRejected
    (permanent, for that record), never a retryable StoreError; the rest is written."""
    table = fresh()
    good = make_record(table=table, record_id="9", committed_at=T0)
    for what, bad in _unstorable(table):
        with pytest.raises(RecordRejected) as caught:
            store.write([bad])
        assert not isinstance(caught.value, StoreError), what
        with pytest.raises(RecordRejected):
            store.write([good, bad])
    store.write([good])
    assert list(store.history(SERVICE, table, "9").items) == [good]
    assert list(store.history(SERVICE, table, "1").items) == []


# --------------------------------------------------------------------------- markers


def test_markers_are_stored_under_the_star_record(store: AuditStore) -> None:
    """A bulk marker (record id "*") is one record in the table's "*" history and in its
    transaction, and redelivering it changes nothing."""
    table = fresh()
    marker = make_record(
        table=table,
        record_id=MARKER_RECORD_ID,
        committed_at=T0,
        before={},
        after={"rows": 3},
        metadata={MARKER_METADATA_KEY: {"reason": "unmatched", "rows": 3}},
    )
    store.write([marker])
    store.write([_same_event_again(marker, metadata=marker.metadata)])
    assert list(store.history(SERVICE, table, MARKER_RECORD_ID).items) == [marker]
    assert store.by_transaction(marker.transaction_id) == [marker]
    assert list(store.history(SERVICE, table, "1").items) == []


def test_as_of_follows_updates_and_deletes(store: AuditStore) -> None:
    """history(until=t, limit=1) is the record's state at t: inserted, updated, deleted."""
    table = fresh()
    insert = make_record(table=table, committed_at=T0, operation=Operation.INSERT)
    update = make_record(table=table, committed_at=T0 + dt.timedelta(seconds=10))
    delete = make_record(
        table=table, committed_at=T0 + dt.timedelta(seconds=20), operation=Operation.DELETE
    )
    store.write([delete, insert, update])

    def as_of(seconds: float) -> list[AuditRecord]:
        until = T0 + dt.timedelta(seconds=seconds)
        return list(store.history(SERVICE, table, "1", until=until, limit=1).items)

    assert as_of(-1) == []
    assert as_of(0) == [insert]
    assert as_of(15) == [update]
    assert as_of(25) == [delete]
    assert as_of(25)[0].after is None


# --------------------------------------------------------------------------- services


def test_history_is_scoped_to_one_service(store: AuditStore) -> None:
    """Two services with the same table name and record id never share a history."""
    table = fresh()
    billing = [
        make_record(table=table, committed_at=T0 + dt.timedelta(seconds=2 * i)) for i in range(3)
    ]
    crm = [
        make_record(table=table, committed_at=T0 + dt.timedelta(seconds=2 * i + 1), service="crm")
        for i in range(3)
    ]
    store.write([*billing, *crm])
    assert list(store.history(SERVICE, table, "1").items) == list(reversed(billing))
    assert list(store.history("crm", table, "1").items) == list(reversed(crm))
    assert list(store.history("other", table, "1").items) == []
    first = store.history("crm", table, "1", limit=2)
    rest = store.history("crm", table, "1", limit=2, page=first.next_page)
    assert [*first.items, *rest.items] == list(reversed(crm))
    as_of = store.history("crm", table, "1", until=T0 + dt.timedelta(seconds=2), limit=1)
    assert list(as_of.items) == [crm[0]]


def test_services_of_lists_each_writer_once(store: AuditStore) -> None:
    """services_of is the sorted, distinct services that wrote a table and record id."""
    table = fresh()
    store.write(
        [
            make_record(table=table, committed_at=T0, service="crm"),
            make_record(table=table, committed_at=T0, service="billing"),
            make_record(table=table, committed_at=T0 + dt.timedelta(seconds=1), service="crm"),
            make_record(table=table, committed_at=T0, service="shop", record_id="2"),
        ]
    )
    assert store.services_of(table, "1") == ["billing", "crm"]
    assert store.services_of(table, "2") == ["shop"]
    assert store.services_of(table, "3") == []


def test_by_actor_can_be_limited_to_one_service(store: AuditStore) -> None:
    """by_actor with service= returns only that service's changes; without, every service's."""
    table, bob = fresh(), fresh("bob")
    mine = make_record(table=table, committed_at=T0, actor=bob)
    theirs = make_record(
        table=table, committed_at=T0 + dt.timedelta(seconds=1), actor=bob, service="crm"
    )
    store.write([mine, theirs])
    assert list(store.by_actor(bob, since=T0).items) == [theirs, mine]
    assert list(store.by_actor(bob, since=T0, service="crm").items) == [theirs]
    assert list(store.by_actor(bob, since=T0, service=SERVICE).items) == [mine]


# --------------------------------------------------------------------------- request, trace


def _read_all(read: Any, limit: int) -> list[AuditRecord]:
    """Follow the page tokens of ``read(limit=, page=)`` to the end."""
    seen: list[AuditRecord] = []
    token: str | None = None
    while True:
        page = read(limit=limit, page=token)
        assert len(page.items) <= limit
        seen.extend(page.items)
        token = page.next_page
        if token is None:
            return seen


def _commit_order(records: list[AuditRecord]) -> list[AuditRecord]:
    return sorted(records, key=commit_key)


def test_by_request_collects_every_service_in_commit_order(store: AuditStore) -> None:
    """by_request returns one request id's changes across services, oldest first, paged."""
    request, table = fresh("req"), fresh()
    txn = uuid.uuid4()
    same_commit = [
        make_record(
            table=table,
            committed_at=T0 + dt.timedelta(seconds=5),
            transaction_id=txn,
            sequence=i,
            record_id=str(20 - i),
            request_id=request,
        )
        for i in range(3)
    ]
    others = [
        make_record(
            table=table,
            committed_at=T0 + dt.timedelta(seconds=i, microseconds=7),
            service=("crm", "billing")[i % 2],
            record_id=str(i),
            request_id=request,
        )
        for i in (1, 3, 8, 9)
    ]
    noise = [
        make_record(table=table, committed_at=T0, request_id=fresh("req")),
        make_record(table=table, committed_at=T0, request_id=None),
    ]
    store.write([*reversed(same_commit), *others, *noise])
    expected = _commit_order([*same_commit, *others])
    assert [(r.service, r.sequence) for r in expected] == [
        ("billing", 0),
        ("billing", 0),
        ("billing", 0),
        ("billing", 1),
        ("billing", 2),
        ("crm", 0),
        ("billing", 0),
    ]
    assert list(store.by_request(request).items) == expected
    for limit in (1, 2, 3, 7):
        assert _read_all(lambda **kw: store.by_request(request, **kw), limit) == expected
    assert store.by_request(fresh("req")).items == []


def test_by_request_leaves_departures_out(store: AuditStore) -> None:
    """A key change counts once in the request view: the real event, not its departure."""
    table, bob = fresh(), fresh("bob")
    ((record, departure),) = _moves(table, 1, bob)
    assert record.request_id == departure.request_id == "req-1"
    request = fresh("req")
    event = make_event(table=table, request_id=request, **_move_kwargs(record))
    real, gone = records_for_event(event)
    store.write([real, gone])
    assert list(store.by_request(request).items) == [real]


def test_by_trace_finds_the_changes_of_one_trace(store: AuditStore) -> None:
    """by_trace returns the changes whose metadata carries the trace id, in commit order."""
    table = fresh()
    trace = uuid.uuid4().hex
    traced = [
        make_record(
            table=table,
            committed_at=T0 + dt.timedelta(seconds=3 - i),
            service=("crm", "billing")[i % 2],
            record_id=str(i),
            metadata={TRACE_ID_KEY: trace, SPAN_ID_KEY: f"{i:016x}"},
        )
        for i in range(4)
    ]
    noise = [
        make_record(table=table, committed_at=T0, metadata={TRACE_ID_KEY: uuid.uuid4().hex}),
        make_record(table=table, committed_at=T0, metadata={TRACE_ID_KEY: 12345}),
        make_record(table=table, committed_at=T0, metadata={"trace": trace}),
    ]
    store.write([*traced, *noise])
    expected = _commit_order(traced)
    assert list(store.by_trace(trace).items) == expected
    assert _read_all(lambda **kw: store.by_trace(trace, **kw), 3) == expected
    assert store.by_trace("12345").items == []


# --------------------------------------------------------------------------- table timeline


def _timeline(table: str) -> tuple[list[AuditRecord], list[AuditRecord]]:
    """Changes of ``table`` every 37 minutes over ~9 hours (many hour buckets), plus ties
    inside one commit and one microsecond; and changes that must never show up."""
    mine = [
        make_record(
            table=table,
            committed_at=T0 + dt.timedelta(minutes=37 * i, microseconds=i),
            record_id=str(i % 5),
            actor=None if i % 3 else "alice",
        )
        for i in range(15)
    ]
    txn = uuid.uuid4()
    tie = T0 + dt.timedelta(minutes=37 * 7, microseconds=7)
    mine += [
        make_record(
            table=table,
            committed_at=tie,
            transaction_id=txn,
            sequence=seq,
            record_id=f"t{seq}",
        )
        for seq in range(3)
    ]
    noise = [
        make_record(table=table, committed_at=T0 + dt.timedelta(hours=2), service="crm"),
        make_record(table=fresh(), committed_at=T0 + dt.timedelta(hours=2)),
    ]
    return mine, noise


def test_by_table_returns_exactly_the_window_in_both_orders(store: AuditStore) -> None:
    """by_table returns one service's table changes in [since, until] (exact to the
    microsecond), newest or oldest first in commit order, the same across page sizes."""
    table = fresh()
    mine, noise = _timeline(table)
    store.write([*noise, *reversed(mine)])
    ordered = _commit_order(mine)
    since = ordered[2].event_time  # inclusive, to the microsecond
    until = ordered[-3].event_time
    inside = [r for r in ordered if since <= r.event_time <= until]
    assert len(inside) == len(ordered) - 4
    assert list(store.by_table(SERVICE, table, since=since, until=until, limit=100).items) == (
        list(reversed(inside))
    )
    for limit in (1, 2, 4, 17):
        newest = _read_all(
            lambda **kw: store.by_table(SERVICE, table, since=since, until=until, **kw), limit
        )
        assert newest == list(reversed(inside))
        oldest = _read_all(
            lambda **kw: store.by_table(
                SERVICE, table, since=since, until=until, newest_first=False, **kw
            ),
            limit,
        )
        assert oldest == inside
    everything = store.by_table(SERVICE, table, since=T0 - dt.timedelta(days=1), limit=100)
    assert list(everything.items) == list(reversed(ordered))
    crm = store.by_table("crm", table, since=T0, until=T0 + dt.timedelta(days=1))
    assert list(crm.items) == [noise[0]]
    empty = store.by_table(
        SERVICE, table, since=T0 + dt.timedelta(days=2), until=T0 + dt.timedelta(days=3)
    )
    assert empty.items == []


def test_by_table_leaves_departures_out(store: AuditStore) -> None:
    """A key change counts once in the table timeline."""
    table, bob = fresh(), fresh("bob")
    moves = _moves(table, 2, bob)
    store.write([r for pair in moves for r in pair])
    page = store.by_table(SERVICE, table, since=T0, until=T0 + dt.timedelta(minutes=1))
    assert list(page.items) == [moves[1][0], moves[0][0]]


def test_ordered_view_tokens_only_work_for_their_question(store: AuditStore) -> None:
    """A page token of one order (or a history token) is refused by the other order."""
    table = fresh()
    mine, _ = _timeline(table)
    store.write(mine)
    newest = store.by_table(SERVICE, table, since=T0, until=T0 + dt.timedelta(days=1), limit=2)
    assert newest.next_page is not None
    with pytest.raises(InvalidQuery, match="page token"):
        store.by_table(SERVICE, table, since=T0, newest_first=False, page=newest.next_page)
    history = store.history(SERVICE, table, "1", limit=1)
    assert history.next_page is not None
    with pytest.raises(InvalidQuery, match="page token"):
        store.by_table(SERVICE, table, since=T0, page=history.next_page)
    with pytest.raises(InvalidQuery, match="page token"):
        store.by_request("req-1", page=history.next_page)


def _sealed(table: str, count: int) -> list[AuditRecord]:
    """Records of one signed transaction of ``count`` events (seals as the differ makes)."""
    from sqla_audit.signing import EventSigner, Keyring  # noqa: PLC0415

    signer = EventSigner(Keyring(signing_key_id="k1", keys={"k1": b"k" * 32}))
    transaction = uuid.uuid4()
    events = [
        make_event(
            table=table,
            record_id=str(i),
            committed_at=T0,
            transaction_id=transaction,
            sequence=i,
        )
        for i in range(count)
    ]
    events = signer.sign(
        [dataclasses.replace(event, transaction_event_count=count) for event in events]
    )
    return [record for event in events for record in records_for_event(event)]


def test_seals_are_kept_beside_their_records(store: AuditStore) -> None:
    """A signed record's seal (signature, key id, event count and what rebuilding its signed
    content needs) is returned by ``seals``; an unsigned record has none."""
    table = fresh()
    signed = _sealed(table, 2)
    unsigned = make_record(table=table, record_id="u", committed_at=T0)
    store.write([*signed, unsigned])
    store.write(signed)  # a redelivery keeps one seal
    seals = store.seals([*(r.event_id for r in signed), unsigned.event_id])  # type: ignore[attr-defined]
    assert set(seals) == {record.event_id for record in signed}
    for record in signed:
        assert seals[record.event_id] == record.seal
        assert seals[record.event_id].key_id == "k1"
        assert seals[record.event_id].event_count == 2
