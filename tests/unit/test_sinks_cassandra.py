"""The Cassandra schema generator, helpers and write window (no Cassandra needed)."""

from __future__ import annotations

import datetime as dt
import threading
import zlib
from typing import Any

import pytest
from cassandra import InvalidRequest, OperationTimedOut
from cassandra.query import UNSET_VALUE

from consumer.config import CassandraSchemaConfig
from consumer.sinks.base import RecordRejected
from consumer.sinks.cassandra import (
    CassandraSchema,
    CassandraStore,
    KeyspaceLayout,
    bucket_of,
    timeline_bucket_ms,
    timeline_shard,
)
from consumer.testing import make_record
from sqla_audit.errors import ConfigurationError, StoreError


def test_default_schema_is_layout_2_with_every_view() -> None:
    """The default schema: keyspace, schema_info, service-scoped history, record_services,
    digests, seals and the five views, all IF NOT EXISTS, then the schema_info row."""
    statements = CassandraSchema(CassandraSchemaConfig()).statements()
    assert len(statements) == 12
    assert all(" IF NOT EXISTS " in s for s in statements[:-1])
    cql = CassandraSchema(CassandraSchemaConfig()).cql()
    assert "'class': 'SimpleStrategy', 'replication_factor': 1" in cql
    assert "PRIMARY KEY ((service, table_name, record_id), event_time, event_id)" in cql
    assert "CLUSTERING ORDER BY (event_time DESC, event_id DESC)" in cql
    assert "PRIMARY KEY ((table_name, record_id), service)" in cql
    assert "PRIMARY KEY ((actor_id, day), event_time, event_id)" in cql
    assert "PRIMARY KEY ((transaction_id), sequence, event_id)" in cql
    order = "event_time, event_time_us, sequence, event_id"
    assert f"PRIMARY KEY ((request_id), {order})" in cql
    assert f"PRIMARY KEY ((trace_id), {order})" in cql
    assert f"PRIMARY KEY ((service, table_name, bucket, shard), {order})" in cql
    assert "event_id uuid" in cql
    assert "timeuuid" not in cql
    assert "default_time_to_live" not in cql
    assert "event_id uuid PRIMARY KEY,\n    digest blob" in cql
    assert "VALUES ('audit', 2, 'actor,transaction,request,trace,table', 'none', 'hour', 1)" in cql
    assert cql.count(";") == 12


def test_views_choose_the_view_tables() -> None:
    """Only the chosen views get a table; history, its lookup and schema_info always do."""
    cql = CassandraSchema(CassandraSchemaConfig(views=frozenset({"request"}))).cql()
    assert "changes_by_request" in cql
    for absent in (
        "changes_by_actor",
        "changes_by_transaction",
        "changes_by_trace",
        "changes_by_table",
    ):
        assert absent not in cql
    assert "changes_by_service_record" in cql
    assert "record_services" in cql
    assert "'request', 'none', 'hour', 1)" in cql
    bare = CassandraSchema(CassandraSchemaConfig(views=frozenset())).cql()
    assert "'history', 'none', 'hour', 1)" in bare


def test_network_topology_and_ttl() -> None:
    """Replication per datacenter and a TTL on every table but schema_info."""
    cql = CassandraSchema(
        CassandraSchemaConfig(
            keyspace="audit",
            replication_class="NetworkTopologyStrategy",
            datacenters={"dc2": 2, "dc1": 3},
            ttl_seconds=3600,
        )
    ).cql()
    assert "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}" in cql
    assert cql.count("default_time_to_live = 3600") == 9  # digests and seals expire with the rows
    assert "CREATE TABLE IF NOT EXISTS audit.changes_by_service_record" in cql


def test_time_bucket_adds_partition_key_and_bucket_table() -> None:
    """A time bucket joins the history partition key and adds service_record_buckets."""
    cql = CassandraSchema(CassandraSchemaConfig(time_bucket="month", ttl_seconds=60)).cql()
    assert "PRIMARY KEY ((service, table_name, record_id, bucket), event_time, event_id)" in cql
    assert "CREATE TABLE IF NOT EXISTS sqla_audit.service_record_buckets" in cql
    assert cql.count("default_time_to_live = 60") == 10


def test_timeline_buckets_and_shards() -> None:
    """Timeline buckets start at the UTC minute, hour or day; shards are a stable hash."""
    at = 1_767_225_600_000 + 3 * 3_600_000 + 17 * 60_000 + 5_123  # 2026-01-01 03:17:05.123
    assert timeline_bucket_ms(at, "minute") == at - 5_123
    assert timeline_bucket_ms(at, "hour") == at - 17 * 60_000 - 5_123
    assert timeline_bucket_ms(at, "day") == 1_767_225_600_000
    assert timeline_shard("42", 1) == 0
    assert {timeline_shard(str(i), 4) for i in range(100)} == {0, 1, 2, 3}
    assert timeline_shard("42", 4) == timeline_shard("42", 4) == zlib.crc32(b"42") % 4


@pytest.mark.parametrize(
    ("granularity", "expected"), [("year", 2026), ("month", 202602), ("day", 20260201)]
)
def test_bucket_of(granularity: str, expected: int) -> None:
    """Buckets are readable numbers, computed in UTC (here already 1 February)."""
    moment = dt.datetime(2026, 1, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-1)))
    assert bucket_of(moment, granularity) == expected


def test_bucket_of_rejects_unknown_granularity() -> None:
    """An unknown bucket size is an error."""
    with pytest.raises(ValueError, match="week"):
        bucket_of(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "week")


# --------------------------------------------------------------------------- the write window


class _Prepared:
    def __init__(self, query: str, refuse: Any = None) -> None:
        self.query = query
        self.is_idempotent = False
        self.refuse = refuse

    def bind(self, params: tuple[Any, ...]) -> _Bound:
        if self.refuse is not None and self.refuse(params):
            raise TypeError("Received an argument of invalid type (argument out of range)")
        return _Bound(self, params)


class _Bound:
    def __init__(self, prepared: _Prepared, params: tuple[Any, ...]) -> None:
        self.prepared = prepared
        self.params = params
        self.routing_key = b"key"


class _Result:
    def one(self) -> None:
        return None  # no digest stored yet


class _Future:
    def __init__(self, session: _Session, error: BaseException | None) -> None:
        self._session = session
        self._error = error
        self.collected = False

    def result(self) -> _Result:
        assert not self.collected, "a result is collected once"
        self.collected = True
        with self._session.lock:
            self._session.out -= 1
        if self._error is not None:
            raise self._error
        return _Result()


class _Session:
    """Answers every request at once; counts requests sent and not yet collected."""

    def __init__(self, fail: dict[int, BaseException] | None = None, refuse: Any = None) -> None:
        self.fail = fail or {}
        self.refuse = refuse
        self.lock = threading.Lock()
        self.sent: list[_Future] = []
        self.bound: list[_Bound] = []
        self.out = 0
        self.most_out = 0

    def prepare(self, query: str) -> _Prepared:
        return _Prepared(query, self.refuse if query.startswith("INSERT") else None)

    def execute_async(self, bound: _Bound, timeout: float) -> _Future:
        error = self.fail.get(len(self.sent))
        if isinstance(error, ConnectionError):
            raise error
        future = _Future(self, error)
        with self.lock:
            self.sent.append(future)
            self.bound.append(bound)
            self.out += 1
            self.most_out = max(self.most_out, self.out)
        return future


def _store(session: _Session, max_in_flight: int) -> CassandraStore:
    layout = KeyspaceLayout(2, views=frozenset({"actor", "transaction"}))
    return CassandraStore(
        session, CassandraSchemaConfig(keyspace="ks"), max_in_flight=max_in_flight, layout=layout
    )


def _records(count: int) -> list[Any]:
    return [make_record(record_id=str(i)) for i in range(count)]


def _free_slots(store: CassandraStore) -> int:
    taken = 0
    while store._slots.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        store._slots.release()
    return taken


def test_a_write_larger_than_the_window_settles_its_own_requests() -> None:
    """A write of more statements than max_in_flight finishes, never above the bound."""
    session = _Session()
    store = _store(session, max_in_flight=4)
    store.write(_records(10))  # per record: digest read, record, service, txn, actor, digest
    assert len(session.sent) == 60
    assert session.most_out == 4
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 4


def test_the_window_is_shared_by_threads() -> None:
    """Concurrent writes from several threads never exceed max_in_flight together."""
    session = _Session()
    store = _store(session, max_in_flight=5)
    threads = [threading.Thread(target=store.write, args=(_records(20),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(session.sent) == 480
    assert session.most_out <= 5
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 5


def test_a_refused_record_is_permanent_and_everything_sent_is_collected() -> None:
    """An InvalidRequest becomes RecordRejected, after every sent request has settled; no
    digest is written for a write that failed."""
    session = _Session(fail={6: InvalidRequest("bad")})
    store = _store(session, max_in_flight=3)
    with pytest.raises(RecordRejected, match="bad"):
        store.write(_records(4))
    assert len(session.sent) == 20  # 4 digest reads, 16 rows; a failure does not stop them
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 3


def test_an_outage_outranks_a_refused_record() -> None:
    """With a timeout and a refused record in one write, the write is a retryable StoreError."""
    session = _Session(fail={5: InvalidRequest("bad"), 9: OperationTimedOut("slow")})
    store = _store(session, max_in_flight=3)
    with pytest.raises(StoreError, match="slow") as caught:
        store.write(_records(4))
    assert not isinstance(caught.value, RecordRejected)
    assert all(future.collected for future in session.sent)


def test_a_value_the_driver_cannot_bind_is_a_refused_record() -> None:
    """A bind() error (an int out of range, a surrogate) is RecordRejected naming the event,
    not an outage; the records before it were sent and collected."""
    huge = 2**40
    session = _Session(refuse=lambda params: huge in params)
    store = _store(session, max_in_flight=64)
    records = _records(3)
    store.write(records)
    bad = make_record(record_id="9")
    object.__setattr__(bad, "sequence", huge)
    with pytest.raises(RecordRejected, match=str(bad.event_id)) as caught:
        store._run((bad, statement, params) for statement, params in store._statements_for(bad))
    assert not isinstance(caught.value, StoreError)
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 64


def test_a_failed_send_stops_sending_and_is_retryable() -> None:
    """A request the driver cannot send ends the write with a retryable StoreError."""
    session = _Session(fail={9: ConnectionError("no host")})
    store = _store(session, max_in_flight=64)
    with pytest.raises(StoreError, match="no host") as caught:
        store.write(_records(4))
    assert not isinstance(caught.value, RecordRejected)
    assert len(session.sent) == 9
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 64


def test_absent_values_are_bound_unset_never_none() -> None:
    """before of an insert, after of a delete, previous_record_id, request_id and the actor
    are bound as UNSET_VALUE (no tombstone), never None."""
    session = _Session()
    store = _store(session, max_in_flight=64)
    insert = make_record(operation="insert", actor=None, request_id=None)
    delete = make_record(operation="delete")
    store.write([insert, delete])
    names = store._insert_record.query.split("(")[1].split(")")[0].split(", ")
    rows = [b.params for b in session.bound if b.prepared is store._insert_record]
    assert len(rows) == 2
    assert all(None not in bound.params for bound in session.bound)
    first, second = (dict(zip(names, params, strict=True)) for params in rows)
    by_event = {str(first["event_id"]): first, str(second["event_id"]): second}
    inserted, deleted = by_event[str(insert.event_id)], by_event[str(delete.event_id)]
    for name in ("before", "previous_record_id", "request_id", "actor_id"):
        assert inserted[name] is UNSET_VALUE, name
    assert deleted["after"] is UNSET_VALUE
    assert deleted["previous_record_id"] is UNSET_VALUE
    assert deleted["before"] is not UNSET_VALUE


def test_protocol_3_is_refused() -> None:
    """Leaving values unset needs protocol 4+: an older session is a ConfigurationError."""

    class Old(_Session):
        class cluster:
            protocol_version = 3

    with pytest.raises(ConfigurationError, match="protocol 4"):
        _store(Old(), max_in_flight=4)


def test_hosts_that_do_not_resolve_are_a_store_error_naming_them() -> None:
    """A contact point that resolves nowhere (.invalid never does) is a StoreError naming
    the hosts, not the driver's bare UnresolvableContactPoints({})."""
    from consumer.config import CassandraConfig  # noqa: PLC0415
    from consumer.sinks.cassandra import connect  # noqa: PLC0415
    from sqla_audit.errors import StoreError  # noqa: PLC0415

    with pytest.raises(StoreError, match=r"cassandra\.invalid.*resolves"):
        connect(CassandraConfig(hosts=("cassandra.invalid",)))
