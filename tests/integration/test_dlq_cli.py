"""``sqla-audit dlq list`` and ``dlq redrive`` against a real SQS endpoint (moto server)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from consumer.cli import main
from consumer.dlq import NO_REASON, DeadLetterQueue
from consumer.sources.sqs import REASON_ATTRIBUTE
from consumer.testing import make_event

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


@pytest.fixture
def queues(sqs_client: SQSClient) -> Iterator[tuple[str, str]]:
    """A fresh (main queue, dead-letter queue) pair, deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    main_url = sqs_client.create_queue(QueueName=f"dlq-cli-main-{suffix}")["QueueUrl"]
    dlq_url = sqs_client.create_queue(QueueName=f"dlq-cli-dlq-{suffix}")["QueueUrl"]
    yield main_url, dlq_url
    for url in (main_url, dlq_url):
        sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def aws_env(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reaches the test endpoint through the usual AWS variables."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def _dead_letter(sqs: SQSClient, url: str, body: str, reason: str | None) -> None:
    extra = (
        {"MessageAttributes": {REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason}}}
        if reason
        else {}
    )
    sqs.send_message(QueueUrl=url, MessageBody=body, **extra)  # type: ignore[arg-type]


def _bodies(sqs: SQSClient, url: str) -> list[str]:
    found: dict[str, str] = {}
    while True:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
        ).get("Messages", [])
        if not got:
            return sorted(found.values())
        found.update((m["MessageId"], m["Body"]) for m in got)


def test_list_shows_reason_receive_count_and_the_changes_held(
    queues: tuple[str, str],
    sqs_client: SQSClient,
    aws_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """dlq list --json names each message's reason and decodes the events it holds."""
    _, dlq = queues
    event = make_event(table="orders", record_id="42")
    _dead_letter(sqs_client, dlq, event.to_json(), "store refused a record: sequence too large")
    _dead_letter(sqs_client, dlq, "not json", None)

    assert main(["dlq", "list", "--dlq-url", dlq, "--json"]) == 0
    listed = {item["reason"]: item for item in json.loads(capsys.readouterr().out)}

    refused = listed["store refused a record: sequence too large"]
    assert refused["events"] == [
        {
            "service": event.service,
            "table": "orders",
            "record_id": "42",
            "event_id": str(event.event_id),
        }
    ]
    assert refused["receive_count"] >= 1
    assert listed[NO_REASON]["events"] == []
    # listing hands every message back: both are still there, visible
    assert len(_bodies(sqs_client, dlq)) == 2


def test_list_of_an_empty_queue_exits_1(
    queues: tuple[str, str], aws_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing in the DLQ is the documented "nothing found" exit status."""
    _, dlq = queues
    assert main(["dlq", "list", "--dlq-url", dlq]) == 1
    assert "0 message(s)" in capsys.readouterr().err


def test_redrive_by_reason_moves_only_the_matching_messages(
    queues: tuple[str, str],
    sqs_client: SQSClient,
    aws_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--reason picks the messages to move; the others stay in the DLQ untouched."""
    main_url, dlq = queues
    store_bodies = [make_event(record_id=str(i)).to_json() for i in range(12)]
    for body in store_bodies:
        _dead_letter(sqs_client, dlq, body, "store unavailable: timeout")
    _dead_letter(sqs_client, dlq, "garbage", "message body is not JSON")

    code = main(["dlq", "redrive", "--dlq-url", dlq, "--queue-url", main_url, "--reason", "STORE"])
    assert code == 0
    assert "moved 12 message(s)" in capsys.readouterr().out
    assert _bodies(sqs_client, main_url) == sorted(store_bodies)
    assert _bodies(sqs_client, dlq) == ["garbage"]


def test_redrive_with_limit_moves_that_many_and_nothing_is_lost(
    queues: tuple[str, str], sqs_client: SQSClient, aws_env: None
) -> None:
    """--limit moves exactly N; every message is on exactly one of the two queues after."""
    main_url, dlq = queues
    bodies = [f"body-{i}" for i in range(5)]
    for body in bodies:
        _dead_letter(sqs_client, dlq, body, "x")
    queue = DeadLetterQueue(sqs_client, dlq)
    result = queue.redrive(main_url, limit=3)
    assert (result.moved, result.failed) == (3, [])
    moved, left = _bodies(sqs_client, main_url), _bodies(sqs_client, dlq)
    assert len(moved) == 3
    assert sorted(moved + left) == sorted(bodies)


def test_redrive_to_a_missing_queue_keeps_every_message(
    queues: tuple[str, str],
    sqs_client: SQSClient,
    aws_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A send that fails leaves the message in the DLQ (send first, delete after): exit 4."""
    main_url, dlq = queues
    _dead_letter(sqs_client, dlq, "keep me", "x")
    missing = main_url.rsplit("/", 1)[0] + "/no-such-queue-" + uuid.uuid4().hex[:8]
    assert main(["dlq", "redrive", "--dlq-url", dlq, "--queue-url", missing]) == 4
    assert "could not move" in capsys.readouterr().err
    assert _bodies(sqs_client, dlq) == ["keep me"]


def test_unreachable_endpoint_is_one_line_and_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A queue endpoint nobody listens on: one error line, exit 3, no traceback."""
    from net_support import free_port  # noqa: PLC0415

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    url = "http://127.0.0.1:1/000000000000/dead"
    assert main(["dlq", "list", "--dlq-url", url]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_missing_credentials_are_configuration_exit_2(
    aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No AWS credentials anywhere: a configuration error (exit 2) naming what to set."""
    import boto3  # noqa: PLC0415

    # boto3's default session keeps the credentials an earlier test resolved: start afresh,
    # as a new process would.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url = aws_endpoint + "/000000000000/whatever"
    assert main(["dlq", "list", "--dlq-url", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "credentials" in err
