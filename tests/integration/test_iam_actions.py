"""The AWS calls each component really makes -- recorded at the client while the publisher,
the relay, the consumer and the dlq command run against the SNS/SQS/S3 endpoint -- are all
allowed by that component's policy in docs/iam (tests/unit/test_iam_policies.py checks the
other direction: a policy allows nothing the code does not call)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from botocore.client import BaseClient

from consumer.cli import main
from consumer.testing import make_event
from sqla_audit.events import Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table
from sqla_audit.publishers.offload import S3Offloader
from sqla_audit.publishers.sns_http import SNSHttpClient
from sqla_audit.publishers.sns_publisher import SNSPublisher
from tests.integration.conftest import SnsToSqs, unique_name

IAM = Path(__file__).resolve().parents[2] / "docs" / "iam"
REGION = "us-east-1"

#: Batch operations are authorized as their single-message action.
BATCH_ACTIONS = {
    "PublishBatch": "sns:Publish",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "SendMessageBatch": "sqs:SendMessage",
}


class Recorder:
    """The (service, operation) pairs called since the last :meth:`take`."""

    def __init__(self) -> None:
        self.calls: set[tuple[str, str]] = set()

    def take(self) -> set[str]:
        """The IAM actions of the calls recorded so far; starts a new recording."""
        actions = {BATCH_ACTIONS.get(op, f"{service}:{op}") for service, op in self.calls}
        self.calls = set()
        return actions


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Every boto3 client call, and the lean SNS client's PublishBatch, is recorded."""
    recorder = Recorder()
    make_call: Callable[..., Any] = BaseClient._make_api_call
    lean_publish: Callable[..., Any] = SNSHttpClient.publish_batch

    def record_call(self: BaseClient, operation: str, params: Any) -> Any:
        recorder.calls.add((self.meta.service_model.service_name, operation))
        return make_call(self, operation, params)

    def record_lean(self: SNSHttpClient, *args: Any, **kwargs: Any) -> Any:
        recorder.calls.add(("sns", "PublishBatch"))
        return lean_publish(self, *args, **kwargs)

    monkeypatch.setattr(BaseClient, "_make_api_call", record_call)
    monkeypatch.setattr(SNSHttpClient, "publish_batch", record_lean)
    return recorder


def allowed(component: str) -> set[str]:
    policy = json.loads((IAM / f"{component}.json").read_text(encoding="utf-8"))
    out: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        out.update([actions] if isinstance(actions, str) else actions)
    return out


@pytest.fixture
def bucket(s3_client: Any) -> Iterator[str]:
    name = unique_name("sqla-audit").replace("_", "-")
    s3_client.create_bucket(Bucket=name)
    yield name
    for item in s3_client.list_objects_v2(Bucket=name).get("Contents", []):
        s3_client.delete_object(Bucket=name, Key=item["Key"])
    s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def dlq(sqs_client: Any) -> Iterator[str]:
    url: str = sqs_client.create_queue(QueueName=unique_name("sqla-audit-dlq"))["QueueUrl"]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def _big_event() -> Any:
    """An event above SNS's 256 KiB: it is offloaded to S3."""
    return make_event(
        operation=Operation.INSERT, record_id="big", after={"id": "big", "blob": "x" * 300_000}
    )


def test_each_component_calls_only_what_its_policy_allows(
    recorder: Recorder,
    sns_to_sqs: SnsToSqs,
    sqs_client: Any,
    bucket: str,
    dlq: str,
    aws_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Publisher, relay, consumer and dlq command each stay within their IAM policy."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    topic, queue = sns_to_sqs(raw=True)
    recorder.take()  # the fixtures' set-up calls are not a component's

    publisher = SNSPublisher(
        topic,
        endpoint_url=aws_endpoint,
        region_name=REGION,
        offloader=S3Offloader(bucket, endpoint_url=aws_endpoint, region_name=REGION),
        spool=tmp_path / "spool",
        register_atexit=False,
    )
    publisher.publish([make_event(operation=Operation.INSERT, record_id="small"), _big_event()])
    publisher.close()
    application = recorder.take()
    assert {"sns:Publish", "s3:PutObject"} <= application
    assert application <= allowed("application")

    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(db_url)
    create_outbox_table(engine)
    with engine.begin() as connection:
        OutboxWriter().write(connection, [make_event(record_id="outbox"), _big_event()])
    engine.dispose()
    recorder.take()
    relay_argv = ["relay", "--once", "--db", db_url, "--topic-arn", topic]
    relay_argv += ["--endpoint-url", aws_endpoint, "--region", REGION, "--s3-bucket", bucket]
    assert main(relay_argv) == 0
    relay = recorder.take()
    assert {"sns:Publish", "s3:PutObject"} <= relay
    assert relay <= allowed("relay")

    sqs_client.send_message(QueueUrl=queue, MessageBody="not an event")
    recorder.take()
    consume = ["consume", "--queue-url", queue, "--dlq-url", dlq, "--endpoint-url", aws_endpoint]
    consume += ["--wait-seconds", "1", "--store", "sqlite", "--store-url", str(tmp_path / "a.db")]
    consume += ["--metrics-port", "0", "--until-empty"]
    assert main(consume) == 0
    consumer = recorder.take()
    expected = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "s3:GetObject"}
    assert expected <= consumer
    assert consumer <= allowed("consumer")

    assert main(["dlq", "list", "--dlq-url", dlq, "--endpoint-url", aws_endpoint]) == 0
    redrive = ["dlq", "redrive", "--dlq-url", dlq, "--queue-url", queue]
    assert main([*redrive, "--endpoint-url", aws_endpoint]) == 0
    operator = recorder.take()
    assert {"sqs:ReceiveMessage", "sqs:SendMessage", "sqs:DeleteMessage"} <= operator
    assert operator <= allowed("consumer")
