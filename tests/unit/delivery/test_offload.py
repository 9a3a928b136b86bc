"""S3 pointer format (payload-offloading convention) and the S3 offloader."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sqla_audit.errors import ConfigurationError, DecodeError, TransportError
from sqla_audit.offload_pointer import (
    POINTER_CLASS,
    is_pointer,
    make_pointer,
    parse_pointer,
)
from sqla_audit.publishers.offload import S3Offloader


def test_pointer_has_the_extended_client_shape() -> None:
    """The pointer is the two-element array the AWS extended client libraries write."""
    body = make_pointer("bucket", "a/b.json")
    assert json.loads(body) == [POINTER_CLASS, {"s3BucketName": "bucket", "s3Key": "a/b.json"}]
    assert POINTER_CLASS == "software.amazon.payloadoffloading.PayloadS3Pointer"


def test_pointer_round_trips_from_text_and_bytes() -> None:
    """parse_pointer returns bucket and key from str and bytes bodies."""
    body = make_pointer("b", "k")
    assert parse_pointer(body) == ("b", "k")
    assert parse_pointer(body.encode()) == ("b", "k")
    assert is_pointer(body)
    assert is_pointer(body.encode())


def test_pointer_written_by_the_extended_client_is_understood() -> None:
    """A pointer serialized with other spacing (as the Java/Python clients do) parses."""
    body = f'["{POINTER_CLASS}", {{"s3Key": "k-1", "s3BucketName": "bkt"}}]'
    assert is_pointer(body)
    assert parse_pointer(body) == ("bkt", "k-1")


@pytest.mark.parametrize(
    "body",
    [
        '{"event_id": "x"}',
        "not json",
        "[]",
        f'["{POINTER_CLASS}"]',
        f'["{POINTER_CLASS}", {{"s3BucketName": "", "s3Key": "k"}}]',
        f'["{POINTER_CLASS}", {{"s3BucketName": "b"}}]',
        '["other.Class", {"s3BucketName": "b", "s3Key": "k"}]',
        f'["{POINTER_CLASS}", "b"]',
    ],
)
def test_non_pointers_are_refused(body: str) -> None:
    """Event bodies and malformed pointers are not pointers; parsing them is a DecodeError."""
    assert not is_pointer(body)
    with pytest.raises(DecodeError):
        parse_pointer(body)


def test_make_pointer_needs_bucket_and_key() -> None:
    """An empty bucket or key cannot make a pointer."""
    with pytest.raises(ValueError, match="bucket and a key"):
        make_pointer("", "k")


class RecordingS3:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.calls.append(kwargs)
        return {}


def test_offloader_uploads_under_a_key_derived_from_the_event_id() -> None:
    """The body is stored at <prefix><event_id>.json and the pointer names that object."""
    s3 = RecordingS3()
    offloader = S3Offloader("bkt", client=s3, key_prefix="p/")
    pointer = offloader.offload("0190-abc", b'{"a":1}')
    assert parse_pointer(pointer) == ("bkt", "p/0190-abc.json")
    (call,) = s3.calls
    assert call["Bucket"] == "bkt"
    assert call["Key"] == "p/0190-abc.json"
    assert call["Body"] == b'{"a":1}'
    assert call["ContentType"] == "application/json"


def test_offloader_upload_failure_is_retryable() -> None:
    """A failed upload is a TransportError, so the event is retried or spooled, not lost."""
    offloader = S3Offloader("bkt", client=RecordingS3(fail=OSError("connection refused")))
    with pytest.raises(TransportError, match="connection refused"):
        offloader.offload("e", b"{}")


def test_offloader_needs_a_bucket() -> None:
    """An empty bucket name is a configuration error."""
    with pytest.raises(ConfigurationError):
        S3Offloader("", client=RecordingS3())
