"""The consumer on an SQS queue and Cassandra, for the integration tests.

Its environment (``consumer_env``), a ``python -m consumer`` subprocess (``consumer_process``)
and its graceful stop, and the checks the tests share: sending raw bodies to a queue, whether
a queue is empty, the event ids stored for a table.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cassandra_support import CASSANDRA_LOCAL_DC, split_contact

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from mypy_boto3_sqs import SQSClient


def consumer_env(
    aws_endpoint: str, queue_url: str, cassandra_contact: str, keyspace: str, **extra: str
) -> dict[str, str]:
    """The environment of a consumer on ``queue_url`` writing into ``keyspace`` (JSON logs,
    concurrency 2), without the caller's other ``SQLA_AUDIT_``/``AWS_`` settings; ``extra``
    variables come last."""
    host, port = split_contact(cassandra_contact)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SQLA_AUDIT_", "AWS_"))
    }
    env.update(
        {
            "AWS_ENDPOINT_URL": aws_endpoint,
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "SQLA_AUDIT_QUEUE_URL": queue_url,
            "SQLA_AUDIT_CASSANDRA_HOSTS": host,
            "SQLA_AUDIT_CASSANDRA_PORT": str(port),
            "SQLA_AUDIT_LOCAL_DC": CASSANDRA_LOCAL_DC,
            "SQLA_AUDIT_KEYSPACE": keyspace,
            "SQLA_AUDIT_CONSISTENCY": "LOCAL_ONE",
            "SQLA_AUDIT_PROTOCOL_VERSION": "5",
            "SQLA_AUDIT_WAIT_SECONDS": "1",
            "SQLA_AUDIT_METRICS_PORT": "0",
            "SQLA_AUDIT_CONCURRENCY": "2",
            "SQLA_AUDIT_LOG_FORMAT": "json",
            **extra,
        }
    )
    return env


@contextlib.contextmanager
def consumer_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m consumer`` with ``env``; killed at the end if still running."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer"], env=env, stdout=log, stderr=log
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def stop_gracefully(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code (within 60 s)."""
    process.send_signal(signal.SIGTERM)
    return process.wait(60)


def send_bodies(sqs_client: SQSClient, queue_url: str, bodies: list[str]) -> None:
    """Send ``bodies`` to the queue as they are, ten to a batch."""
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        response = sqs_client.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
        )
        assert not response.get("Failed")


def queue_is_empty(sqs_client: SQSClient, queue_url: str) -> bool:
    """No message visible or in flight on the queue."""
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        attributes["ApproximateNumberOfMessages"] == "0"
        and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def event_ids(session: Session, keyspace: str, table: str) -> list[uuid.UUID]:
    """Every event id stored for ``table``, duplicates included (a scan: test keyspaces are
    small)."""
    rows = session.execute(f"SELECT table_name, event_id FROM {keyspace}.changes_by_service_record")
    return [row.event_id for row in rows if row.table_name == table]
