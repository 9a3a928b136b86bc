"""The SQS :class:`~consumer.sources.base.MessageSource`, and S3 payload fetching.

Receiving uses long polling (up to 20 s, up to 10 messages per call -- the SQS limits in
:mod:`sqla_audit.limits`), so an idle worker costs about three requests a minute per
poller. The boto3 client is thread-safe; the worker runs several pollers that share one
source. Deletes and visibility changes go out in batches of 10.

Undecodable messages: with a dead-letter queue URL configured, ``reject`` copies the body
there (with the reason as a message attribute) and deletes the original; without one it
does nothing, and the message reappears after its visibility timeout until the queue's
redrive policy (``maxReceiveCount``) moves it to the queue's own DLQ. Either way it never
blocks the messages behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.config import SqsConfig
from consumer.decoding import S3Pointer
from consumer.sources.base import Message, clean_reason
from sqla_audit.errors import DecodeError, TransportError
from sqla_audit.limits import SQS_MAX_BATCH_ENTRIES, SQS_MAX_RECEIVE_MESSAGES, SQS_MAX_WAIT_SECONDS

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

#: Message attribute set on messages copied to the dead-letter queue.
REASON_ATTRIBUTE = "sqla_audit_reject_reason"


def _client_config(read_timeout: int) -> Any:
    from botocore.config import Config  # noqa: PLC0415 - boto3 is an optional dependency

    return Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=64,
    )


def make_sqs_client(config: SqsConfig) -> SQSClient:
    """A boto3 SQS client for ``config`` (credentials from boto3's usual chain)."""
    import boto3  # noqa: PLC0415

    return boto3.client(
        "sqs",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=_client_config(SQS_MAX_WAIT_SECONDS + 10),
    )


def make_s3_client(config: SqsConfig) -> S3Client:
    """A boto3 S3 client in the same region/endpoint as the queue, for payload pointers."""
    import boto3  # noqa: PLC0415

    return boto3.client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=_client_config(60),
    )


def _chunks(items: Sequence[Message], size: int = SQS_MAX_BATCH_ENTRIES) -> list[list[Message]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class SqsSource:
    """Consumes one SQS queue; safe to share between poller threads."""

    def __init__(self, config: SqsConfig, *, client: SQSClient | None = None) -> None:
        self.config = config
        self._client = client or make_sqs_client(config)

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return call()
        except (BotoCoreError, ClientError) as exc:
            raise TransportError(f"SQS {what} failed: {exc}") from exc

    def receive(self, max_messages: int, wait: float) -> list[Message]:
        count = max(1, min(max_messages, SQS_MAX_RECEIVE_MESSAGES))
        seconds = max(0, min(int(wait), SQS_MAX_WAIT_SECONDS))
        response = self._call(
            "receive",
            lambda: self._client.receive_message(
                QueueUrl=self.config.queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=seconds,
                VisibilityTimeout=self.config.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            ),
        )
        out = []
        for raw in response.get("Messages", []):
            attributes = raw.get("Attributes", {})
            out.append(
                Message(
                    message_id=raw["MessageId"],
                    body=raw.get("Body", ""),
                    handle=raw["ReceiptHandle"],
                    receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
                    attributes={
                        name: str(value.get("StringValue", ""))
                        for name, value in raw.get("MessageAttributes", {}).items()
                    },
                )
            )
        return out

    def ack(self, messages: Sequence[Message]) -> None:
        for chunk in _chunks(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.handle} for i, m in enumerate(chunk)]
            try:
                response = self._call(
                    "delete",
                    lambda entries=entries: self._client.delete_message_batch(  # type: ignore[misc]
                        QueueUrl=self.config.queue_url, Entries=entries
                    ),
                )
            except TransportError as exc:
                log.warning("delete failed; %d message(s) will be redelivered: %s", len(chunk), exc)
                continue
            for failed in response.get("Failed", []):
                log.warning(
                    "delete of message %s failed (%s); it will be redelivered",
                    chunk[int(failed["Id"])].message_id,
                    failed.get("Message") or failed.get("Code"),
                )

    def _visibility(self, messages: Sequence[Message], seconds: int, what: str) -> None:
        for chunk in _chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m.handle, "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)
            ]
            try:
                response = self._call(
                    what,
                    lambda entries=entries: self._client.change_message_visibility_batch(  # type: ignore[misc]
                        QueueUrl=self.config.queue_url, Entries=entries
                    ),
                )
            except TransportError as exc:
                log.warning("%s of %d message(s) failed: %s", what, len(chunk), exc)
                continue
            for failed in response.get("Failed", []):
                log.info(
                    "%s of message %s failed: %s",
                    what,
                    chunk[int(failed["Id"])].message_id,
                    failed.get("Message") or failed.get("Code"),
                )

    def release(self, messages: Sequence[Message], visibility: int = 0) -> None:
        self._visibility(messages, visibility, "release")

    def extend(self, messages: Sequence[Message], seconds: int) -> None:
        self._visibility(messages, seconds, "visibility extension")

    def reject(self, messages: Sequence[Message], reason: str) -> None:
        dlq = self.config.dlq_url
        if dlq is None:
            return  # the queue's redrive policy takes it after maxReceiveCount deliveries
        reason = clean_reason(reason)  # message attributes refuse surrogates and most controls
        for chunk in _chunks(messages):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": m.body or "(empty)",
                    "MessageAttributes": {
                        REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason}
                    },
                }
                for i, m in enumerate(chunk)
            ]
            try:
                response = self._call(
                    "dead-letter send",
                    lambda entries=entries: self._client.send_message_batch(  # type: ignore[misc]
                        QueueUrl=dlq, Entries=entries
                    ),
                )
            except TransportError as exc:
                log.warning("could not move %d message(s) to the DLQ: %s", len(chunk), exc)
                continue
            moved = [chunk[int(ok["Id"])] for ok in response.get("Successful", [])]
            self.ack(moved)

    def close(self) -> None:
        self._client.close()


class S3PayloadFetcher:
    """Reads offloaded payloads from S3 for :class:`~consumer.decoding.Decoder`."""

    def __init__(self, client: S3Client) -> None:
        self._client = client

    def fetch(self, pointer: S3Pointer) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            response = self._client.get_object(Bucket=pointer.bucket, Key=pointer.key)
            body: bytes = response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "NoSuchBucket", "404"}:
                raise DecodeError(
                    f"offloaded payload s3://{pointer.bucket}/{pointer.key} does not exist"
                ) from exc
            raise TransportError(f"S3 read of s3://{pointer.bucket}/{pointer.key}: {exc}") from exc
        except BotoCoreError as exc:
            raise TransportError(f"S3 read of s3://{pointer.bucket}/{pointer.key}: {exc}") from exc
        return body


__all__ = ["REASON_ATTRIBUTE", "S3PayloadFetcher", "SqsSource", "make_s3_client", "make_sqs_client"]
