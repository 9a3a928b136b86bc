"""Operator commands against the real services: parked-row admin on SQLite, PostgreSQL and
MariaDB, a real SQS queue drained with --until-empty, relay --once parking on real SNS, and
real Cassandra behind a stopped proxy (unreachable: exit 3, one line)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from consumer.cli import main
from consumer.testing import make_event
from sqla_audit.events import Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table
from tests.integration.conftest import SnsToSqs
from tests.net_support import SwitchableProxy


@pytest.fixture
def outbox(db_engine: Engine) -> Iterator[Engine]:
    """An empty outbox table on each database, with four parked rows among five."""
    table = outbox_table()
    table.drop(db_engine, checkfirst=True)
    create_outbox_table(db_engine)
    events = [make_event(operation=Operation.INSERT, record_id=str(i)) for i in range(5)]
    with db_engine.begin() as connection:
        OutboxWriter(layout=1).write(connection, events)  # one row per event
        ids = connection.execute(sa.select(table.c.id).order_by(table.c.id)).scalars().all()
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        new = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        for row_id, error, when in zip(
            ids[:4],
            ["SNSRejectedError: InvalidParameter", "undecodable payload", "KMS.Disabled", "50%_x"],
            [old, old, new, new],
            strict=True,
        ):
            connection.execute(
                sa.update(table)
                .where(table.c.id == row_id)
                .values(failed_at=when, last_error=error)
            )
    yield db_engine
    table.drop(db_engine, checkfirst=True)


def _parked(engine: Engine) -> list[str]:
    table = outbox_table()
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(table.c.last_error)
                .where(table.c.failed_at.is_not(None))
                .order_by(table.c.id)
            ).scalars()
        )


def test_status_json_and_filtered_requeue(
    outbox: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """status --json shows each parked row's error; requeue --error (case-insensitive, LIKE
    wildcards taken literally) and --older-than choose the same rows on every database."""
    assert main(["outbox", "status", "--db", db_url, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["pending"], document["parked"]) == (1, 4)
    assert [row["last_error"] for row in document["parked_rows"]] == _parked(outbox)
    assert all(row["parked_at"].endswith("Z") for row in document["parked_rows"])

    assert main(["outbox", "requeue", "--db", db_url, "--error", "%_X"]) == 0
    assert _parked(outbox) == [
        "SNSRejectedError: InvalidParameter",
        "undecodable payload",
        "KMS.Disabled",
    ]
    assert main(["outbox", "requeue", "--db", db_url, "--error", "kms", "--older-than", "1h"]) == 1
    assert main(["outbox", "requeue", "--db", db_url, "--older-than", "1d"]) == 0
    assert _parked(outbox) == ["KMS.Disabled"]
    assert outbox_counts(outbox) == (4, 1)


def test_consume_until_empty_drains_a_real_queue(
    sns_to_sqs: SnsToSqs, aws_endpoint: str, tmp_path: Path
) -> None:
    """consume --until-empty reads every message of a real SQS queue and exits 0."""
    import boto3  # noqa: PLC0415

    _topic, queue_url = sns_to_sqs(raw=True)
    sqs = boto3.client(
        "sqs",
        endpoint_url=aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for i in range(12):
        body = make_event(operation=Operation.INSERT, record_id=str(i)).to_json()
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SQLA_AUDIT_")},
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer",
            "--queue-url",
            queue_url,
            "--endpoint-url",
            aws_endpoint,
            "--wait-seconds",
            "1",
            "--store",
            "sqlite",
            "--store-url",
            str(tmp_path / "audit.db"),
            "--metrics-port",
            "0",
            "--until-empty",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"drained {queue_url}: received 12 message(s): stored 12"), (
        done.stdout
    )


@pytest.fixture
def stopped_cassandra(cassandra_contact: str) -> Iterator[SwitchableProxy]:
    """A stopped proxy in front of the real Cassandra node: connections are refused."""
    host, _, port = cassandra_contact.partition(":")
    proxy = SwitchableProxy((host, int(port or 9042)))
    yield proxy
    proxy.stop()


@pytest.mark.parametrize(
    "argv",
    [["history", "users", "1"], ["schema", "apply"], ["as-of", "users", "1", "--at", "now"]],
)
def test_unreachable_cassandra_exits_3_with_one_line(
    stopped_cassandra: SwitchableProxy, argv: list[str]
) -> None:
    """Cassandra unreachable: exit 3, one sqla-audit line, no driver logs or traceback."""
    argv = [
        *argv,
        "--cassandra-hosts",
        "127.0.0.1",
        "--cassandra-port",
        str(stopped_cassandra.port),
    ]
    if argv[0] == "as-of":
        argv[argv.index("now")] = "2026-01-01T00:00:00Z"
    done = subprocess.run(
        [sys.executable, "-m", "consumer.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sqla-audit: ")
    assert "cassandra" in lines[0].lower()
