"""The Cassandra schema generator, helpers and write window (no Cassandra needed)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from cassandra import InvalidRequest, OperationTimedOut

from consumer.config import CassandraSchemaConfig
from consumer.sinks.base import RecordRejected
from consumer.sinks.cassandra import CassandraSchema, CassandraStore, bucket_of
from consumer.testing import make_record
from sqla_audit.errors import StoreError


def test_default_schema_has_the_three_tables() -> None:
    """The default schema creates the keyspace and three tables, all IF NOT EXISTS."""
    statements = CassandraSchema(CassandraSchemaConfig()).statements()
    assert len(statements) == 4
    assert all(" IF NOT EXISTS " in s for s in statements)
    cql = CassandraSchema(CassandraSchemaConfig()).cql()
    assert "'class': 'SimpleStrategy', 'replication_factor': 1" in cql
    assert "PRIMARY KEY ((table_name, record_id), event_time, event_id)" in cql
    assert "CLUSTERING ORDER BY (event_time DESC, event_id DESC)" in cql
    assert "PRIMARY KEY ((actor_id, day), event_time, event_id)" in cql
    assert "PRIMARY KEY ((transaction_id), sequence, event_id)" in cql
    assert "event_id uuid" in cql
    assert "timeuuid" not in cql
    assert "default_time_to_live" not in cql
    assert cql.count(";") == 4


def test_network_topology_and_ttl() -> None:
    """Replication per datacenter and a TTL on every table."""
    cql = CassandraSchema(
        CassandraSchemaConfig(
            keyspace="audit",
            replication_class="NetworkTopologyStrategy",
            datacenters={"dc2": 2, "dc1": 3},
            ttl_seconds=3600,
        )
    ).cql()
    assert "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}" in cql
    assert cql.count("default_time_to_live = 3600") == 3
    assert "CREATE TABLE IF NOT EXISTS audit.changes_by_record" in cql


def test_time_bucket_adds_partition_key_and_bucket_table() -> None:
    """A time bucket joins the primary partition key and adds record_buckets."""
    cql = CassandraSchema(CassandraSchemaConfig(time_bucket="month", ttl_seconds=60)).cql()
    assert "PRIMARY KEY ((table_name, record_id, bucket), event_time, event_id)" in cql
    assert "CREATE TABLE IF NOT EXISTS sqla_audit.record_buckets" in cql
    assert cql.count("default_time_to_live = 60") == 4


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
    def __init__(self, query: str) -> None:
        self.query = query
        self.is_idempotent = False


class _Future:
    def __init__(self, session: _Session, error: BaseException | None) -> None:
        self._session = session
        self._error = error
        self.collected = False

    def result(self) -> None:
        assert not self.collected, "a result is collected once"
        self.collected = True
        with self._session.lock:
            self._session.out -= 1
        if self._error is not None:
            raise self._error


class _Session:
    """Answers every request at once; counts requests sent and not yet collected."""

    def __init__(self, fail: dict[int, BaseException] | None = None) -> None:
        self.fail = fail or {}
        self.lock = threading.Lock()
        self.sent: list[_Future] = []
        self.out = 0
        self.most_out = 0

    def prepare(self, query: str) -> _Prepared:
        return _Prepared(query)

    def execute_async(self, statement: Any, params: Any, timeout: float) -> _Future:
        error = self.fail.get(len(self.sent))
        if isinstance(error, ConnectionError):
            raise error
        future = _Future(self, error)
        with self.lock:
            self.sent.append(future)
            self.out += 1
            self.most_out = max(self.most_out, self.out)
        return future


def _store(session: _Session, max_in_flight: int) -> CassandraStore:
    return CassandraStore(
        session, CassandraSchemaConfig(keyspace="ks"), max_in_flight=max_in_flight
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
    store.write(_records(10))  # three statements per record (record, transaction, actor)
    assert len(session.sent) == 30
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
    assert len(session.sent) == 240
    assert session.most_out <= 5
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 5


def test_a_refused_record_is_permanent_and_everything_sent_is_collected() -> None:
    """An InvalidRequest becomes RecordRejected, after every sent request has settled."""
    session = _Session(fail={4: InvalidRequest("bad"), 7: OperationTimedOut("slow")})
    store = _store(session, max_in_flight=3)
    with pytest.raises(RecordRejected, match="bad"):
        store.write(_records(4))
    assert len(session.sent) == 12  # a failed request does not stop the others
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 3


def test_a_failed_send_stops_sending_and_is_retryable() -> None:
    """A request the driver cannot send ends the write with a retryable StoreError."""
    session = _Session(fail={5: ConnectionError("no host")})
    store = _store(session, max_in_flight=64)
    with pytest.raises(StoreError, match="no host") as caught:
        store.write(_records(4))
    assert not isinstance(caught.value, RecordRejected)
    assert len(session.sent) == 5
    assert all(future.collected for future in session.sent)
    assert _free_slots(store) == 64
