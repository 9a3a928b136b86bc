"""The AuditStore contract (tests/store_contract.py) on a real Cassandra node, with and
without a history time bucket, with one and with three timeline shards: the same answers as
the in-memory and SQLite stores."""

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


@pytest.fixture(scope="module", params=["none", "month"])
def store(
    request: pytest.FixtureRequest, cassandra_contact: str, cassandra_session: Session
) -> Iterator[AuditStore]:
    """A Cassandra store on a fresh keyspace, shared by the module (tests use own names)."""
    keyspace = f"sqla_audit_contract_{request.param}_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace, time_bucket=request.param)
    if request.param == "month":  # the bucketed keyspace also shards its timeline
        config = dataclasses.replace(
            config, schema=dataclasses.replace(config.schema, timeline_shards=3)
        )
    apply_schema(config)
    made = CassandraStore.connect(config)
    try:
        yield made
    finally:
        made.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
