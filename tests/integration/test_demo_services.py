"""``sqla-audit demo`` against the real services: SNS -> SQS (moto) and Cassandra."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cassandra_support import CASSANDRA_LOCAL_DC, cassandra_config, split_contact
from demo_support import EXPECTED, SHARED_RECORDS, stored, stored_request

from consumer.cli import main
from consumer.sinks.cassandra import CassandraStore


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials for boto3's default chain: the endpoint is the local moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("SQLA_AUDIT_TOPIC_ARN", "SQLA_AUDIT_QUEUE_URL", "SQLA_AUDIT_CASSANDRA_HOSTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cassandra_store(cassandra_contact: str, cassandra_keyspace: str) -> Iterator[CassandraStore]:
    store = CassandraStore.connect(cassandra_config(cassandra_contact, cassandra_keyspace))
    yield store
    store.close()


def cassandra_args(contact: str, keyspace: str) -> list[str]:
    host, port = split_contact(contact)
    return [
        "--cassandra-hosts",
        host,
        "--cassandra-port",
        str(port),
        "--keyspace",
        keyspace,
        "--local-dc",
        CASSANDRA_LOCAL_DC,
        "--consistency",
        "LOCAL_ONE",
        "--protocol-version",
        "5",
    ]


@pytest.mark.usefixtures("aws_credentials")
@pytest.mark.parametrize("raw", [False, True], ids=["sns-envelope", "raw-delivery"])
def test_demo_on_sns_sqs_and_cassandra_with_flags(
    raw: bool,
    tmp_path: Path,
    aws_endpoint: str,
    sns_to_sqs: Callable[..., tuple[str, str]],
    cassandra_contact: str,
    cassandra_keyspace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With flags naming SNS/SQS and Cassandra, the same scenario passes its check there."""
    topic_arn, queue_url = sns_to_sqs(raw=raw)
    code = main(
        [
            "demo",
            "--workdir",
            str(tmp_path),
            "--topic-arn",
            topic_arn,
            "--queue-url",
            queue_url,
            "--endpoint-url",
            aws_endpoint,
            "--region",
            "us-east-1",
            *cassandra_args(cassandra_contact, cassandra_keyspace),
        ]
    )
    output = capsys.readouterr().out
    assert code == 0, output
    assert f"SNS topic {topic_arn}" in output
    assert f"keyspace {cassandra_keyspace}" in output
    assert "the SQS queue" in output
    assert "Check passed" in output


@pytest.mark.usefixtures("aws_credentials")
def test_demo_on_services_named_by_the_environment(
    tmp_path: Path,
    aws_endpoint: str,
    sns_to_sqs: Callable[..., tuple[str, str]],
    cassandra_contact: str,
    cassandra_keyspace: str,
    cassandra_store: CassandraStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The consumer's environment variables alone select SNS/SQS and Cassandra; the records
    in Cassandra carry the scenario's actors, and nothing of the rolled-back request."""
    topic_arn, queue_url = sns_to_sqs()
    host, port = split_contact(cassandra_contact)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("SQLA_AUDIT_TOPIC_ARN", topic_arn)
    monkeypatch.setenv("SQLA_AUDIT_QUEUE_URL", queue_url)
    monkeypatch.setenv("SQLA_AUDIT_CASSANDRA_HOSTS", host)
    monkeypatch.setenv("SQLA_AUDIT_CASSANDRA_PORT", str(port))
    monkeypatch.setenv("SQLA_AUDIT_KEYSPACE", cassandra_keyspace)
    monkeypatch.setenv("SQLA_AUDIT_LOCAL_DC", CASSANDRA_LOCAL_DC)
    monkeypatch.setenv("SQLA_AUDIT_CONSISTENCY", "LOCAL_ONE")
    monkeypatch.setenv("SQLA_AUDIT_PROTOCOL_VERSION", "5")
    started = dt.datetime.now(dt.UTC)
    code = main(["demo", "--workdir", str(tmp_path)])
    output = capsys.readouterr().out
    assert code == 0, output
    assert stored(cassandra_store, started) == EXPECTED
    view = stored_request(cassandra_store, started)
    assert view[0] == ("billing", "invoices", "1", "insert")
    assert sorted(key[:3] for key in view) == sorted(SHARED_RECORDS)
    assert "The request view of demo-req-003" in output
