"""A 60-second Cassandra outage under load costs no delivery attempt and loses nothing.

Stopping the shared Cassandra node would disrupt every other test and take minutes to
restart, so the outage is simulated instead: the worker reaches Cassandra through a small
TCP proxy on loopback that this test controls. Closing the proxy drops every connection and
refuses new ones -- to the driver this is exactly a node that went away -- and reopening it
on the same port is the node coming back. Events keep arriving through SNS -> SQS
throughout, and the queue has the redrive policy docs/operations.md recommends
(``maxReceiveCount`` 5 to a dead-letter queue).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from cassandra_support import cassandra_config, split_contact, wait_for
from net_support import SwitchableProxy

from consumer.config import SqsConfig
from consumer.records import AuditRecord
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sources.base import Message
from consumer.sources.sqs import SqsSource
from consumer.testing import make_event
from consumer.worker import Worker

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

OUTAGE_SECONDS = 60
#: events published per second through SNS while the test runs
PUBLISH_RATE = 6
VISIBILITY_SECONDS = 20


@pytest.fixture
def proxy(cassandra_contact: str) -> Iterator[SwitchableProxy]:
    """A running proxy in front of the Cassandra node (stopped at the end)."""
    made = SwitchableProxy(split_contact(cassandra_contact))
    made.start()
    yield made
    made.stop()


class TimedStore:
    """Wraps the store under test and notes when each successful write ended (for timings)."""

    def __init__(self, store: CassandraStore) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.writes: list[tuple[float, int]] = []  # (monotonic end, records written)
        self.event_ids: set[uuid.UUID] = set()

    def write(self, records: Iterable[AuditRecord]) -> None:
        batch = list(records)
        self.store.write(batch)
        with self.lock:
            self.writes.append((time.monotonic(), len(batch)))
            self.event_ids.update(record.event_id for record in batch)

    def wrote(self, expected: set[uuid.UUID]) -> bool:
        with self.lock:
            return self.event_ids >= expected

    def after(self, moment: float) -> list[tuple[float, int]]:
        with self.lock:
            return [write for write in self.writes if write[0] >= moment]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class CountingSqsSource(SqsSource):
    """The SQS source, counting the messages it received."""

    received = 0

    def receive(self, max_messages: int, wait: float) -> list[Message]:
        messages = super().receive(max_messages, wait)
        self.received += len(messages)
        return messages


def with_redrive(sqs_client: SQSClient, queue_url: str, max_receive_count: int) -> str:
    """Give ``queue_url`` a dead-letter queue after ``max_receive_count`` receives; its URL."""
    dlq_url = sqs_client.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    dlq_arn = sqs_client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    sqs_client.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"RedrivePolicy": json.dumps(policy)}
    )
    return dlq_url


def queue_depth(sqs_client: SQSClient, queue_url: str) -> int:
    """Messages visible or in flight in ``queue_url``."""
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


@pytest.mark.slow
def test_cassandra_outage_spends_no_delivery_attempt_and_loses_nothing(
    proxy: SwitchableProxy,
    cassandra_contact: str,
    cassandra_keyspace: str,
    cassandra_session: Session,
    sns_client: SNSClient,
    sqs_client: SQSClient,
    sns_to_sqs: Any,
) -> None:
    """Cassandra unreachable for 60 s while events arrive via SNS -> SQS (redrive after 5
    receives): nothing reaches the DLQ, every event is stored exactly once, and the worker
    receives nothing while the store is down."""
    direct = cassandra_config(cassandra_contact, cassandra_keyspace, request_timeout=2.0)
    apply_schema(direct)
    through_proxy = dataclasses.replace(direct, hosts=("127.0.0.1",), port=proxy.port)
    store = TimedStore(CassandraStore.connect(through_proxy))
    topic_arn, queue_url = sns_to_sqs(raw=True)
    dlq_url = with_redrive(sqs_client, queue_url, 5)
    source = CountingSqsSource(
        SqsConfig(queue_url=queue_url, wait_seconds=1, visibility_timeout=VISIBILITY_SECONDS),
        client=sqs_client,
    )
    worker = Worker(
        source, store, concurrency=4, wait_seconds=1, visibility_timeout=VISIBILITY_SECONDS
    )
    table = f"t_{uuid.uuid4().hex[:8]}"
    sent: list[uuid.UUID] = []
    publishing = threading.Event()
    publishing.set()

    def publish() -> None:
        counter = 0
        while publishing.is_set():
            events = [make_event(table=table, record_id=str(counter + i)) for i in range(10)]
            sns_client.publish_batch(
                TopicArn=topic_arn,
                PublishBatchRequestEntries=[
                    {"Id": str(i), "Message": event.to_json()} for i, event in enumerate(events)
                ],
            )
            sent.extend(event.event_id for event in events)
            counter += 10
            time.sleep(10 / PUBLISH_RATE)

    def stored_rows() -> list[uuid.UUID]:
        rows = cassandra_session.execute(
            f"SELECT table_name, event_id FROM {cassandra_keyspace}.changes_by_service_record"
        )
        return [row.event_id for row in rows if row.table_name == table]

    publisher = threading.Thread(target=publish, daemon=True)
    worker.start()
    publisher.start()
    try:
        wait_for(lambda: len(store.event_ids) >= 20, 60, "events before the outage")
        proxy.stop()
        outage_end = time.monotonic() + OUTAGE_SECONDS
        wait_for(lambda: worker.backoff.active, 30, "the worker to notice the outage")
        time.sleep(5)  # receives already under way when the outage began have returned
        received_during_outage = source.received
        while time.monotonic() < outage_end:
            assert worker.health()["alive"]
            time.sleep(1)
        assert source.received == received_during_outage  # nothing received while down
        assert not worker.health()["ready"]
        oldest = worker.metrics.registry.get_sample_value(
            "sqla_audit_consumer_oldest_in_flight_seconds"
        )
        assert oldest is not None
        assert oldest >= VISIBILITY_SECONDS  # held past a visibility timeout, kept invisible
        backlog_at_return = len(sent) - len(store.event_ids)
        proxy.start()
        returned = time.monotonic()
        wait_for(lambda: store.after(returned), 60, "the first write after the outage")
        first_write = store.after(returned)[0][0] - returned
        time.sleep(3)
        publishing.clear()
        publisher.join(10)
        expected = set(sent)
        wait_for(lambda: store.wrote(expected), 180, "every event sent")
        caught_up = max(end for end, _ in store.after(returned)) - returned
        written_after = sum(count for _, count in store.after(returned))
        print(
            f"\noutage {OUTAGE_SECONDS}s, backlog at return {backlog_at_return} events; "
            f"first write {first_write:.2f}s after the store returned; caught up in "
            f"{caught_up:.1f}s: {written_after / caught_up:.0f} events/s"
        )
        rows = stored_rows()
        assert len(rows) == len(expected)  # stored exactly once
        assert set(rows) == expected
        wait_for(lambda: worker.health()["ready"], 30, "the worker to report ready")
        wait_for(lambda: queue_depth(sqs_client, queue_url) == 0, 60, "an empty queue")
        assert queue_depth(sqs_client, dlq_url) == 0
        assert (
            sqs_client.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=0).get("Messages", [])
            == []
        )
    finally:
        publishing.clear()
        worker.stop()
        assert worker.join(30)
        store.close()
        sqs_client.delete_queue(QueueUrl=dlq_url)
