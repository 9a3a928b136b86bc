"""Test doubles for the delivery tests: a scriptable SNS client, an S3 client, event factory.

The SNS double answers ``publish_batch`` like the real service (``Successful`` / ``Failed``
per entry) and can be told to be unreachable, to fail whole calls with a given error code,
or to fail given entries a number of times. No network is involved. A test module that sets
``SNS_PATHS = BOTH_SNS_PATHS`` runs each test using ``fake_sns`` twice: with the double
passed as the client, and with the double reached through the lean HTTP client
(``sns_wire_double``). :func:`publishers` makes ``SNSPublisher`` instances and closes them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from sqla_audit.events import ChangeEvent, Operation, new_event_id
from sqla_audit.offload_pointer import is_pointer, parse_pointer
from sqla_audit.publishers.sns import SNSPublisher
from sqla_audit.retry import RetryPolicy

TOPIC = "arn:aws:sns:us-east-1:123456789012:audit"
FIFO_TOPIC = "arn:aws:sns:us-east-1:123456789012:audit.fifo"
#: Outage retries that never give up and pause at most 20 ms.
FAST_OUTAGE = RetryPolicy(max_attempts=10**9, base_delay=0.001, max_delay=0.02)
#: The two ways the publisher reaches the SNS double (``sns_wire_double.sns_double``).
BOTH_SNS_PATHS = ("client", "lean")

EventFactory = Callable[..., ChangeEvent]


def client_error(code: str, status: int = 400, operation: str = "PublishBatch") -> ClientError:
    """A botocore ClientError as a service would produce it."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (test)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },  # type: ignore[typeddict-item]
        operation,
    )


class FakeSNS:
    """In-memory ``publish_batch`` with fault injection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[list[dict[str, Any]]] = []
        self.accepted: list[dict[str, Any]] = []
        self.down = False
        self.call_errors: deque[BaseException] = deque()
        #: event id -> list of (code, sender_fault) to answer on successive attempts
        self.entry_failures: dict[str, list[tuple[str, bool]]] = {}
        self.on_call: Callable[[list[dict[str, Any]]], None] | None = None

    @staticmethod
    def event_id_of(entry: dict[str, Any]) -> str:
        body = entry["Message"]
        if is_pointer(body):
            return parse_pointer(body)[1].rsplit("/", 1)[-1].removesuffix(".json")
        return str(json.loads(body)["event_id"])

    def publish_batch(
        self, *, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        entries = PublishBatchRequestEntries
        with self.lock:
            self.calls.append(entries)
        if self.on_call is not None:
            self.on_call(entries)
        if self.down:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        if self.call_errors:
            raise self.call_errors.popleft()
        assert 1 <= len(entries) <= 10
        assert len({e["Id"] for e in entries}) == len(entries)
        successful, failed = [], []
        for entry in entries:
            plan = self.entry_failures.get(self.event_id_of(entry))
            if plan:
                code, sender_fault = plan.pop(0)
                failed.append(
                    {
                        "Id": entry["Id"],
                        "Code": code,
                        "SenderFault": sender_fault,
                        "Message": "test",
                    }
                )
                continue
            successful.append({"Id": entry["Id"], "MessageId": str(uuid.uuid4())})
            with self.lock:
                self.accepted.append(entry)
        return {"Successful": successful, "Failed": failed}

    @property
    def accepted_ids(self) -> list[str]:
        """Event ids in the order SNS accepted them."""
        with self.lock:
            return [self.event_id_of(e) for e in self.accepted]


class FakeS3:
    """``put_object`` into a dict; can be made to fail."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.fail: BaseException | None = None

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.objects[(Bucket, Key)] = Body
        return {}


def make_event(
    *,
    table: str = "users",
    record_id: str = "1",
    operation: Operation = Operation.UPDATE,
    padding: int = 0,
    sequence: int = 0,
    transaction_id: uuid.UUID | None = None,
) -> ChangeEvent:
    """A valid change event; ``padding`` adds that many characters to a column value."""
    now = dt.datetime.now(dt.UTC)
    before = {"id": record_id, "name": "old"} if operation is not Operation.INSERT else None
    after = (
        {"id": record_id, "name": "new" + "x" * padding}
        if operation is not Operation.DELETE
        else None
    )
    return ChangeEvent(
        event_id=new_event_id(),
        occurred_at=now,
        committed_at=now,
        service="billing",
        table=table,
        record_id=record_id,
        primary_key={"id": record_id},
        operation=operation,
        before=before,
        after=after,
        changed_columns=["name"],
        transaction_id=transaction_id or uuid.uuid4(),
        sequence=sequence,
    )


@pytest.fixture
def fake_sns(request: pytest.FixtureRequest) -> FakeSNS:
    """A fresh scriptable SNS client double (reached by the path of the test's parameter,
    where its module sets ``SNS_PATHS``)."""
    path = getattr(request, "param", None)
    if path is None:
        return FakeSNS()
    from tests.unit.delivery.sns_wire_double import sns_double  # noqa: PLC0415 -- imports us

    return sns_double(path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test using ``fake_sns`` in a module with ``SNS_PATHS`` runs once per path."""
    paths = getattr(metafunc.module, "SNS_PATHS", None)
    if paths and "fake_sns" in metafunc.fixturenames:
        metafunc.parametrize("fake_sns", paths, indirect=True)


@contextlib.contextmanager
def publishers(**defaults: Any) -> Iterator[Callable[..., SNSPublisher]]:
    """``make(topic=TOPIC, **settings)`` -> an ``SNSPublisher`` with ``defaults`` under
    ``settings`` (not registered at exit); every publisher made is closed at the end."""
    made: list[SNSPublisher] = []

    def make(topic: str = TOPIC, **settings: Any) -> SNSPublisher:
        publisher = SNSPublisher(topic, **({"register_atexit": False} | defaults | settings))
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close(timeout=0.5)


@pytest.fixture
def fake_s3() -> FakeS3:
    """A fresh S3 client double."""
    return FakeS3()


@pytest.fixture
def event_factory() -> Callable[..., ChangeEvent]:
    """``event_factory(table=..., record_id=..., padding=...)`` -> ChangeEvent."""
    return make_event


@pytest.fixture
def make_client_error() -> Callable[..., ClientError]:
    """``make_client_error(code, status=400)`` -> botocore ClientError."""
    return client_error
