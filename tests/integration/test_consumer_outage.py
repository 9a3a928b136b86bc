"""The worker rides out a 30-second Cassandra outage without losing events or exiting.

Stopping the shared Cassandra node would disrupt every other test and take minutes to
restart, so the outage is simulated instead: the worker reaches Cassandra through a small
TCP proxy on loopback that this test controls. Closing the proxy drops every connection and
refuses new ones -- to the driver this is exactly a node that went away -- and reopening it
on the same port is the node coming back. Events keep arriving on the queue throughout.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from cassandra_support import cassandra_config, split_contact, wait_for
from net_support import SwitchableProxy

from consumer.config import SqsConfig
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sources.sqs import SqsSource
from consumer.testing import make_event
from consumer.worker import Worker

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from mypy_boto3_sqs import SQSClient

OUTAGE_SECONDS = 30


@pytest.fixture
def proxy(cassandra_contact: str) -> Iterator[SwitchableProxy]:
    """A running proxy in front of the Cassandra node (stopped at the end)."""
    made = SwitchableProxy(split_contact(cassandra_contact))
    made.start()
    yield made
    made.stop()


@pytest.mark.slow
def test_cassandra_outage_loses_nothing_and_worker_never_exits(
    proxy: SwitchableProxy,
    cassandra_contact: str,
    cassandra_keyspace: str,
    cassandra_session: Session,
    sqs_client: SQSClient,
    sns_to_sqs: Any,
) -> None:
    """Cassandra unreachable for 30 s while events arrive: all are written after it returns."""
    direct = cassandra_config(cassandra_contact, cassandra_keyspace, request_timeout=2.0)
    apply_schema(direct)
    through_proxy = dataclasses.replace(direct, hosts=("127.0.0.1",), port=proxy.port)
    store = CassandraStore.connect(through_proxy)
    _, queue_url = sns_to_sqs(raw=True)
    source = SqsSource(
        SqsConfig(queue_url=queue_url, wait_seconds=1, visibility_timeout=20), client=sqs_client
    )
    worker = Worker(source, store, concurrency=2, wait_seconds=1, max_backoff=2.0)
    table = f"t_{uuid.uuid4().hex[:8]}"
    sent: list[uuid.UUID] = []
    publishing = threading.Event()
    publishing.set()

    def publish() -> None:
        counter = 0
        while publishing.is_set():
            event = make_event(table=table, record_id=str(counter))
            sqs_client.send_message(QueueUrl=queue_url, MessageBody=event.to_json())
            sent.append(event.event_id)
            counter += 1
            time.sleep(0.25)

    def stored() -> set[uuid.UUID]:
        rows = cassandra_session.execute(
            f"SELECT table_name, event_id FROM {cassandra_keyspace}.changes_by_record"
        )
        return {row.event_id for row in rows if row.table_name == table}

    publisher = threading.Thread(target=publish, daemon=True)
    worker.start()
    publisher.start()
    try:
        wait_for(lambda: len(stored()) >= 3, 60, "events before the outage")
        proxy.stop()
        outage_end = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_end:
            assert worker.health()["alive"]
            time.sleep(1)
        failures = worker.metrics.registry.get_sample_value(
            "sqla_audit_consumer_failures_total", {"kind": "store"}
        )
        assert failures is not None
        assert failures > 0
        assert not worker.health()["ready"]
        proxy.start()
        time.sleep(3)
        publishing.clear()
        publisher.join(10)
        expected = set(sent)
        wait_for(lambda: stored() >= expected, 120, "every event sent")
        assert stored() == expected
        assert worker.health()["alive"]
        wait_for(lambda: worker.health()["ready"], 30, "the worker to report ready")
    finally:
        publishing.clear()
        worker.stop()
        assert worker.join(30)
        store.close()
