"""The Cassandra store against a real node: schema apply, idempotent writes, reads, paging."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cassandra_support import CASSANDRA_LOCAL_DC, cassandra_config, split_contact

from consumer.cli import main
from consumer.differ import records_for_event
from consumer.records import AuditRecord
from consumer.sinks.base import AuditStore, RecordRejected
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.testing import make_event, make_record
from sqla_audit.errors import ConfigurationError, StoreError
from sqla_audit.events import Actor, Operation

if TYPE_CHECKING:
    from cassandra.cluster import Session

T0 = dt.datetime(2026, 3, 10, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module", params=["none", "month"])
def store(
    request: pytest.FixtureRequest, cassandra_contact: str, cassandra_session: Session
) -> Iterator[AuditStore]:
    """A Cassandra store on a fresh keyspace, with and without a time bucket."""
    keyspace = f"sqla_audit_store_{request.param}_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace, time_bucket=request.param)
    apply_schema(config)
    made = CassandraStore.connect(config)
    try:
        yield made
    finally:
        made.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def fresh_id() -> str:
    return uuid.uuid4().hex


def records(record_id: str, count: int, **kwargs: object) -> list[AuditRecord]:
    return [
        make_record(record_id=record_id, committed_at=T0 + dt.timedelta(days=7 * i), **kwargs)  # type: ignore[arg-type]
        for i in range(count)
    ]


def test_schema_apply_is_idempotent(cassandra_contact: str, cassandra_keyspace: str) -> None:
    """`sqla-audit schema apply` creates the tables and can run again harmlessly."""
    host, port = split_contact(cassandra_contact)
    argv = [
        "schema",
        "apply",
        "--cassandra-hosts",
        host,
        "--cassandra-port",
        str(port),
        "--local-dc",
        CASSANDRA_LOCAL_DC,
        "--keyspace",
        cassandra_keyspace,
        "--ttl",
        "86400",
    ]
    assert main(argv) == 0
    assert main(argv) == 0
    store = CassandraStore.connect(cassandra_config(cassandra_contact, cassandra_keyspace))
    store.close()


def test_missing_tables_are_a_configuration_error(
    cassandra_contact: str, cassandra_keyspace: str
) -> None:
    """Connecting to a keyspace without the audit tables says to run `schema apply`."""
    config = cassandra_config(cassandra_contact, f"{cassandra_keyspace}_empty")
    with pytest.raises(
        ConfigurationError, match="has no audit tables: run `sqla-audit schema apply"
    ):
        CassandraStore.connect(config)


def test_history_round_trips_newest_first_across_buckets(store: AuditStore) -> None:
    """Records come back unchanged, newest first, over several months."""
    rid = fresh_id()
    written = records(rid, 10)
    store.write(written)
    assert list(store.history("billing", "accounts", rid).items) == list(reversed(written))


def test_writes_are_idempotent(store: AuditStore) -> None:
    """Writing the same records again leaves one row per event."""
    rid = fresh_id()
    written = records(rid, 3)
    store.write(written)
    store.write(written)
    assert len(store.history("billing", "accounts", rid).items) == 3


def test_paging_visits_everything_once(store: AuditStore) -> None:
    """Page tokens walk the whole history exactly once."""
    rid = fresh_id()
    written = records(rid, 9)
    store.write(written)
    seen: list[AuditRecord] = []
    token: str | None = None
    while True:
        page = store.history("billing", "accounts", rid, limit=4, page=token)
        seen.extend(page.items)
        token = page.next_page
        if token is None:
            break
    assert seen == list(reversed(written))


def test_window_is_exact_to_the_microsecond(store: AuditStore) -> None:
    """since/until are inclusive and exact inside one millisecond."""
    rid = fresh_id()
    written = [
        make_record(record_id=rid, committed_at=T0 + dt.timedelta(microseconds=100 * i))
        for i in range(5)
    ]
    store.write(written)
    page = store.history(
        "billing",
        "accounts",
        rid,
        since=T0 + dt.timedelta(microseconds=100),
        until=T0 + dt.timedelta(microseconds=300),
    )
    assert {r.event_id for r in page.items} == {r.event_id for r in written[1:4]}


def test_state_as_of(store: AuditStore) -> None:
    """history(until=t, limit=1) is the newest record at or before t."""
    rid = fresh_id()
    written = records(rid, 4)
    store.write(written)
    page = store.history("billing", "accounts", rid, until=T0 + dt.timedelta(days=15), limit=1)
    assert list(page.items) == [written[2]]


def test_by_actor_and_by_transaction(store: AuditStore) -> None:
    """The companion tables answer per-actor-and-day and per-transaction questions."""
    actor = f"actor-{fresh_id()}"
    txn = uuid.uuid4()
    first = make_record(
        record_id=fresh_id(),
        committed_at=T0,
        actor=Actor(actor, {"role": "ops"}),
        transaction_id=txn,
        sequence=0,
    )
    second = make_record(
        record_id=fresh_id(),
        committed_at=T0 + dt.timedelta(days=2),
        actor=actor,
        transaction_id=txn,
        sequence=1,
    )
    store.write([second, first])
    page = store.by_actor(actor, since=T0 - dt.timedelta(days=1), until=T0 + dt.timedelta(days=3))
    assert list(page.items) == [second, first]
    one = store.by_actor(actor, since=T0, until=T0 + dt.timedelta(days=3), limit=1)
    rest = store.by_actor(
        actor, since=T0, until=T0 + dt.timedelta(days=3), limit=1, page=one.next_page
    )
    assert [*one.items, *rest.items] == [second, first]
    assert store.by_transaction(txn) == [first, second]


def test_a_departure_is_written_to_the_record_table_only(store: AuditStore) -> None:
    """A key change's departure is in the old id's history, not by actor or transaction."""
    old_id, new_id, actor = fresh_id(), fresh_id(), f"actor-{fresh_id()}"
    event = make_event(
        record_id=new_id,
        previous_record_id=old_id,
        before={"id": old_id, "balance": 1},
        after={"id": new_id, "balance": 2},
        committed_at=T0,
        actor=actor,
    )
    made = records_for_event(event)
    record, departure = made
    store.write(made)
    store.write(made)  # redelivery rewrites the same rows
    assert list(store.history("billing", "accounts", old_id).items) == [departure]
    assert departure.moved_to == new_id
    assert list(store.history("billing", "accounts", new_id).items) == [record]
    assert store.by_transaction(event.transaction_id) == [record]
    page = store.by_actor(actor, since=T0 - dt.timedelta(days=1), until=T0 + dt.timedelta(days=1))
    assert list(page.items) == [record]


def test_plain_cql_reads_the_primary_table(
    cassandra_contact: str, cassandra_session: Session
) -> None:
    """Without a time bucket, `WHERE service=? AND table_name=? AND record_id=?` reads a
    record's history."""
    keyspace = f"sqla_audit_cql_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace)
    apply_schema(config)
    store = CassandraStore.connect(config)
    try:
        rid = fresh_id()
        store.write(records(rid, 2))
        rows = list(
            cassandra_session.execute(
                f"SELECT operation, actor_id FROM {keyspace}.changes_by_service_record "
                "WHERE service = %s AND table_name = %s AND record_id = %s",
                ("billing", "accounts", rid),
            )
        )
        assert [(r.operation, r.actor_id) for r in rows] == [("update", "alice")] * 2
    finally:
        store.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def _tombstones_read(session: Session, query: str, params: tuple[object, ...]) -> tuple[int, int]:
    """(live rows, tombstone cells) Cassandra reports in the trace of one read."""
    result = session.execute(query, params, trace=True)
    trace = result.get_query_trace(max_wait_sec=10)
    counts = [
        (int(found.group(1)), int(found.group(2)))
        for event in trace.events
        if (
            found := re.search(r"Read (\d+) live rows and (\d+) tombstone cells", event.description)
        )
    ]
    assert counts, [event.description for event in trace.events]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def test_absent_values_write_no_tombstones(
    cassandra_contact: str, cassandra_session: Session
) -> None:
    """Absent values (before of inserts, after of deletes, previous_record_id, request_id,
    actor) are left unset: a traced read of the partitions finds 0 tombstone cells, and the
    rows read back with those fields None."""
    keyspace = f"sqla_audit_tomb_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace)
    apply_schema(config)
    store = CassandraStore.connect(config)
    try:
        rid = fresh_id()
        inserts = [
            make_record(
                record_id=rid,
                operation=Operation.INSERT,
                committed_at=T0 + dt.timedelta(seconds=i),
                actor=None,
                request_id=None,
            )
            for i in range(20)
        ]
        deletes = [
            make_record(
                record_id=rid,
                operation=Operation.DELETE,
                committed_at=T0 + dt.timedelta(hours=1, seconds=i),
            )
            for i in range(20)
        ]
        store.write([*inserts, *deletes])
        live, tombstones = _tombstones_read(
            cassandra_session,
            f"SELECT * FROM {keyspace}.changes_by_service_record "
            "WHERE service = %s AND table_name = %s AND record_id = %s",
            ("billing", "accounts", rid),
        )
        assert (live, tombstones) == (40, 0)
        txn_live, txn_tombstones = _tombstones_read(
            cassandra_session,
            f"SELECT * FROM {keyspace}.changes_by_transaction WHERE transaction_id = %s",
            (inserts[0].transaction_id,),
        )
        assert (txn_live, txn_tombstones) == (1, 0)
        history = store.history("billing", "accounts", rid, limit=100).items
        assert list(history) == list(reversed([*inserts, *deletes]))
        assert history[-1].before is None
        assert history[-1].actor_id is None
        assert history[-1].request_id is None
        assert history[-1].previous_record_id is None
        assert history[0].after is None
    finally:
        store.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def test_driver_and_server_refusals_are_per_record(store: AuditStore) -> None:
    """Below the shared checks: values the driver refuses at bind (an int beyond 32 bits,
    a lone surrogate) and a request Cassandra refuses (a partition key over 64 KiB) are
    RecordRejected, never a retryable StoreError."""
    assert isinstance(store, CassandraStore)
    good = make_record(record_id=fresh_id(), committed_at=T0)
    big = dataclasses.replace(good, sequence=2**40)
    surrogate = dataclasses.replace(good, table="accounts\ud800")
    long_key = dataclasses.replace(good, record_id="k" * 70_000)  # the driver refuses it
    long_pair = dataclasses.replace(good, table="t" * 33_000, record_id="k" * 33_000)  # server
    for bad in (big, surrogate, long_key, long_pair):
        with pytest.raises(RecordRejected) as caught:
            store._run((bad, statement, params) for statement, params in store._statements_for(bad))
        assert not isinstance(caught.value, StoreError)
    store.write([good])
    assert list(store.history("billing", "accounts", good.record_id).items) == [good]


def test_the_store_binds_the_bytes_the_drivers_bind_gives(store: AuditStore) -> None:
    """Against the node's own prepared statements, every request of a record (every view,
    an actor, a request id, a trace id, a move) carries exactly the values and routing key
    of the driver's bind."""
    assert isinstance(store, CassandraStore)
    event = make_event(
        record_id=fresh_id(),
        previous_record_id=fresh_id(),
        request_id="req-bind",
        metadata={"otel.trace_id": "cd" * 16},
    )
    made = [*records_for_event(event), make_record(operation="insert", actor=None)]
    count = 0
    for record in made:
        memo: list[object] = []
        for statement, params in store._statements_for(record):
            bound = store._bind(record, statement, params, memo)
            reference = statement.bind(params)
            assert bound.values == reference.values
            assert bound.routing_key == reference.routing_key
            count += 1
    assert count >= 10
