"""Large events: a 1 MiB row update travels through S3 and is diffed correctly by the consumer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.decoding import Decoder
from consumer.differ import record_for_event
from consumer.sources.sqs import S3PayloadFetcher
from sqla_audit import install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent
from sqla_audit.offload_pointer import PAYLOAD_SIZE_ATTRIBUTE, is_pointer, parse_pointer
from sqla_audit.publishers.offload import S3Offloader
from sqla_audit.publishers.sns import SNSPublisher

MIB = 1024 * 1024


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    title: Mapped[str]
    body: Mapped[str] = mapped_column(sa.Text)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "envelope"])
def test_one_mib_update_goes_through_s3(
    sns_to_sqs: Callable[..., tuple[str, str]],
    sns_client_for: Callable[[str], Any],
    s3_client: Any,
    s3_bucket: str,
    aws_endpoint: str,
    queue_reader: Callable[..., Any],
    tmp_path: Path,
    raw: bool,
) -> None:
    """The big event is an S3 pointer on the queue, the small one is inline; both decode."""
    topic_arn, queue_url = sns_to_sqs(raw=raw)
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'docs.db'}")
    Base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    publisher = SNSPublisher(
        topic_arn,
        client=sns_client_for(aws_endpoint),
        offloader=S3Offloader(s3_bucket, client=s3_client, key_prefix="events/"),
        register_atexit=False,
    )
    install_audit(maker, publisher=publisher, service="docs")
    old_body, new_body = "a" * MIB, "b" * (MIB - 1) + "c"
    try:
        with maker.begin() as session:
            session.add(Document(id=1, title="spec", body=old_body))
        with maker.begin() as session:
            session.get_one(Document, 1).body = new_body
        with maker.begin() as session:
            session.add(Document(id=2, title="note", body="short"))  # small: stays inline
        assert publisher.flush(60)
        assert publisher.stats().delivered == 3
    finally:
        uninstall_audit(maker)
        publisher.close()
        engine.dispose()

    messages = queue_reader(queue_url, expected=3).messages
    assert len(messages) == 3
    decoder = Decoder(S3PayloadFetcher(s3_client))
    pointers = 0
    events: list[ChangeEvent] = []
    for message in messages:
        body = message["Body"]
        if raw:
            payload = body
            attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        else:
            envelope = json.loads(body)
            payload = envelope["Message"]
            attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
        assert len(body.encode()) < 256 * 1024
        if is_pointer(payload):
            pointers += 1
            bucket, key = parse_pointer(payload)
            assert bucket == s3_bucket
            assert key.startswith("events/")
            stored = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert int(attributes[PAYLOAD_SIZE_ATTRIBUTE]) == len(stored)
            assert ChangeEvent.from_json(stored).table == "documents"
        assert attributes["table"] == "documents"
        events.extend(decoder.decode(body))
    assert pointers == 2  # the insert and the update of document 1 carry a 1 MiB column
    update = next(
        e for e in events if e.operation.value == "update" and "body" in e.changed_columns
    )
    record = record_for_event(update)
    assert record is not None
    assert set(record.changes) == {"body"}
    assert record.changes["body"].old == old_body
    assert record.changes["body"].new == new_body
    small = next(e for e in events if e.record_id == "2")
    assert small.after is not None
    assert small.after["body"] == "short"
