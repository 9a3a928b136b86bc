"""The Cassandra schema generator and helpers (no Cassandra needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from consumer.config import CassandraSchemaConfig
from consumer.sinks.cassandra import CassandraSchema, bucket_of


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
