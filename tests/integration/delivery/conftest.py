"""Helpers for the delivery integration tests: a private moto server, a switchable proxy.

Private moto server. The fault-injection tests move thousands of messages; on the shared
test endpoint, which every other integration test uses at the same time, that takes minutes.
``private_aws`` starts a moto server of our own on a free loopback port for this folder
(moto ships with the test dependencies), so these tests measure our code, not the load of
the shared server. Tests using it carry the ``aws`` marker like the others.

Stopping "the SNS endpoint" is done with a small TCP proxy in front of moto rather than by
stopping moto itself: moto keeps its topics, queues and messages in memory, so a restarted
server would have lost the queue that must receive the events (and events published before
the subscription is re-created would vanish). The proxy (``net_support.SwitchableProxy``)
refuses and drops connections when stopped and listens again on the same port when started,
while the queue behind it keeps its state.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from net_support import SwitchableProxy, free_port, upstream_of


@dataclass
class PrivateAWS:
    """A moto server of this test folder, with clients and a topic+queue factory."""

    endpoint: str
    sns: Any
    sqs: Any
    s3: Any

    def topic_with_queue(self, *, fifo: bool = False, raw: bool = False) -> tuple[str, str]:
        """A new topic and a queue subscribed to it: ``(topic_arn, queue_url)``."""
        name = f"sqla-audit-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        attributes = {"FifoTopic": "true"} if fifo else {}
        topic_arn = self.sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
        queue_attributes = {"FifoQueue": "true"} if fifo else {}
        queue_url = self.sqs.create_queue(QueueName=name, Attributes=queue_attributes)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true" if raw else "false"},
        )
        return topic_arn, queue_url

    def read(self, queue_url: str, expected: int, timeout: float = 120.0) -> Received:
        return read_queue(self.sqs, queue_url, expected, timeout)

    def reader(self, queue_url: str) -> BackgroundReader:
        """Start receiving from the queue in a thread (moto slows down as a queue grows, so
        the heavy tests keep their queue short by reading while they publish)."""
        reader = BackgroundReader(self.sqs, queue_url)
        reader.start()
        return reader


class BackgroundReader(threading.Thread):
    """Receives and deletes messages until stopped; ``wait`` collects the result."""

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        super().__init__(daemon=True)
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._received = Received()
        self.error: BaseException | None = None

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._received.messages)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                batch = receive_batch(self._sqs, self._queue_url)
                with self._lock:
                    self._received.messages.extend(batch)
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def wait(self, expected: int, timeout: float = 120.0, settle: float = 1.0) -> Received:
        """Stop once ``expected`` messages arrived and none came for ``settle`` seconds."""
        deadline = time.monotonic() + timeout
        while self.count < expected and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.05)
        seen = self.count
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:  # late duplicates would show up here
            time.sleep(0.05)
            if self.count != seen:
                seen, quiet_until = self.count, time.monotonic() + settle
        self._stop_event.set()
        self.join(10)
        if self.error is not None:
            raise self.error
        with self._lock:
            return Received(list(self._received.messages))


@pytest.fixture(scope="session")
def private_aws() -> Iterator[PrivateAWS]:
    """A moto server on a free loopback port for this folder's tests (stopped at the end)."""
    import boto3  # noqa: PLC0415

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the private moto server did not start on port {port}")
                time.sleep(0.1)
        clients = [boto3.client(name, **aws_kwargs(endpoint)) for name in ("sns", "sqs", "s3")]
        yield PrivateAWS(endpoint, *clients)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def sns_proxy(private_aws: PrivateAWS) -> Iterator[SwitchableProxy]:
    """A running switchable proxy in front of the private moto server (stopped at the end)."""
    proxy = SwitchableProxy(upstream_of(private_aws.endpoint))
    proxy.start()
    yield proxy
    proxy.stop()


@dataclass
class Received:
    """Messages read from a queue: SQS bodies, attributes, message attributes."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bodies(self) -> list[str]:
        return [m["Body"] for m in self.messages]

    def events(self) -> list[dict[str, Any]]:
        """Each message's event object, unwrapping the SNS envelope when there is one."""
        return [json.loads(unwrap(body)) for body in self.bodies]

    def event_ids(self) -> list[str]:
        return [str(e["event_id"]) for e in self.events()]


def unwrap(body: str) -> str:
    """The SNS ``Message`` of a non-raw delivery, or the body itself for raw delivery."""
    data = json.loads(body)
    if isinstance(data, dict) and data.get("Type") == "Notification":
        return str(data["Message"])
    return body


def receive_batch(sqs_client: Any, queue_url: str) -> list[dict[str, Any]]:
    """One long-poll receive (up to 10 messages, 1 s wait); what it got is deleted."""
    response = sqs_client.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    batch: list[dict[str, Any]] = response.get("Messages", [])
    if batch:
        sqs_client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)
            ],
        )
    return batch


def read_queue(
    sqs_client: Any, queue_url: str, expected: int, timeout: float = 60.0, settle: float = 1.0
) -> Received:
    """Receive (and delete) messages until ``expected`` arrived and nothing more comes for
    ``settle`` seconds, or ``timeout`` passed."""
    received = Received()
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        batch = receive_batch(sqs_client, queue_url)
        if batch:
            received.messages.extend(batch)
            quiet_since = None
            continue
        if len(received.messages) >= expected:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                break
    return received


@pytest.fixture
def queue_reader(sqs_client: Any) -> Callable[..., Received]:
    """``queue_reader(queue_url, expected, timeout=60)`` -> Received."""

    def read(queue_url: str, expected: int, timeout: float = 60.0) -> Received:
        return read_queue(sqs_client, queue_url, expected, timeout)

    return read


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh S3 bucket, emptied and deleted after the test."""
    name = f"sqla-audit-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    listing = s3_client.list_objects_v2(Bucket=name).get("Contents", [])
    for item in listing:
        s3_client.delete_object(Bucket=name, Key=item["Key"])
    s3_client.delete_bucket(Bucket=name)


def aws_kwargs(endpoint: str) -> dict[str, Any]:
    """Client settings for the test endpoint (dummy credentials, never a real account)."""
    return {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


@pytest.fixture
def sns_client_for() -> Callable[[str], Any]:
    """``sns_client_for(endpoint)`` -> an SNS client with low botocore retries."""
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    def make(endpoint: str) -> Any:
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        )
        return boto3.client("sns", config=config, **aws_kwargs(endpoint))

    return make
