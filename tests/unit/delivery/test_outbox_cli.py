"""``sqla-audit outbox ...`` and ``sqla-audit relay`` on SQLite (SNS mocked in process)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws

from consumer.cli import main
from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import OutboxWriter, outbox_counts, outbox_table

EventFactory = Callable[..., ChangeEvent]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """URL of an empty SQLite file."""
    return f"sqlite+pysqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process AWS mock with dummy credentials and no endpoint override."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SQLA_AUDIT_DB_URL", "SQLA_AUDIT_TOPIC_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


def test_create_table_is_idempotent(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """create-table creates the table, and running it again is fine."""
    assert main(["outbox", "create-table", "--db", db_url]) == 0
    assert main(["outbox", "create-table", "--db", db_url]) == 0
    assert "is ready" in capsys.readouterr().out
    engine = sa.create_engine(db_url)
    assert sa.inspect(engine).has_table("sqla_audit_outbox")
    engine.dispose()


def test_create_table_can_print_its_ddl(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--sql prints the CREATE TABLE for the URL's dialect without touching the database."""
    url = "postgresql+psycopg://u:p@127.0.0.1:1/none"
    assert (
        main(["outbox", "create-table", "--db", url, "--outbox-table", "events_out", "--sql"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("CREATE TABLE events_out (")
    assert "BIGSERIAL" in out
    assert out.rstrip().endswith(";")


def test_postgres_ddl_stores_payloads_uncompressed(capsys: pytest.CaptureFixture[str]) -> None:
    """On PostgreSQL the DDL ends with SET STORAGE EXTERNAL for payload (no pglz on write)."""
    url = "postgresql+psycopg://u:p@127.0.0.1:1/none"
    assert main(["outbox", "create-table", "--db", url, "--schema", "audit", "--sql"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == (
        "ALTER TABLE audit.sqla_audit_outbox ALTER COLUMN payload SET STORAGE EXTERNAL;"
    )
    assert "layout SMALLINT DEFAULT '1' NOT NULL" in "\n".join(lines)


def test_database_url_may_come_from_the_environment(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLA_AUDIT_DB_URL stands in for --db (so passwords stay off the command line)."""
    monkeypatch.setenv("SQLA_AUDIT_DB_URL", db_url)
    assert main(["outbox", "create-table"]) == 0
    assert main(["outbox", "status"]) == 0
    assert "pending 0" in capsys.readouterr().out


def test_missing_or_bad_url_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a URL, or with a malformed one, the command fails with a readable message."""
    monkeypatch.delenv("SQLA_AUDIT_DB_URL", raising=False)
    assert main(["outbox", "status"]) == 2
    assert "--db or SQLA_AUDIT_DB_URL" in capsys.readouterr().err
    assert main(["outbox", "status", "--db", "nonsense"]) == 2
    assert "invalid database URL" in capsys.readouterr().err


def test_database_errors_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A SQLite database that does not exist gives exit status 2 and is not created."""
    url = f"sqlite+pysqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    assert main(["outbox", "status", "--db", url]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_status_and_requeue(
    db_url: str, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """status counts pending and parked rows; requeue makes parked rows pending."""
    assert main(["outbox", "create-table", "--db", db_url]) == 0
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        OutboxWriter(layout=1).write(connection, [event_factory(), event_factory()])
        table = outbox_table()
        connection.execute(
            sa.update(table).where(table.c.id == 1).values(failed_at=sa.func.now(), last_error="x")
        )
    capsys.readouterr()
    assert main(["outbox", "status", "--db", db_url]) == 0
    assert capsys.readouterr().out.split()[:4] == ["pending", "1", "parked", "1"]
    assert main(["outbox", "requeue", "--db", db_url]) == 0
    assert "requeued 1" in capsys.readouterr().out
    assert outbox_counts(engine) == (2, 0)
    engine.dispose()


def test_relay_once_publishes_and_empties_the_outbox(
    aws: None, db_url: str, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """relay --once sends pending rows to the topic (seen in a subscribed queue) and exits 0."""
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="audit")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="audit")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    assert main(["outbox", "create-table", "--db", db_url]) == 0
    engine = sa.create_engine(db_url)
    events = [event_factory(sequence=i) for i in range(3)]
    with engine.begin() as connection:
        OutboxWriter().write(connection, events)
    capsys.readouterr()
    assert main(["relay", "--db", db_url, "--topic-arn", topic, "--once"]) == 0
    assert "published 3" in capsys.readouterr().out
    assert outbox_counts(engine) == (0, 0)
    engine.dispose()
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(json.loads(m["Body"])["event_id"] for m in received) == sorted(
        str(e.event_id) for e in events
    )


def test_relay_once_reports_rows_left_behind(
    aws: None, db_url: str, event_factory: EventFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the topic does not exist the rows stay and relay --once exits 3."""
    assert main(["outbox", "create-table", "--db", db_url]) == 0
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        OutboxWriter().write(connection, [event_factory()])
    missing = "arn:aws:sns:us-east-1:123456789012:missing"
    assert main(["relay", "--db", db_url, "--topic-arn", missing, "--once"]) == 3
    assert "left 1" in capsys.readouterr().out
    assert outbox_counts(engine) == (1, 0)
    engine.dispose()


def test_relay_needs_a_topic(aws: None, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --topic-arn or SQLA_AUDIT_TOPIC_ARN the relay refuses to start."""
    assert main(["relay", "--db", db_url, "--once"]) == 2
    assert "SQLA_AUDIT_TOPIC_ARN" in capsys.readouterr().err
    assert main(["relay", "--db", db_url, "--topic-arn", "nope", "--once"]) == 2
    assert main(["relay", "--db", db_url, "--topic-arn", "arn:x", "--batch-size", "0"]) == 2
