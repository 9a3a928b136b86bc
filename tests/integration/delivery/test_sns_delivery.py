"""SNSPublisher against the SNS/SQS endpoint: standard and FIFO topics, raw and SNS envelopes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from sqla_audit.events import ChangeEvent, Operation, new_event_id
from sqla_audit.publishers.sns import SNSHttpClient, SNSPublisher, build_publish_client


def make_event(record_id: str, n: int) -> ChangeEvent:
    now = dt.datetime.now(dt.UTC)
    return ChangeEvent(
        event_id=new_event_id(),
        occurred_at=now,
        committed_at=now,
        service="billing",
        table="public.invoices",
        record_id=record_id,
        primary_key={"id": record_id},
        operation=Operation.UPDATE,
        before={"id": record_id, "total": n},
        after={"id": record_id, "total": n + 1},
        changed_columns=["total"],
        transaction_id=uuid.uuid4(),
        sequence=0,
    )


def lean_client_for(endpoint: str) -> SNSHttpClient:
    """The lean HTTP client for the test endpoint (dummy credentials)."""
    import boto3  # noqa: PLC0415

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    client = build_publish_client(endpoint_url=endpoint, region_name="us-east-1", session=session)
    assert isinstance(client, SNSHttpClient)
    return client


@pytest.mark.parametrize("transport", ["lean", "boto3"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "envelope"])
@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_events_arrive_in_the_subscribed_queue(
    sns_to_sqs: Callable[..., tuple[str, str]],
    sns_client_for: Callable[[str], Any],
    aws_endpoint: str,
    queue_reader: Callable[..., Any],
    fifo: bool,
    raw: bool,
    transport: str,
) -> None:
    """Every published event reaches SQS with its body and routing attributes intact."""
    topic_arn, queue_url = sns_to_sqs(fifo=fifo, raw=raw)
    client = lean_client_for(aws_endpoint) if transport == "lean" else sns_client_for(aws_endpoint)
    publisher = SNSPublisher(topic_arn, client=client, register_atexit=False)
    events = [make_event(str(n % 3), n) for n in range(30)]
    try:
        for start in range(0, 30, 4):
            publisher.publish(events[start : start + 4])
        assert publisher.flush(30)
    finally:
        publisher.close()
    received = queue_reader(queue_url, expected=30)
    assert sorted(received.event_ids()) == sorted(str(e.event_id) for e in events)
    by_id = {str(e.event_id): e for e in events}
    per_record: dict[str, list[str]] = defaultdict(list)
    for message in received.messages:
        body = message["Body"]
        if raw:
            event = ChangeEvent.from_json(body)
            attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        else:
            envelope = json.loads(body)
            assert envelope["Type"] == "Notification"
            assert envelope["TopicArn"] == topic_arn
            event = ChangeEvent.from_json(envelope["Message"])
            attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
        assert event == by_id[str(event.event_id)]
        assert attributes == {
            "table": "public.invoices",
            "operation": "update",
            "service": "billing",
        }
        per_record[event.record_id].append(str(event.event_id))
        if fifo:
            assert message["Attributes"]["MessageGroupId"] == f"public.invoices:{event.record_id}"
    if fifo:  # one record's events are consumed in commit order
        for record_id, received_ids in per_record.items():
            assert received_ids == [str(e.event_id) for e in events if e.record_id == record_id]
