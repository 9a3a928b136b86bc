"""The consumer end to end on the SNS/SQS/S3 endpoint and real Cassandra.

Events are published as ChangeEvent JSON (to SNS, or straight to SQS when the test is about
the consumer alone); the worker runs in-process, or as ``python -m consumer`` subprocesses
for the crash and multi-process tests.
"""

from __future__ import annotations

import contextlib
import json
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cassandra_support import cassandra_config, wait_for
from net_support import free_port
from sqs_consumer_support import (
    consumer_env,
    consumer_process,
    event_ids,
    queue_is_empty,
    send_bodies,
    stop_gracefully,
)

from consumer.config import SqsConfig
from consumer.decoding import Decoder
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sinks.sqlite import SQLiteStore
from consumer.sources.sqs import REASON_ATTRIBUTE, S3PayloadFetcher, SqsSource
from consumer.testing import make_event
from consumer.worker import Worker
from sqla_audit.events import Actor, ChangeEvent, Operation
from sqla_audit.offload_pointer import make_pointer

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def keyspace(cassandra_contact: str, cassandra_keyspace: str) -> str:
    """This module's keyspace with the audit tables applied."""
    apply_schema(cassandra_config(cassandra_contact, cassandra_keyspace, request_timeout=5.0))
    return cassandra_keyspace


@pytest.fixture(scope="module")
def store(cassandra_contact: str, keyspace: str) -> Iterator[CassandraStore]:
    made = CassandraStore.connect(
        cassandra_config(cassandra_contact, keyspace, request_timeout=5.0)
    )
    yield made
    made.close()


@contextlib.contextmanager
def running(
    queue_url: str,
    store: CassandraStore,
    sqs_client: SQSClient,
    s3_client: S3Client,
    *,
    dlq_url: str | None = None,
    **worker_options: Any,
) -> Iterator[Worker]:
    """An in-process worker on ``queue_url`` for the duration of the block."""
    source = SqsSource(
        SqsConfig(queue_url=queue_url, dlq_url=dlq_url, wait_seconds=1, visibility_timeout=30),
        client=sqs_client,
    )
    options: dict[str, Any] = {"concurrency": 2, "wait_seconds": 1, "max_backoff": 2.0}
    options.update(worker_options)
    worker = Worker(source, store, decoder=Decoder(S3PayloadFetcher(s3_client)), **options)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        assert worker.join(30)


def rows_for(
    session: Session, keyspace: str, table: str, record_id: str, service: str = "billing"
) -> list[Any]:
    """The history rows of one record (``consumer.testing.make_event``'s service by default)."""
    return list(
        session.execute(
            f"SELECT * FROM {keyspace}.changes_by_service_record "
            "WHERE service = %s AND table_name = %s AND record_id = %s",
            (service, table, record_id),
        )
    )


def lifecycle(table: str, record_id: str) -> list[ChangeEvent]:
    """Insert, two updates and a delete of one row, in one transaction each."""
    base = {"id": record_id, "owner": "alice", "balance": 10, "doc": {"tags": ["a"]}}
    second = {**base, "balance": 20}
    third = {**second, "owner": "bob", "doc": {"tags": ["a", "b"]}}
    actor = Actor("alice", {"role": "clerk"})
    return [
        make_event(
            table=table, record_id=record_id, operation=Operation.INSERT, after=base, actor=actor
        ),
        make_event(table=table, record_id=record_id, before=base, after=second, actor=actor),
        make_event(table=table, record_id=record_id, before=second, after=third, actor="bob"),
        make_event(
            table=table,
            record_id=record_id,
            operation=Operation.DELETE,
            before=third,
            actor="carol",
        ),
    ]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("raw", [False, True], ids=["sns-envelope", "raw-delivery"])
def test_sns_to_sqs_to_cassandra(
    raw: bool,
    sns_to_sqs: Any,
    sns_client: SNSClient,
    sqs_client: SQSClient,
    s3_client: S3Client,
    store: CassandraStore,
    cassandra_session: Session,
    keyspace: str,
) -> None:
    """Events published to SNS land in Cassandra with their changes, actor and transaction."""
    topic_arn, queue_url = sns_to_sqs(raw=raw)
    record_id = uuid.uuid4().hex
    events = lifecycle("accounts", record_id)
    for event in events:
        sns_client.publish(TopicArn=topic_arn, Message=event.to_json())
    with running(queue_url, store, sqs_client, s3_client):
        wait_for(
            lambda: len(rows_for(cassandra_session, keyspace, "accounts", record_id)) == 4,
            60,
            "four rows",
        )
        wait_for(lambda: queue_is_empty(sqs_client, queue_url), 30, "an empty queue")
    rows = rows_for(cassandra_session, keyspace, "accounts", record_id)
    # stored newest first; events were committed in order
    assert [r.event_id for r in rows] == [e.event_id for e in reversed(events)]
    assert [r.operation for r in rows] == ["delete", "update", "update", "insert"]
    assert [r.actor_id for r in rows] == ["carol", "bob", "alice", "alice"]
    assert [r.transaction_id for r in rows] == [e.transaction_id for e in reversed(events)]
    insert, first_update, second_update = rows[3], rows[2], rows[1]
    assert json.loads(insert.changes)["balance"] == {"old": None, "new": 10}
    assert json.loads(insert.actor_attributes) == {"role": "clerk"}
    assert json.loads(first_update.changes) == {"balance": {"old": 10, "new": 20}}
    changes = json.loads(second_update.changes)
    assert set(changes) == {"owner", "doc"}
    assert changes["doc"]["detail"] == [
        {"kind": "added", "path": ["tags", 1], "old": None, "new": "b"}
    ]
    assert json.loads(rows[0].changes)["owner"] == {"old": "bob", "new": None}
    assert rows[0].after is None


def test_s3_offloaded_event_is_resolved(
    sns_to_sqs: Any,
    sns_client: SNSClient,
    sqs_client: SQSClient,
    s3_client: S3Client,
    store: CassandraStore,
    cassandra_session: Session,
    keyspace: str,
) -> None:
    """A payload-offloading pointer is fetched from S3 and its event written."""
    topic_arn, queue_url = sns_to_sqs(raw=False)
    bucket = f"sqla-audit-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    record_id = uuid.uuid4().hex
    big = make_event(record_id=record_id, after={"id": record_id, "blob": "x" * 300_000})
    s3_client.put_object(Bucket=bucket, Key="events/1.json", Body=big.to_json().encode())
    sns_client.publish(TopicArn=topic_arn, Message=make_pointer(bucket, "events/1.json"))
    with running(queue_url, store, sqs_client, s3_client):
        wait_for(
            lambda: len(rows_for(cassandra_session, keyspace, "accounts", record_id)) == 1,
            60,
            "the offloaded event",
        )
    row = rows_for(cassandra_session, keyspace, "accounts", record_id)[0]
    assert row.event_id == big.event_id
    assert len(json.loads(row.after)["blob"]) == 300_000


def test_duplicate_delivery_leaves_one_row(
    sqs_client: SQSClient,
    s3_client: S3Client,
    sns_to_sqs: Any,
    store: CassandraStore,
    cassandra_session: Session,
    keyspace: str,
) -> None:
    """The same message delivered twice leaves exactly one row, and both are deleted."""
    _, queue_url = sns_to_sqs(raw=True)
    record_id = uuid.uuid4().hex
    body = make_event(record_id=record_id).to_json()
    send_bodies(sqs_client, queue_url, [body, body])
    with running(queue_url, store, sqs_client, s3_client) as worker:
        wait_for(lambda: queue_is_empty(sqs_client, queue_url), 60, "an empty queue")
        acked = worker.metrics.registry.get_sample_value(
            "sqla_audit_consumer_messages_total", {"outcome": "acked"}
        )
        assert acked == 2
    assert len(rows_for(cassandra_session, keyspace, "accounts", record_id)) == 1


POISON = [
    "not json at all",
    json.dumps({**make_event().to_dict(), "schema_version": 2}),
    json.dumps({k: v for k, v in make_event().to_dict().items() if k != "record_id"}),
    json.dumps(
        {
            "Type": "Notification",
            "MessageId": "x",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:someone-else",
            "Message": "order shipped",
        }
    ),
]


def test_poison_messages_go_to_the_dlq_and_never_block(
    sqs_client: SQSClient,
    s3_client: S3Client,
    sns_to_sqs: Any,
    store: CassandraStore,
    cassandra_session: Session,
    keyspace: str,
) -> None:
    """Poison messages are moved to the DLQ with a reason; valid ones are all written."""
    _, queue_url = sns_to_sqs(raw=True)
    dlq_url = sqs_client.create_queue(QueueName=f"sqla-audit-dlq-{uuid.uuid4().hex[:12]}")[
        "QueueUrl"
    ]
    table = f"t_{uuid.uuid4().hex[:8]}"
    valid = [make_event(table=table, record_id=str(i)) for i in range(12)]
    bodies = [valid[0].to_json(), *POISON, *(e.to_json() for e in valid[1:])]
    send_bodies(sqs_client, queue_url, bodies)
    try:
        with running(queue_url, store, sqs_client, s3_client, dlq_url=dlq_url):
            wait_for(
                lambda: len(event_ids(cassandra_session, keyspace, table)) == 12,
                60,
                "the valid events",
            )
            wait_for(lambda: queue_is_empty(sqs_client, queue_url), 30, "an empty queue")
        dead: list[Any] = []
        for _ in range(5):
            dead += sqs_client.receive_message(
                QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if len(dead) >= len(POISON):
                break
        assert sorted(m["Body"] for m in dead) == sorted(POISON)
        assert all(REASON_ATTRIBUTE in m["MessageAttributes"] for m in dead)
    finally:
        sqs_client.delete_queue(QueueUrl=dlq_url)


# --------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_two_consumer_processes_write_every_event_once(
    sqs_client: SQSClient,
    sns_to_sqs: Any,
    aws_endpoint: str,
    cassandra_contact: str,
    cassandra_session: Session,
    keyspace: str,
    tmp_path: Path,
) -> None:
    """Two consumers on one queue: every event has exactly one row, both exit 0 on SIGTERM."""
    _, queue_url = sns_to_sqs(raw=True)
    table = f"t_{uuid.uuid4().hex[:8]}"
    events = [make_event(table=table, record_id=str(i)) for i in range(200)]
    env = consumer_env(aws_endpoint, queue_url, cassandra_contact, keyspace)
    with (
        consumer_process(env, tmp_path / "a.log") as first,
        consumer_process(env, tmp_path / "b.log") as second,
    ):
        send_bodies(sqs_client, queue_url, [e.to_json() for e in events])
        wait_for(
            lambda: len(event_ids(cassandra_session, keyspace, table)) >= 200, 120, "200 events"
        )
        wait_for(lambda: queue_is_empty(sqs_client, queue_url), 60, "an empty queue")
        assert stop_gracefully(first) == 0
        assert stop_gracefully(second) == 0
    stored = event_ids(cassandra_session, keyspace, table)
    assert len(stored) == 200
    assert set(stored) == {e.event_id for e in events}
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert logs.count('"message": "worker stopped"') == 2


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_loses_and_duplicates_nothing(
    sqs_client: SQSClient,
    sns_to_sqs: Any,
    aws_endpoint: str,
    cassandra_contact: str,
    cassandra_session: Session,
    keyspace: str,
    tmp_path: Path,
) -> None:
    """A consumer killed with SIGKILL mid-stream and restarted leaves one row per event."""
    _, queue_url = sns_to_sqs(raw=True)
    table = f"t_{uuid.uuid4().hex[:8]}"
    events = [make_event(table=table, record_id=str(i)) for i in range(400)]
    send_bodies(sqs_client, queue_url, [e.to_json() for e in events])
    env = consumer_env(
        aws_endpoint,
        queue_url,
        cassandra_contact,
        keyspace,
        SQLA_AUDIT_VISIBILITY_TIMEOUT="5",
        SQLA_AUDIT_CONCURRENCY="1",
    )
    with consumer_process(env, tmp_path / "first.log") as first:
        wait_for(
            lambda: len(event_ids(cassandra_session, keyspace, table)) > 0, 60, "the first rows"
        )
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    written_before_restart = len(event_ids(cassandra_session, keyspace, table))
    with consumer_process(env, tmp_path / "second.log") as second:
        wait_for(
            lambda: len(event_ids(cassandra_session, keyspace, table)) >= 400, 180, "all 400 events"
        )
        wait_for(lambda: queue_is_empty(sqs_client, queue_url), 60, "an empty queue")
        assert stop_gracefully(second) == 0
    stored = event_ids(cassandra_session, keyspace, table)
    assert len(stored) == 400, f"{written_before_restart} were written before the kill"
    assert set(stored) == {e.event_id for e in events}


def test_consume_command_with_embedded_store_serves_health_and_metrics(
    sqs_client: SQSClient, sns_to_sqs: Any, aws_endpoint: str, tmp_path: Path
) -> None:
    """`sqla-audit consume --store sqlite` writes the file store, serves health, exits 0."""
    _, queue_url = sns_to_sqs(raw=True)
    events = [make_event(record_id=str(i)) for i in range(3)]
    send_bodies(sqs_client, queue_url, [e.to_json() for e in events])
    port = free_port()
    database = tmp_path / "audit.db"
    env = consumer_env(
        aws_endpoint,
        queue_url,
        "127.0.0.1:9",  # never contacted: the store is SQLite
        "unused",
        SQLA_AUDIT_STORE="sqlite",
        SQLA_AUDIT_STORE_URL=str(database),
        SQLA_AUDIT_METRICS_PORT=str(port),
    )

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def written() -> float:
        for line in get("/metrics")[1].splitlines():
            if line.startswith("sqla_audit_consumer_events_written_total "):
                return float(line.split()[1])
        return 0.0

    with consumer_process(env, tmp_path / "consume.log") as process:
        wait_for(lambda: written() == 3, 60, "three events written")
        assert get("/healthz")[0] == 200
        assert get("/readyz")[0] == 200
        assert stop_gracefully(process) == 0
    store = SQLiteStore(database)
    try:
        stored = [
            r for e in events for r in store.history("billing", "accounts", e.record_id).items
        ]
    finally:
        store.close()
    assert sorted(r.event_id for r in stored) == sorted(e.event_id for e in events)
