"""The by-actor view bucketed by hour with shards, on a real Cassandra node: written by the
real store, read across bucket boundaries and pages, and an existing keyspace refused by
``schema apply`` and rebuilt by ``schema migrate``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from cassandra_support import cassandra_config

from consumer.config import ActorBucket, CassandraConfig, TimeBucket
from consumer.records import AuditRecord, to_millis
from consumer.sinks.cassandra import CassandraStore, apply_schema, read_layout
from consumer.sinks.migrate import migrate
from consumer.testing import make_record
from sqla_audit.errors import ConfigurationError

if TYPE_CHECKING:
    from cassandra.cluster import Session

T0 = dt.datetime(2026, 1, 10, 22, 5, tzinfo=dt.UTC)
#: One change every 10 minutes for 5 hours, across midnight, by the service account.
TIMES = [T0 + dt.timedelta(minutes=10 * n) for n in range(30)]


@pytest.fixture
def keyspace(cassandra_session: Session) -> Iterator[str]:
    name = f"sqla_audit_ab_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=180)


def _config(
    contact: str,
    keyspace: str,
    bucket: ActorBucket = "day",
    shards: int = 1,
    history: TimeBucket = "none",
) -> CassandraConfig:
    config = cassandra_config(contact, keyspace, time_bucket=history)
    schema = dataclasses.replace(config.schema, actor_bucket=bucket, actor_shards=shards)
    return dataclasses.replace(config, schema=schema)


def _records() -> list[AuditRecord]:
    out = [
        make_record(record_id=str(n % 7), actor="svc-batch", committed_at=moment)
        for n, moment in enumerate(TIMES)
    ]
    out += [make_record(record_id="1", actor="alice", committed_at=T0)]
    return out


def _all_pages(store: CassandraStore, since: dt.datetime, until: dt.datetime) -> list[Any]:
    found: list[AuditRecord] = []
    page = None
    while True:
        result = store.by_actor("svc-batch", since=since, until=until, limit=4, page=page)
        found += result.items
        page = result.next_page
        if page is None:
            return [record.event_id for record in found]


def _newest_first(records: list[AuditRecord], since: dt.datetime, until: dt.datetime) -> list[Any]:
    chosen = [r for r in records if r.actor_id == "svc-batch" and since <= r.event_time <= until]
    return [r.event_id for r in sorted(chosen, key=lambda r: r.sort_key, reverse=True)]


class _Counting:
    """The store's session, recording the partition of every by-actor read."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.partitions: list[tuple[Any, ...]] = []

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        query = getattr(getattr(statement, "prepared_statement", None), "query_string", "")
        if "changes_by_actor" in query:
            self.partitions.append(tuple(statement.raw_values[1:3]))
        return self._session.execute(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def test_hourly_sharded_actor_view_pages_across_buckets(
    cassandra_contact: str, cassandra_session: Session, keyspace: str
) -> None:
    """A service account's changes land in hour x 3-shard partitions; a window reads only the
    hours it covers, newest first, and its pages give every change once. History in hour
    buckets walks a record's hours too."""
    config = _config(cassandra_contact, keyspace, "hour", 3, history="hour")
    apply_schema(config)
    records = _records()
    store = CassandraStore.connect(config)
    try:
        store.write(records)
        rows = list(
            cassandra_session.execute(
                f"SELECT bucket, shard FROM {keyspace}.changes_by_actor_hour_x3 "
                "WHERE actor_id = 'svc-batch' ALLOW FILTERING"
            )
        )
        assert len(rows) == len(TIMES)
        assert len({row[0] for row in rows}) == 5
        assert {row[1] for row in rows} == {0, 1, 2}
        since, until = TIMES[3], TIMES[21]  # 22:35 to 01:35
        counting = _Counting(store._session)
        store._session = counting
        assert _all_pages(store, since, until) == _newest_first(records, since, until)
        hours = {bucket for bucket, _ in counting.partitions}
        assert hours == {
            to_millis(dt.datetime(2026, 1, 10, 22, tzinfo=dt.UTC)),
            to_millis(dt.datetime(2026, 1, 10, 23, tzinfo=dt.UTC)),
            to_millis(dt.datetime(2026, 1, 11, 0, tzinfo=dt.UTC)),
            to_millis(dt.datetime(2026, 1, 11, 1, tzinfo=dt.UTC)),
        }
        whole = _all_pages(store, T0, TIMES[-1])
        assert whole == _newest_first(records, T0, TIMES[-1])
        assert store.by_actor("alice", since=T0).items[0].actor_id == "alice"
        zero = [r for r in records if r.record_id == "0"]
        history = store.history(zero[0].service, "accounts", "0", limit=100).items
        assert [r.event_id for r in history] == [
            r.event_id for r in sorted(zero, key=lambda r: r.sort_key, reverse=True)
        ]
        assert len({r.event_time.hour for r in history}) > 1
    finally:
        store.close()
    layout = read_layout(cassandra_session, keyspace)
    assert (layout.actor_bucket, layout.actor_shards) == ("hour", 3)


def test_apply_refuses_another_bucketing_and_migrate_rebuilds_the_view(
    cassandra_contact: str, cassandra_session: Session, keyspace: str
) -> None:
    """A keyspace of day partitions (made before schema_info had the actor columns) is
    refused by schema apply --actor-bucket hour; schema migrate copies its rows into the new
    table and records the setting; the old table is kept and never read."""
    day = _config(cassandra_contact, keyspace)
    apply_schema(day)
    for column in ("actor_bucket", "actor_shards"):  # as an older schema apply made it
        cassandra_session.execute(f"ALTER TABLE {keyspace}.schema_info DROP {column}")
    records = _records()
    store = CassandraStore.connect(day)
    try:
        store.write(records)
        before = _all_pages(store, T0, TIMES[-1])
    finally:
        store.close()
    assert before == _newest_first(records, T0, TIMES[-1])
    hourly = _config(cassandra_contact, keyspace, "hour", 2)
    with pytest.raises(ConfigurationError, match="schema migrate"):
        apply_schema(hourly)
    lines: list[str] = []
    result = migrate(hourly, progress=lines.append, page_size=7)
    assert result.copied == len(records)
    assert any("changes_by_actor_hour_x2" in line for line in lines)
    layout = read_layout(cassandra_session, keyspace)
    assert (layout.actor_bucket, layout.actor_shards) == ("hour", 2)
    store = CassandraStore.connect(day)  # the recorded setting wins over the flags
    try:
        assert _all_pages(store, T0, TIMES[-1]) == before
        cassandra_session.execute(f"TRUNCATE {keyspace}.changes_by_actor")
        assert _all_pages(store, T0, TIMES[-1]) == before  # read from the new table
    finally:
        store.close()
    apply_schema(hourly)  # the same setting again: accepted
    assert migrate(hourly, progress=lines.append).already_done
