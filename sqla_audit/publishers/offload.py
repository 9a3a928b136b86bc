"""Large-payload offload: change events above the SNS size limit travel through S3.

A wide row (a JSON document, a text column of a megabyte) makes a change event larger than
the 256 KiB SNS accepts. Instead of dropping it, the publisher stores the event's JSON as an
S3 object and publishes a small pointer in its place, in the format of AWS's payload
offloading convention (see :mod:`sqla_audit.offload_pointer`). Below the threshold nothing
changes: the event is the message body.

Object keys are ``<prefix><event_id>.json``. Being derived from the event id, they make a
retried upload overwrite the same object instead of leaving orphans, and they let an
operator find an event's payload from its id. The bucket must exist; objects are not
deleted by sqla-audit (several subscribers may need them) -- give the bucket or prefix a
lifecycle expiration rule longer than the longest time a message can wait in a queue.
"""

from __future__ import annotations

from typing import Any, Final

from sqla_audit.errors import (
    ConfigurationError,
    PayloadTooLargeError,
    TransportError,
)
from sqla_audit.offload_pointer import make_pointer

#: Default key prefix of offloaded payloads.
DEFAULT_KEY_PREFIX: Final = "sqla-audit/payloads/"


class S3Offloader:
    """Stores oversized message bodies in S3 and returns the pointer to publish instead.

    ``client`` is a boto3 S3 client (or anything with its ``put_object``); by default one
    is built from the standard AWS configuration.
    """

    def __init__(
        self,
        bucket: str,
        *,
        client: Any = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        region_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigurationError("S3Offloader needs a bucket name")
        self.bucket = bucket
        self.key_prefix = key_prefix
        if client is None:
            import boto3  # noqa: PLC0415 -- boto3 is an optional dependency
            from botocore.exceptions import BotoCoreError  # noqa: PLC0415

            try:
                client = boto3.session.Session().client(
                    "s3", region_name=region_name, endpoint_url=endpoint_url
                )
            except (BotoCoreError, ValueError) as exc:
                raise ConfigurationError(f"cannot build the S3 client: {exc}") from exc
        self._client = client

    def key_for(self, event_id: str) -> str:
        """The object key of the payload of event ``event_id``."""
        return f"{self.key_prefix}{event_id}.json"

    def offload(self, event_id: str, body: bytes) -> str:
        """Upload ``body`` and return the pointer message body; raises :class:`TransportError`."""
        key = self.key_for(event_id)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
            )
        except Exception as exc:  # botocore errors and connection failures alike
            raise TransportError(f"S3 upload of s3://{self.bucket}/{key} failed: {exc}") from exc
        return make_pointer(self.bucket, key)


__all__ = ["DEFAULT_KEY_PREFIX", "PayloadTooLargeError", "S3Offloader"]
