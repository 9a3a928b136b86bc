"""Consumer fuzzing into a real Cassandra store: a small, fixed (derandomized) set of hostile
mixes through the worker; the same outcomes as with the in-process stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cassandra_support import cassandra_config
from consumer_fuzz import DictFetcher, Sent, mixes, run_mix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sources.memory import MemorySource

if TYPE_CHECKING:
    from cassandra.cluster import Session


@pytest.fixture(scope="module")
def store(cassandra_contact: str, cassandra_session: Session) -> Iterator[CassandraStore]:
    """A Cassandra store on a fresh keyspace for this module."""
    keyspace = f"sqla_audit_fuzz_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace)
    apply_schema(config)
    made = CassandraStore.connect(config)
    try:
        yield made
    finally:
        made.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_worker_survives_hostile_messages_into_cassandra(
    store: CassandraStore, data: st.DataObject
) -> None:
    """Every valid message is acked and stored once in Cassandra, every hostile one is
    rejected with a reason, and the worker never stalls."""
    fetcher = DictFetcher()
    sent: list[Sent] = data.draw(mixes(fetcher))
    source = MemorySource(dlq=True)
    run_mix(sent, source, source.send, store, fetcher)
    assert source.released == []
    assert len(source.dead_letters) == sum(not s.valid for s in sent)
