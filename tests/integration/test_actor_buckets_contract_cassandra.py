"""The AuditStore contract (tests/store_contract.py) on a real Cassandra node whose by-actor
view is bucketed by week with four shards and whose history is bucketed by hour: the same
answers as the in-memory and SQLite stores."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cassandra_support import cassandra_config
from store_contract import *  # noqa: F403 - the contract's tests run here

from consumer.sinks.base import AuditStore
from consumer.sinks.cassandra import CassandraStore, apply_schema

if TYPE_CHECKING:
    from cassandra.cluster import Session


@pytest.fixture(scope="module")
def store(cassandra_contact: str, cassandra_session: Session) -> Iterator[AuditStore]:
    """A Cassandra store on a fresh keyspace, shared by the module (tests use own names)."""
    keyspace = f"sqla_audit_contract_ab_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace, time_bucket="hour")
    schema = dataclasses.replace(config.schema, actor_bucket="week", actor_shards=4)
    config = dataclasses.replace(config, schema=schema)
    apply_schema(config)
    made = CassandraStore.connect(config)
    try:
        yield made
    finally:
        made.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=180)
