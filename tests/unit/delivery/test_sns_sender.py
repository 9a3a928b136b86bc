"""The synchronous SNS publishing core: batching, attributes, FIFO ids, retries, offload."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ParamValidationError

from sqla_audit.errors import ConfigurationError, DecodeError, PermanentError, TransportError
from sqla_audit.events import ChangeEvent
from sqla_audit.limits import SNS_MAX_BATCH_ENTRIES, SNS_MAX_PAYLOAD_BYTES
from sqla_audit.offload_pointer import PAYLOAD_SIZE_ATTRIBUTE, parse_pointer
from sqla_audit.publishers.offload import PayloadTooLargeError, S3Offloader
from sqla_audit.publishers.sns import (
    OutgoingMessage,
    SNSRejectedError,
    SNSSender,
    build_sns_client,
    fifo_id,
    message_attributes,
)
from sqla_audit.retry import RetryPolicy
from tests.unit.delivery.conftest import BOTH_SNS_PATHS, FIFO_TOPIC, TOPIC, EventFactory

SNS_PATHS = BOTH_SNS_PATHS


class SleepLog:
    """Records requested pauses instead of sleeping."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.delays: list[float] = []
        self.stop_after = stop_after

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        return self.stop_after is not None and len(self.delays) >= self.stop_after


def messages(factory: EventFactory, count: int, **kwargs: Any) -> list[OutgoingMessage]:
    return [OutgoingMessage.from_event(factory(record_id=str(i), **kwargs)) for i in range(count)]


def sender(client: Any, topic: str = TOPIC, **kwargs: Any) -> SNSSender:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05))
    return SNSSender(topic, client=client, **kwargs)


def test_batches_hold_at_most_ten_entries_in_order(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """25 messages go out as 10 + 10 + 5 entries, in input order, all accepted."""
    batch = messages(event_factory, 25)
    outcome = sender(fake_sns).send(batch, sleep=SleepLog())
    assert [len(c) for c in fake_sns.calls] == [10, 10, 5]
    assert outcome.accepted == batch
    assert outcome.complete
    assert fake_sns.accepted_ids == [m.event_id for m in batch]
    assert SNS_MAX_BATCH_ENTRIES == 10


def test_batches_stay_under_the_payload_limit(fake_sns: Any, event_factory: EventFactory) -> None:
    """Messages of ~100 KiB are sent two per call so a batch never exceeds 256 KiB."""
    batch = messages(event_factory, 5, padding=100 * 1024)
    sender(fake_sns).send(batch, sleep=SleepLog())
    assert [len(c) for c in fake_sns.calls] == [2, 2, 1]
    for call in fake_sns.calls:
        assert sum(len(e["Message"].encode()) for e in call) <= SNS_MAX_PAYLOAD_BYTES


def test_entries_carry_routing_attributes_and_the_event_as_body(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """Body is the event JSON; table, operation and service are String attributes."""
    event = event_factory(table="public.users", record_id="7")
    sender(fake_sns).send([OutgoingMessage.from_event(event)], sleep=SleepLog())
    (entry,) = fake_sns.calls[0]
    assert ChangeEvent.from_json(entry["Message"]) == event
    assert entry["MessageAttributes"] == {
        "table": {"DataType": "String", "StringValue": "public.users"},
        "operation": {"DataType": "String", "StringValue": "update"},
        "service": {"DataType": "String", "StringValue": "billing"},
    }
    assert "MessageGroupId" not in entry
    assert "MessageDeduplicationId" not in entry


def test_fifo_entries_group_by_record_and_deduplicate_by_event(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """On a .fifo topic the group id is table:record_id and the dedup id the event id."""
    event = event_factory(table="orders", record_id="42")
    snd = sender(fake_sns, FIFO_TOPIC)
    assert snd.fifo
    snd.send([OutgoingMessage.from_event(event)], sleep=SleepLog())
    (entry,) = fake_sns.calls[0]
    assert entry["MessageGroupId"] == "orders:42"
    assert entry["MessageDeduplicationId"] == str(event.event_id)


def test_fifo_ids_that_sns_would_refuse_are_hashed_stably() -> None:
    """Over-long ids or ids with spaces/non-ASCII become a stable sha256 form."""
    assert fifo_id("users:1") == "users:1"
    long = "t:" + "x" * 200
    assert fifo_id(long).startswith("sha256:")
    assert fifo_id(long) == fifo_id(long)
    assert len(fifo_id(long)) <= 128
    assert fifo_id("users:jean dupont").startswith("sha256:")
    assert fifo_id("users:é") != fifo_id("users:e")


def test_only_throttled_entries_are_resent(fake_sns: Any, event_factory: EventFactory) -> None:
    """A per-entry throttling failure resends that entry alone after a jittered pause."""
    batch = messages(event_factory, 5)
    fake_sns.entry_failures[batch[2].event_id] = [("Throttled", True)]
    sleeps = SleepLog()
    outcome = sender(fake_sns).send(batch, sleep=sleeps)
    assert [len(c) for c in fake_sns.calls] == [5, 1]
    assert fake_sns.calls[1][0]["Message"] == batch[2].body
    assert outcome.accepted == batch
    assert len(sleeps.delays) == 1


def test_server_side_entry_failures_are_retried(fake_sns: Any, event_factory: EventFactory) -> None:
    """An entry failing with SenderFault=false is retried until accepted."""
    batch = messages(event_factory, 2)
    fake_sns.entry_failures[batch[0].event_id] = [
        ("InternalError", False),
        ("InternalError", False),
    ]
    outcome = sender(fake_sns).send(batch, sleep=SleepLog())
    assert outcome.accepted == batch
    assert len(fake_sns.calls) == 3


def test_sender_fault_entries_are_rejected_not_retried(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """A per-entry sender fault is permanent: reported as rejected, never resent."""
    batch = messages(event_factory, 3)
    fake_sns.entry_failures[batch[1].event_id] = [("InvalidParameter", True)]
    outcome = sender(fake_sns).send(batch, sleep=SleepLog())
    assert outcome.accepted == [batch[0], batch[2]]
    ((message, error),) = outcome.rejected
    assert message == batch[1]
    assert isinstance(error, SNSRejectedError)
    assert isinstance(error, PermanentError)
    assert len(fake_sns.calls) == 1
    assert outcome.complete


@pytest.mark.parametrize(("code", "status"), [("Throttling", 400), ("InternalError", 500)])
def test_whole_call_throttling_and_5xx_are_retried(
    fake_sns: Any,
    event_factory: EventFactory,
    make_client_error: Callable[..., Exception],
    code: str,
    status: int,
) -> None:
    """Throttling and server errors on the whole call are retried with backoff."""
    fake_sns.call_errors.extend([make_client_error(code, status)] * 2)
    batch = messages(event_factory, 3)
    sleeps = SleepLog()
    outcome = sender(fake_sns).send(batch, sleep=sleeps)
    assert outcome.accepted == batch
    assert len(sleeps.delays) == 2
    assert all(0 <= d <= 0.05 for d in sleeps.delays)


def test_unreachable_endpoint_exhausts_the_budget_without_hammering(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """When SNS is down each round stops at the first failed call; leftovers are undelivered."""
    fake_sns.down = True
    batch = messages(event_factory, 25)
    sleeps = SleepLog()
    outcome = sender(fake_sns).send(batch, sleep=sleeps)
    assert len(fake_sns.calls) == 4  # one call per attempt, not three
    assert len(sleeps.delays) == 3
    assert outcome.undelivered == batch
    assert not outcome.complete
    assert isinstance(outcome.last_error, TransportError)


def test_stop_request_ends_the_retries(fake_sns: Any, event_factory: EventFactory) -> None:
    """A sleeper that reports a stop makes send return at once with what is left."""
    fake_sns.down = True
    batch = messages(event_factory, 3)
    outcome = sender(fake_sns).send(batch, sleep=SleepLog(stop_after=1))
    assert len(fake_sns.calls) == 1
    assert outcome.undelivered == batch


def test_a_bad_entry_is_isolated_by_splitting_the_batch(
    fake_sns: Any, event_factory: EventFactory, make_client_error: Callable[..., Exception]
) -> None:
    """A whole-call validation error splits the batch; only the offending entry is rejected."""
    batch = messages(event_factory, 4)
    bad = batch[2].body

    def refuse(entries: list[dict[str, Any]]) -> None:
        if any(e["Message"] == bad for e in entries):
            raise make_client_error("InvalidParameter")

    fake_sns.on_call = refuse
    outcome = sender(fake_sns).send(batch, sleep=SleepLog())
    assert outcome.accepted == [batch[0], batch[1], batch[3]]
    assert [m for m, _ in outcome.rejected] == [batch[2]]


def test_client_side_validation_errors_are_isolated_too(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """botocore's ParamValidationError is handled like a validation error from SNS."""
    batch = messages(event_factory, 2)

    def refuse(entries: list[dict[str, Any]]) -> None:
        if len(entries) == 1 and entries[0]["Message"] == batch[0].body:
            raise ParamValidationError(report="bad")
        if len(entries) > 1:
            raise ParamValidationError(report="bad")

    fake_sns.on_call = refuse
    outcome = sender(fake_sns).send(batch, sleep=SleepLog())
    assert outcome.accepted == [batch[1]]
    assert [m for m, _ in outcome.rejected] == [batch[0]]


def test_entries_missing_from_the_response_are_retried(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """An entry the response mentions neither as successful nor failed is sent again."""
    batch = messages(event_factory, 2)
    original = fake_sns.publish_batch
    calls = {"n": 0}

    def forgetful(**kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = original(**kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            response["Successful"] = response["Successful"][:1]
        return response

    fake_sns.publish_batch = forgetful
    outcome = sender(fake_sns).send(batch, sleep=SleepLog())
    assert outcome.accepted == batch
    assert len(fake_sns.calls) == 2


def test_fifo_failure_defers_the_rest_of_the_round(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """On FIFO topics a retryable failure keeps later batches from overtaking it."""
    batch = messages(event_factory, 15)
    fake_sns.entry_failures[batch[3].event_id] = [("Throttled", True)]
    outcome = sender(fake_sns, FIFO_TOPIC).send(batch, sleep=SleepLog())
    assert [len(c) for c in fake_sns.calls] == [10, 6]
    assert outcome.accepted == batch
    assert fake_sns.accepted_ids[-6:] == [m.event_id for m in [batch[3], *batch[10:]]]


def test_oversized_event_without_bucket_is_rejected(
    fake_sns: Any, event_factory: EventFactory
) -> None:
    """Above the threshold and with no offloader, the event is rejected with a clear error."""
    batch = messages(event_factory, 1, padding=300 * 1024) + messages(event_factory, 1)
    outcome = sender(fake_sns).send(batch, sleep=SleepLog())
    ((message, error),) = outcome.rejected
    assert message == batch[0]
    assert isinstance(error, PayloadTooLargeError)
    assert "no S3 bucket" in str(error)
    assert outcome.accepted == [batch[1]]


def test_oversized_event_travels_through_s3(
    fake_sns: Any, fake_s3: Any, event_factory: EventFactory
) -> None:
    """A 1 MiB event is stored in S3 and the message is a pointer with ExtendedPayloadSize."""
    (big,) = messages(event_factory, 1, padding=1024 * 1024)
    (small,) = messages(event_factory, 1)
    offloader = S3Offloader("bkt", client=fake_s3)
    outcome = sender(fake_sns, offloader=offloader).send([big, small], sleep=SleepLog())
    assert outcome.accepted == [big, small]
    pointer_entry, small_entry = fake_sns.calls[0]
    bucket, key = parse_pointer(pointer_entry["Message"])
    assert fake_s3.objects[(bucket, key)] == big.body.encode()
    size = pointer_entry["MessageAttributes"][PAYLOAD_SIZE_ATTRIBUTE]
    assert size == {"DataType": "Number", "StringValue": str(len(big.body.encode()))}
    assert pointer_entry["MessageAttributes"]["table"]["StringValue"] == "users"
    assert small_entry["Message"] == small.body
    assert len(fake_s3.objects) == 1


def test_failed_offload_is_undelivered_not_lost(
    fake_sns: Any, fake_s3: Any, event_factory: EventFactory
) -> None:
    """When the S3 upload fails the event is reported undelivered (to be spooled)."""
    fake_s3.fail = OSError("s3 down")
    (big,) = messages(event_factory, 1, padding=300 * 1024)
    outcome = sender(fake_sns, offloader=S3Offloader("bkt", client=fake_s3)).send(
        [big], sleep=SleepLog()
    )
    assert outcome.undelivered == [big]
    assert isinstance(outcome.last_error, TransportError)
    assert fake_sns.calls == []


def test_constructor_validates_its_settings(fake_sns: Any) -> None:
    """A non-ARN topic or an impossible offload threshold is refused."""
    with pytest.raises(ValueError, match="ARN"):
        SNSSender("audit", client=fake_sns)
    with pytest.raises(ValueError, match="offload_threshold"):
        SNSSender(TOPIC, client=fake_sns, offload_threshold=SNS_MAX_PAYLOAD_BYTES + 1)


def test_message_from_stored_body_round_trips(event_factory: EventFactory) -> None:
    """A message rebuilt from a stored body equals the one built from the event."""
    event = event_factory()
    message = OutgoingMessage.from_event(event)
    assert OutgoingMessage.from_body(message.body) == message
    assert OutgoingMessage.from_body(message.body.encode()) == message
    assert message.to_event() == event
    assert message_attributes(message)["operation"]["StringValue"] == "update"


@pytest.mark.parametrize("body", ["nope", "[1]", json.dumps({"event_id": "x", "table": "t"})])
def test_message_from_a_bad_body_is_a_decode_error(body: str) -> None:
    """Stored bodies without the routing fields cannot be published."""
    with pytest.raises(DecodeError):
        OutgoingMessage.from_body(body)


def test_to_event_of_an_undecodable_body_is_none() -> None:
    """to_event gives None (not an exception) when the body is not a full event."""
    message = OutgoingMessage("e", "t", "insert", "s", "1", json.dumps({"x": 1}))
    assert message.to_event() is None


def test_built_client_keeps_botocore_retries_low() -> None:
    """build_sns_client uses standard retry mode with a small attempt budget."""
    client = build_sns_client(
        region_name="us-east-1", endpoint_url="http://127.0.0.1:9", max_attempts=2
    )
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert client.meta.endpoint_url == "http://127.0.0.1:9"


def test_unusable_aws_settings_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No region for SNS, or a malformed endpoint, fails early with ConfigurationError."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(ConfigurationError, match="SNS client"):
        build_sns_client()
    with pytest.raises(ConfigurationError, match="S3 client"):
        S3Offloader("bucket", region_name="us-east-1", endpoint_url="not a url")
