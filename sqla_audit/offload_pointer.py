"""The S3 pointer a message carries when its change event was too large for SNS.

Part of the wire contract: the producer writes these pointers, the consumer resolves them
with its own S3 client. The format is the one of AWS's *payload offloading* convention, used
by the SNS and SQS extended client libraries (Java ``software.amazon.payloadoffloading``,
Python ``amazon-sns-extended-client``), so those libraries can read our large messages and we
can read theirs:

* the message body is the JSON array
  ``["software.amazon.payloadoffloading.PayloadS3Pointer",
  {"s3BucketName": "<bucket>", "s3Key": "<key>"}]``;
* the message carries the attribute ``ExtendedPayloadSize`` (``Number``): the size in
  bytes of the original body, which is stored as the S3 object. The consumer does not read
  this attribute: it recognises a pointer by its body alone, so a pointer whose message
  carries another attribute name (older extended clients wrote ``SQSLargePayloadSize``)
  resolves the same way.

With raw message delivery the SQS body *is* the pointer. Without it the pointer is the
``Message`` field of the SNS notification envelope and the attribute sits in its
``MessageAttributes``.
"""

from __future__ import annotations

import json
from typing import Final

from sqla_audit.errors import DecodeError

#: First element of every pointer array.
POINTER_CLASS: Final = "software.amazon.payloadoffloading.PayloadS3Pointer"

#: Message attribute holding the original body's size in bytes (type ``Number``).
PAYLOAD_SIZE_ATTRIBUTE: Final = "ExtendedPayloadSize"


def make_pointer(bucket: str, key: str) -> str:
    """The message body that points at ``s3://bucket/key``."""
    if not bucket or not key:
        raise ValueError("an S3 pointer needs a bucket and a key")
    return json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}])


def is_pointer(body: str | bytes) -> bool:
    """True when ``body`` is a payload-offloading pointer (cheap prefix test, then parse)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if POINTER_CLASS not in text[:200] or not text.lstrip().startswith("["):
        return False
    try:
        parse_pointer(text)
    except DecodeError:
        return False
    return True


def parse_pointer(body: str | bytes) -> tuple[str, str]:
    """Return ``(bucket, key)`` of a pointer body; :class:`DecodeError` if it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"S3 pointer is not JSON: {exc}") from exc
    if (
        not isinstance(data, list)
        or len(data) != 2
        or data[0] != POINTER_CLASS
        or not isinstance(data[1], dict)
    ):
        raise DecodeError(f"not a payload-offloading S3 pointer: {str(body)[:200]!r}")
    bucket = data[1].get("s3BucketName")
    key = data[1].get("s3Key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise DecodeError("S3 pointer lacks a non-empty s3BucketName or s3Key")
    return bucket, key


__all__ = [
    "PAYLOAD_SIZE_ATTRIBUTE",
    "POINTER_CLASS",
    "is_pointer",
    "make_pointer",
    "parse_pointer",
]
