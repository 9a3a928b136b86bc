"""Decoding message bodies: raw events, SNS envelopes, S3 pointers, and poison."""

from __future__ import annotations

import json

import pytest

from consumer.decoding import MAX_EVENTS_PER_MESSAGE, Decoder, S3Pointer
from consumer.testing import make_event
from sqla_audit.errors import DecodeError, TransportError, UnsupportedSchemaVersion
from sqla_audit.events import json_text_is_plain
from sqla_audit.offload_pointer import make_pointer
from sqla_audit.wire_limits import MAX_PAYLOAD_BYTES


def sns(message: str, kind: str = "Notification") -> str:
    return json.dumps(
        {
            "Type": kind,
            "MessageId": "abc",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:audit",
            "Message": message,
        }
    )


class DictFetcher:
    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects

    def fetch(self, pointer: S3Pointer) -> bytes:
        try:
            return self.objects[(pointer.bucket, pointer.key)]
        except KeyError:
            raise DecodeError("no such object") from None


def test_raw_event_body() -> None:
    """A raw-delivery body is one event."""
    event = make_event()
    assert Decoder().decode(event.to_json()) == [event]


def test_bytes_body() -> None:
    """Bodies may be bytes."""
    event = make_event()
    assert Decoder().decode(event.to_json().encode()) == [event]


def test_sns_envelope_is_unwrapped() -> None:
    """An SNS notification's Message is the event."""
    event = make_event()
    assert Decoder().decode(sns(event.to_json())) == [event]


def test_bundled_events() -> None:
    """A JSON array of events decodes to all of them, in order."""
    events = [make_event(sequence=i) for i in range(3)]
    body = json.dumps([e.to_dict() for e in events])
    assert Decoder().decode(body) == events


def test_s3_pointer_is_resolved() -> None:
    """A payload-offloading pointer (also inside SNS) is fetched and decoded."""
    event = make_event()
    fetcher = DictFetcher({("bucket", "key/1"): event.to_json().encode()})
    pointer = make_pointer("bucket", "key/1")
    assert Decoder(fetcher).decode(pointer) == [event]
    assert Decoder(fetcher).decode(sns(pointer)) == [event]


def test_s3_pointer_without_client_is_a_decode_error() -> None:
    """Without an S3 client a pointer cannot be resolved: a clear DecodeError."""
    with pytest.raises(DecodeError, match="no S3 client"):
        Decoder().decode(make_pointer("bucket", "key"))


def test_missing_s3_object_is_a_decode_error() -> None:
    """A pointer to a missing object is permanent."""
    with pytest.raises(DecodeError, match="no such object"):
        Decoder(DictFetcher({})).decode(make_pointer("bucket", "key"))


def test_unreadable_s3_object_is_retryable() -> None:
    """A fetch failure that may pass is raised as the fetcher's TransportError."""

    class Down:
        def fetch(self, pointer: S3Pointer) -> bytes:
            raise TransportError("S3 down")

    with pytest.raises(TransportError):
        Decoder(Down()).decode(make_pointer("bucket", "key"))


def test_pointer_to_pointer_is_rejected() -> None:
    """An offloaded payload that is itself a pointer is refused (no loops)."""
    pointer = make_pointer("bucket", "key")
    with pytest.raises(DecodeError, match="itself a pointer"):
        Decoder(DictFetcher({("bucket", "key"): pointer.encode()})).decode(pointer)


def _without(field: str) -> str:
    data = make_event().to_dict()
    del data[field]
    return json.dumps(data)


def _with(**fields: object) -> str:
    data = make_event().to_dict()
    data.update(fields)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json {", "not JSON"),
        ("", "not JSON"),
        ("42", "JSON object"),
        ("[]", "empty list"),
        ("{}", "schema_version"),
        (_without("event_id"), "event_id"),
        (_without("transaction_id"), "transaction_id"),
        (_with(operation="upsert"), "invalid change event"),
        (_with(event_id="nope"), "invalid change event"),
        (_with(before=None), "needs 'before'"),
        (_with(sequence=-1), "sequence"),
        (sns("hello, world"), "not JSON"),
        (sns(json.dumps({"default": "some other app"})), "schema_version"),
        (sns("{}", kind="SubscriptionConfirmation"), "SubscriptionConfirmation"),
        (json.dumps(["software.amazon.payloadoffloading.PayloadS3Pointer", {}]), "s3BucketName"),
        (json.dumps([{"x": 1}] * (MAX_EVENTS_PER_MESSAGE + 1)), "at most"),
    ],
)
def test_poison_bodies_raise_decode_error(body: str, message: str) -> None:
    """Every malformed body raises a DecodeError that says what is wrong."""
    with pytest.raises(DecodeError, match=message):
        Decoder().decode(body)


def test_unknown_schema_version_is_reported_as_such() -> None:
    """A future schema_version raises UnsupportedSchemaVersion (a DecodeError)."""
    with pytest.raises(UnsupportedSchemaVersion, match="schema_version 2"):
        Decoder().decode(_with(schema_version=2))


def test_oversized_payload_is_a_decode_error() -> None:
    """A payload above MAX_PAYLOAD_BYTES is refused before it is parsed, inline or offloaded."""
    huge = _with(after={"id": "1", "blob": "x" * MAX_PAYLOAD_BYTES})
    with pytest.raises(DecodeError, match="payload"):
        Decoder().decode(huge)
    fetcher = DictFetcher({("bucket", "big"): huge.encode()})
    with pytest.raises(DecodeError, match="payload"):
        Decoder(fetcher).decode(make_pointer("bucket", "big"))


def test_pathologically_nested_body_is_a_decode_error() -> None:
    """JSON nested deeper than the parser's recursion limit is a DecodeError, not a crash."""
    with pytest.raises(DecodeError, match="not JSON"):
        Decoder().decode("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        ('"x\\ud800"', "after"),
        ('"\\uDBFF y"', "after"),
        ('"\ud800"', "after"),
        ("[" * 101 + "]" * 101, "after"),
        ("NaN", "not JSON"),
        ("-Infinity", "not JSON"),
        ("1e400", "not finite"),
        ("1.8E+308", "not finite"),
        ("1" * 400 + ".0", "not finite"),
    ],
)
def test_the_text_fast_path_never_skips_a_hazard(hostile: str, message: str) -> None:
    """Whatever a value's JSON text hides (lone surrogates escaped or raw, deep nesting,
    non-finite numbers), the decoder refuses it: the text pre-check never vouches for a
    surrogate or deep nesting, and the parser refuses non-finite numbers."""
    body = _with(after={"id": "1", "v": "PLACEHOLDER"}).replace('"PLACEHOLDER"', hostile)
    with pytest.raises(DecodeError, match=message):
        Decoder().decode(body)
    if message == "after":
        assert not json_text_is_plain(body)


def test_the_text_fast_path_vouches_for_ordinary_events() -> None:
    """A typical event's text (UUIDs, decimals, non-ASCII text) takes the fast path."""
    body = _with(after={"id": "1", "n": "café ☕", "d": {"$type": "decimal", "v": "1e5"}, "f": 2.5})
    assert json_text_is_plain(body)
    assert Decoder().decode(body)[0].after == json.loads(body)["after"]
