"""Helpers shared by the integration tests that run the consumer against real Cassandra.

Every such test needs the same store settings for the one local test node (its datacenter,
``LOCAL_ONE``, protocol v5), parsed from the ``host:port`` contact the fixtures hand out,
and polls the store until the asynchronous worker has written what it should. Keeping these
in one place keeps the modules from drifting apart on a setting.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import pytest

from consumer.config import CassandraConfig, CassandraSchemaConfig, TimeBucket

#: datacenter of the local node (scripts/services and the Cassandra image both use this one)
CASSANDRA_LOCAL_DC = os.environ.get("SQLA_AUDIT_TEST_CASSANDRA_DC", "datacenter1")


def split_contact(contact: str) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)`` (port 9042 when absent)."""
    host, _, port = contact.rpartition(":")
    if not host:
        return contact, 9042
    return host, int(port)


def cassandra_config(
    contact: str,
    keyspace: str,
    *,
    time_bucket: TimeBucket = "none",
    request_timeout: float | None = None,
) -> CassandraConfig:
    """Store settings for the test node at ``contact``, on ``keyspace``.

    ``request_timeout`` is the store's default unless given.
    """
    host, port = split_contact(contact)
    config = CassandraConfig(
        hosts=(host,),
        port=port,
        local_dc=CASSANDRA_LOCAL_DC,
        consistency="LOCAL_ONE",
        protocol_version=5,
        schema=CassandraSchemaConfig(keyspace=keyspace, time_bucket=time_bucket),
    )
    if request_timeout is None:
        return config
    return dataclasses.replace(config, request_timeout=request_timeout)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)
