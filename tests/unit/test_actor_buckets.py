"""The by-actor view's partition bucketing: bucket starts, shards, tables, keys and flags."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid

import pytest

from consumer.arguments import add_cassandra_arguments
from consumer.config import CassandraSchemaConfig
from consumer.records import to_millis
from consumer.settings import load_schema_config
from consumer.sinks.cassandra import CassandraSchema, CassandraStore, KeyspaceLayout
from consumer.sinks.cassandra.buckets import ActorBucketing, actor_shard, bucket_start_ms
from consumer.sinks.errors import InvalidQuery
from consumer.sinks.views import DEFAULT_VIEWS
from consumer.testing import make_record
from sqla_audit.errors import ConfigurationError


def _ms(*parts: int) -> int:
    return to_millis(dt.datetime(*parts, tzinfo=dt.UTC))  # type: ignore[misc]


def test_bucket_start_is_the_utc_hour_day_monday_or_month() -> None:
    """A bucket starts at the UTC hour, day, ISO week (Monday) or month holding the time."""
    at = _ms(2026, 1, 29, 13, 45, 12)  # a Thursday
    assert bucket_start_ms(at, "hour") == _ms(2026, 1, 29, 13)
    assert bucket_start_ms(at, "day") == _ms(2026, 1, 29)
    assert bucket_start_ms(at, "week") == _ms(2026, 1, 26)
    assert bucket_start_ms(at, "month") == _ms(2026, 1, 1)
    assert bucket_start_ms(_ms(2026, 1, 1) - 1, "month") == _ms(2025, 12, 1)
    assert bucket_start_ms(_ms(1969, 12, 31, 23, 30), "week") == _ms(1969, 12, 29)


def test_default_bucketing_is_the_existing_day_table() -> None:
    """Day buckets with one shard keep the existing changes_by_actor table and its day key."""
    bucketing = ActorBucketing()
    assert bucketing.legacy
    assert bucketing.table == "changes_by_actor"
    assert bucketing.partition_key == "actor_id, day"
    record = make_record(actor="svc")
    assert bucketing.key(record) == (record.day,)
    cql = CassandraSchema(CassandraSchemaConfig()).cql()
    assert "PRIMARY KEY ((actor_id, day), event_time, event_id)" in cql
    assert "changes_by_actor_" not in cql


def test_other_bucketings_get_a_table_of_their_own() -> None:
    """Any other bucket or shard count is a table named by it, keyed by (actor, bucket, shard),
    and schema_info records the setting."""
    config = CassandraSchemaConfig(actor_bucket="hour", actor_shards=4)
    bucketing = ActorBucketing.of(config)
    assert bucketing.table == "changes_by_actor_hour_x4"
    assert ActorBucketing("week", 1).table == "changes_by_actor_week"
    assert ActorBucketing("day", 2).table == "changes_by_actor_day_x2"
    cql = CassandraSchema(config).cql()
    assert "CREATE TABLE IF NOT EXISTS sqla_audit.changes_by_actor_hour_x4 (" in cql
    assert "PRIMARY KEY ((actor_id, bucket, shard), event_time, event_id)" in cql
    assert "sqla_audit.changes_by_actor (" not in cql
    assert "actor_bucket, actor_shards)" in cql
    assert "'hour', 4)" in cql


def test_shard_is_stable_per_event_and_spreads_events() -> None:
    """An event always lands in the same shard (a redelivery rewrites the same row); many
    events use every shard."""
    ids = [uuid.uuid4() for _ in range(400)]
    assert [actor_shard(i, 8) for i in ids] == [actor_shard(i, 8) for i in ids]
    assert {actor_shard(i, 8) for i in ids} == set(range(8))
    assert {actor_shard(i, 1) for i in ids} == {0}


def test_partitions_walk_the_window_newest_bucket_first() -> None:
    """A window reads only the buckets it covers, newest first, every shard of each."""
    bucketing = ActorBucketing("hour", 2)
    low, high = _ms(2026, 1, 1, 22, 30), _ms(2026, 1, 2, 0, 10)
    starts = [_ms(2026, 1, 2), _ms(2026, 1, 1, 23), _ms(2026, 1, 1, 22)]
    assert bucketing.partitions(low, high) == [[(s, 0), (s, 1)] for s in starts]
    monthly = ActorBucketing("month", 1).partitions(_ms(2025, 11, 30), _ms(2026, 1, 3))
    assert monthly == [[(_ms(2026, 1, 1), 0)], [(_ms(2025, 12, 1), 0)], [(_ms(2025, 11, 1), 0)]]
    days = ActorBucketing().partitions(_ms(2026, 1, 1, 5), _ms(2026, 1, 2, 1))
    assert days == [[(dt.date(2026, 1, 2),)], [(dt.date(2026, 1, 1),)]]


def test_a_window_of_too_many_partitions_is_refused() -> None:
    """Hourly buckets since the epoch would be millions of reads: an InvalidQuery instead."""
    with pytest.raises(InvalidQuery, match="narrow since"):
        ActorBucketing("hour", 4).partitions(0, _ms(2026, 1, 1))


class _Prepared:
    def __init__(self, query: str) -> None:
        self.query = query
        self.is_idempotent = False


class _Session:
    def prepare(self, query: str) -> _Prepared:
        return _Prepared(query)


def test_store_binds_the_actor_rows_bucket_and_shard() -> None:
    """The store takes the bucketing from the layout and binds the bucket start and shard."""
    layout = KeyspaceLayout(2, views=DEFAULT_VIEWS, actor_bucket="hour", actor_shards=4)
    store = CassandraStore(_Session(), CassandraSchemaConfig(keyspace="ks"), layout=layout)
    record = make_record(actor="svc")
    actor = [
        (statement, params)
        for statement, params in store._statements_for(record)
        if "changes_by_actor" in statement.query
    ]
    assert len(actor) == 1
    statement, params = actor[0]
    assert "INSERT INTO ks.changes_by_actor_hour_x4 (" in statement.query
    assert statement.query.split("(")[1].split(")")[0].endswith("bucket, shard")
    assert params[-2:] == (
        bucket_start_ms(to_millis(record.event_time), "hour"),
        actor_shard(record.event_id, 4),
    )


def _parser(writes: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_cassandra_arguments(parser, connection=False, writes=writes)
    return parser


def test_flags_and_environment_choose_the_actor_bucketing() -> None:
    """--actor-bucket/--actor-shards (or their variables) choose it; the flag wins."""
    args = _parser().parse_args(["--actor-bucket", "hour", "--actor-shards", "8"])
    config = load_schema_config(args, {})
    assert (config.actor_bucket, config.actor_shards) == ("hour", 8)
    env = {"SQLA_AUDIT_ACTOR_BUCKET": "week", "SQLA_AUDIT_ACTOR_SHARDS": "2"}
    config = load_schema_config(_parser().parse_args([]), env)
    assert (config.actor_bucket, config.actor_shards) == ("week", 2)
    config = load_schema_config(_parser().parse_args([]), {})
    assert (config.actor_bucket, config.actor_shards) == ("day", 1)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--actor-bucket", "minute"], "--actor-bucket must be one of hour, day"),
        (["--actor-shards", "0"], "--actor-shards must be an integer from 1 to 256"),
        (["--actor-shards", "257"], "--actor-shards must be an integer from 1 to 256"),
    ],
)
def test_bad_actor_bucketing_is_a_configuration_error(flags: list[str], message: str) -> None:
    """An unknown bucket or a shard count outside 1-256 names the flag and what it takes."""
    with pytest.raises(ConfigurationError, match=message):
        load_schema_config(_parser().parse_args(flags), {})


def test_readers_take_no_actor_bucketing_flag() -> None:
    """The query commands read the bucketing from schema_info: the flag is not theirs."""
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        _parser(writes=False).parse_args(["--actor-bucket", "hour"])
