"""Signed events end to end: application -> SNS (S3 offload) -> SQS -> consumer -> Cassandra,
with forged messages sent straight to the queue and keys rotated."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from cassandra_support import cassandra_config, wait_for
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.config import SqsConfig
from consumer.decoding import Decoder
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sources.sqs import REASON_ATTRIBUTE, S3PayloadFetcher, SqsSource
from consumer.testing import make_event
from consumer.verification import EventVerifier
from consumer.verify import StoreVerifier
from consumer.worker import Worker
from sqla_audit import install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.offload import S3Offloader
from sqla_audit.publishers.sns import SNSPublisher
from sqla_audit.signing import EventSigner, Keyring

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

KEY_OLD = b"old-key-for-the-rotation-test-32b"
KEY_NEW = b"new-key-for-the-rotation-test-32b"


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "signed_documents"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    title: Mapped[str]
    body: Mapped[str] = mapped_column(sa.Text)


@pytest.fixture(scope="module")
def store(cassandra_contact: str, cassandra_keyspace: str) -> Iterator[CassandraStore]:
    config = cassandra_config(cassandra_contact, cassandra_keyspace, request_timeout=5.0)
    apply_schema(config)
    made = CassandraStore.connect(config)
    yield made
    made.close()


@pytest.fixture
def dlq(sqs_client: SQSClient) -> Iterator[str]:
    url = sqs_client.create_queue(QueueName=f"sqla-audit-dlq-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


@contextlib.contextmanager
def running(
    queue_url: str, dlq_url: str, store: CassandraStore, verifier: EventVerifier, clients: Any
) -> Iterator[Worker]:
    sqs_client, s3_client = clients
    source = SqsSource(
        SqsConfig(queue_url=queue_url, dlq_url=dlq_url, wait_seconds=1, visibility_timeout=30),
        client=sqs_client,
    )
    decoder = Decoder(S3PayloadFetcher(s3_client), verifier=verifier)
    worker = Worker(source, store, decoder=decoder, concurrency=2, wait_seconds=1, max_backoff=2)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        assert worker.join(30)


def stored_ids(session: Session, keyspace: str, *services: str) -> set[uuid.UUID]:
    """Event ids stored for ``signed_documents`` by ``services`` (a scan: a test keyspace)."""
    rows = session.execute(
        f"SELECT service, table_name, event_id FROM {keyspace}.changes_by_service_record"
    )
    return {
        row.event_id
        for row in rows
        if row.table_name == "signed_documents" and row.service in services
    }


def dead_letters(sqs_client: SQSClient, dlq_url: str, expected: int) -> list[Any]:
    """The DLQ's messages, received until ``expected`` arrived (or 60 s passed)."""
    found: list[Any] = []
    deadline = time.monotonic() + 60
    while len(found) < expected and time.monotonic() < deadline:
        found += sqs_client.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        ).get("Messages", [])
    return found


def send(sqs_client: SQSClient, queue_url: str, bodies: list[str]) -> None:
    for body in bodies:
        sqs_client.send_message(QueueUrl=queue_url, MessageBody=body)


def capture(
    tmp_path: Path,
    publisher: SNSPublisher,
    signer: EventSigner,
    table_suffix: str,
    *,
    size: int = 150_000,
) -> None:
    """Two transactions through an audited application: a document of ``size`` two-byte
    characters (300 KB: offloaded to S3) with a small one, then an update."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / f'app-{table_suffix}.db'}")
    Base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    install_audit(maker, publisher=publisher, service=f"docs-{table_suffix}", signing=signer)
    try:
        with maker.begin() as session:
            session.add(Document(id=1, title="spec", body="é" * size))
            session.add(Document(id=2, title="note", body="short"))
        with maker.begin() as session:
            session.get_one(Document, 2).title = "note v2"
        assert publisher.flush(60)
    finally:
        uninstall_audit(maker)
        engine.dispose()


def test_forged_messages_are_dead_lettered_while_signed_events_are_stored(
    tmp_path: Path,
    sns_to_sqs: Any,
    sns_client: SNSClient,
    sqs_client: SQSClient,
    s3_client: S3Client,
    dlq: str,
    store: CassandraStore,
    cassandra_session: Session,
    cassandra_keyspace: str,
) -> None:
    """Under ``require``: signed events published through SNS (one offloaded to S3) are
    stored with their seals and verify; an unsigned event, a genuine event with its actor
    changed and an event signed with an unknown key, all sent straight to the queue in the
    same batch, go to the DLQ with a ``signature:`` reason."""
    topic_arn, queue_url = sns_to_sqs(raw=False)
    bucket = f"sqla-audit-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    ring = Keyring(signing_key_id="k1", keys={"k1": KEY_NEW})
    publisher = SNSPublisher(
        topic_arn,
        client=sns_client,
        offloader=S3Offloader(bucket, client=s3_client, key_prefix="events/"),
        register_atexit=False,
    )
    try:
        capture(tmp_path, publisher, EventSigner(ring), "a")
    finally:
        publisher.close()
    genuine = make_event(table="signed_documents", record_id="99", committed_at=None)
    signed = EventSigner(ring).sign([_counted(genuine)])[0]
    tampered = json.loads(signed.to_json())
    tampered["actor"]["id"] = "mallory"
    stranger = EventSigner(Keyring(signing_key_id="k9", keys={"k9": KEY_OLD})).sign(
        [_counted(make_event(table="signed_documents", record_id="98"))]
    )[0]
    forged = [
        make_event(table="signed_documents").to_json(),
        json.dumps(tampered),
        stranger.to_json(),
    ]
    send(sqs_client, queue_url, forged)
    verifier = EventVerifier("require", Keyring(signing_key_id=None, keys={"k1": KEY_NEW}))
    with running(queue_url, dlq, store, verifier, (sqs_client, s3_client)):
        wait_for(
            lambda: len(stored_ids(cassandra_session, cassandra_keyspace, "docs-a")) == 3,
            60,
            "the three signed events",
        )
        dead = dead_letters(sqs_client, dlq, 3)
    assert sorted(m["Body"] for m in dead) == sorted(forged)
    reasons = [m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in dead]
    assert all(reason.startswith("signature:") for reason in reasons), reasons
    assert any("unsigned" in reason for reason in reasons)
    assert any("does not match" in reason for reason in reasons)
    assert any("unknown signing key 'k9'" in reason for reason in reasons)
    report = StoreVerifier(store, Keyring(signing_key_id=None, keys={"k1": KEY_NEW})).table(
        "docs-a", "signed_documents", since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    assert report.ok, report.findings
    assert report.valid == 3
    assert report.transactions == 2


def _counted(event: ChangeEvent) -> ChangeEvent:
    """``event`` as the only event of its transaction (the count a signer needs)."""
    return dataclasses.replace(event, transaction_event_count=1)


def test_key_rotation_end_to_end(
    tmp_path: Path,
    sns_to_sqs: Any,
    sns_client: SNSClient,
    sqs_client: SQSClient,
    s3_client: S3Client,
    dlq: str,
    store: CassandraStore,
    cassandra_session: Session,
    cassandra_keyspace: str,
) -> None:
    """The producer's key source switches from the old key to the new one while the
    consumer knows both: everything is stored. Once the old key is retired from the
    consumer, an event still signed with it (a late or replayed message) is dead-lettered
    and new-key events keep being stored."""
    topic_arn, queue_url = sns_to_sqs(raw=True)
    current = [Keyring(signing_key_id="2026-01", keys={"2026-01": KEY_OLD})]
    signer = EventSigner(lambda: current[0], refresh_seconds=0.05)
    publisher = SNSPublisher(topic_arn, client=sns_client, register_atexit=False)
    overlap = EventVerifier(
        "require", Keyring(signing_key_id=None, keys={"2026-01": KEY_OLD, "2026-02": KEY_NEW})
    )
    try:
        capture(tmp_path, publisher, signer, "old", size=10)
        current[0] = Keyring(
            signing_key_id="2026-02", keys={"2026-02": KEY_NEW, "2026-01": KEY_OLD}
        )
        time.sleep(0.1)  # past refresh_seconds: the signer asks its source again
        capture(tmp_path, publisher, signer, "new", size=10)
    finally:
        publisher.close()
    with running(queue_url, dlq, store, overlap, (sqs_client, s3_client)):
        wait_for(
            lambda: (
                len(stored_ids(cassandra_session, cassandra_keyspace, "docs-old", "docs-new")) == 6
            ),
            60,
            "three events of each key",
        )
    old = stored_ids(cassandra_session, cassandra_keyspace, "docs-old")
    new = stored_ids(cassandra_session, cassandra_keyspace, "docs-new")
    assert {seal.key_id for seal in store.seals(old).values()} == {"2026-01"}
    assert {seal.key_id for seal in store.seals(new).values()} == {"2026-02"}
    late = EventSigner(Keyring(signing_key_id="2026-01", keys={"2026-01": KEY_OLD})).sign(
        [_counted(make_event(table="signed_documents", record_id="late"))]
    )[0]
    fresh = EventSigner(Keyring(signing_key_id="2026-02", keys={"2026-02": KEY_NEW})).sign(
        [_counted(make_event(table="signed_documents", record_id="fresh"))]
    )[0]
    send(sqs_client, queue_url, [late.to_json(), fresh.to_json()])
    retired = EventVerifier("require", Keyring(signing_key_id=None, keys={"2026-02": KEY_NEW}))
    with running(queue_url, dlq, store, retired, (sqs_client, s3_client)):
        wait_for(
            lambda: fresh.event_id in stored_ids(cassandra_session, cassandra_keyspace, "billing"),
            60,
            "the new-key event",
        )
        dead = dead_letters(sqs_client, dlq, 1)
    assert [m["Body"] for m in dead] == [late.to_json()]
    assert (
        "unknown signing key '2026-01'"
        in (dead[0]["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"])
    )
    assert late.event_id not in stored_ids(cassandra_session, cassandra_keyspace, "billing")
