"""``sqla-audit relay`` as a process: relays rows as they are committed, stops on SIGTERM."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from consumer.cli import main
from sqla_audit.events import ChangeEvent, Operation, new_event_id
from sqla_audit.outbox import OutboxWriter, outbox_counts, outbox_table

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parents[3]


def events(count: int) -> list[ChangeEvent]:
    now = dt.datetime.now(dt.UTC)
    transaction_id = uuid.uuid4()
    return [
        ChangeEvent(
            event_id=new_event_id(),
            occurred_at=now,
            committed_at=now,
            service="cli",
            table="things",
            record_id=str(n),
            primary_key={"id": n},
            operation=Operation.DELETE,
            before={"id": n},
            after=None,
            changed_columns=[],
            transaction_id=transaction_id,
            sequence=n,
        )
        for n in range(count)
    ]


@pytest.fixture(params=["postgres", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL whose outbox table was made by ``outbox create-table``."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(url)
    outbox_table().drop(engine, checkfirst=True)
    engine.dispose()
    assert main(["outbox", "create-table", "--db", url]) == 0
    return url


def test_relay_process_publishes_then_stops_on_sigterm(
    db_url: str, private_aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows committed while the relay runs reach the queue; SIGTERM ends it with status 0."""
    topic_arn, queue_url = private_aws.topic_with_queue()
    reader = private_aws.reader(queue_url)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SQLA_AUDIT_DB_URL": db_url,
        "SQLA_AUDIT_TOPIC_ARN": topic_arn,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumer.cli",
            "relay",
            "--endpoint-url",
            private_aws.endpoint,
            "--region",
            "us-east-1",
            "--poll-interval",
            "0.1",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        engine = sa.create_engine(db_url)
        sent = events(30)
        for start in range(0, 30, 10):
            with engine.begin() as connection:
                OutboxWriter().write(connection, sent[start : start + 10])
        received = reader.wait(expected=30, timeout=60)
        deadline = time.monotonic() + 30
        while outbox_counts(engine)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert outbox_counts(engine) == (0, 0)
        engine.dispose()
    finally:
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=30)
    assert relay.returncode == 0, stderr
    assert "relay stopped" in stderr
    assert sorted(received.event_ids()) == sorted(str(e.event_id) for e in sent)
