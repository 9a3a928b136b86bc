"""The synchronous publishing core: ``PublishBatch`` calls, offload, per-entry retries.

:class:`SNSSender` turns messages into ``PublishBatch`` calls of at most 10 entries and
256 KiB, offloads oversized bodies to S3, retries throttling and server errors with jittered
backoff -- resending only the entries that failed -- and reports, per message, whether SNS
accepted it, rejected it for good or could not be reached within the retry budget. The
direct-mode publisher and the outbox relay use it. See :mod:`sqla_audit.publishers.sns` for
the error classification.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from botocore.parsers import ResponseParserError

from sqla_audit.errors import (
    AuditError,
    PermanentError,
    SNSRejectedError,
    TransportError,
)
from sqla_audit.limits import (
    PAYLOAD_HEADROOM_BYTES,
    SNS_MAX_BATCH_ENTRIES,
    SNS_MAX_PAYLOAD_BYTES,
)
from sqla_audit.offload_pointer import PAYLOAD_SIZE_ATTRIBUTE
from sqla_audit.publishers.call_pool import CallPool
from sqla_audit.publishers.offload import PayloadTooLargeError, S3Offloader
from sqla_audit.publishers.sns_client import install_fast_body
from sqla_audit.publishers.sns_http import build_publish_client
from sqla_audit.publishers.sns_messages import (
    OutgoingMessage,
    attributes_size,
    fifo_id,
    message_attributes,
)
from sqla_audit.retry import RetryPolicy, Sleeper

#: How a sender that builds its own client calls SNS: ``"lean"`` (the request built, signed
#: and parsed by :mod:`sqla_audit.publishers.sns_http`) or ``"boto3"`` (a boto3 client).
Transport = Literal["lean", "boto3"]

#: Error codes that mean "slow down" (botocore's standard retry mode list, plus SNS's own
#: and KMS's). Compared without a trailing ``Exception``.
THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "Throttled",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceeded",
        "SlowDown",
        "PriorRequestNotComplete",
        "KMSThrottling",
        "ProvisionedThroughputExceeded",
    }
)

#: Whole-call error codes that blame the request itself: the batch is split to find the
#: entry at fault, which is then rejected.
INVALID_REQUEST_CODES: Final = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterValue",
        "ValidationError",
        "BatchRequestTooLong",
        "TooManyEntriesInBatchRequest",
        "BatchEntryIdsNotDistinct",
        "InvalidBatchEntryId",
        "EmptyBatchRequest",
    }
)

#: Per-entry codes that are server-side and transient even when marked as sender faults.
_TRANSIENT_ENTRY_CODES: Final = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout"}
)


def _normalize_code(code: str) -> str:
    return code.removesuffix("Exception")


@dataclass(slots=True)
class _Prepared:
    """A message with its final body (maybe an S3 pointer) and wire size."""

    message: OutgoingMessage
    body: str
    attributes: dict[str, dict[str, str]]
    size: int


@dataclass(slots=True)
class SendOutcome:
    """What happened to each message handed to :meth:`SNSSender.send`, in input order."""

    accepted: list[OutgoingMessage] = field(default_factory=list)
    rejected: list[tuple[OutgoingMessage, BaseException]] = field(default_factory=list)
    undelivered: list[OutgoingMessage] = field(default_factory=list)
    last_error: BaseException | None = None

    @property
    def complete(self) -> bool:
        """True when no message is left to retry (each was accepted or rejected)."""
        return not self.undelivered


@dataclass(slots=True)
class _Failure:
    prepared: _Prepared
    error: BaseException
    retryable: bool


class SNSSender:
    """Synchronous publishing core: batches, offload, per-entry retries.

    Up to ``max_concurrency`` ``PublishBatch`` calls are in flight at once (default one: the
    batches go out one after the other, in order). On a standard
    topic the batches of a round go out in parallel; on a FIFO topic the messages are split
    into lanes by message group, each lane sends its batches one after the other and stops
    at its first retryable failure, and lanes run in parallel -- so at most one batch per
    message group is in flight and no message overtakes an earlier one of its group. While
    the endpoint is not known to answer (at first, and after a whole call failed) a round
    starts with one batch alone, a probe, so an outage costs one call per attempt.

    Without ``client``, the sender builds its own from the standard AWS configuration:
    with ``transport="lean"`` (the default) a :class:`~sqla_audit.publishers.sns_http.SNSHttpClient`
    (falling back to a boto3 client where it cannot be used), with ``"boto3"`` a boto3 client.

    Thread-safe as long as the client is (boto3 clients and the lean client are).
    """

    def __init__(
        self,
        topic_arn: str,
        *,
        client: Any = None,
        fifo: bool | None = None,
        offloader: S3Offloader | None = None,
        offload_threshold: int = SNS_MAX_PAYLOAD_BYTES - PAYLOAD_HEADROOM_BYTES,
        retry: RetryPolicy | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        max_concurrency: int = 1,
        transport: Transport = "lean",
    ) -> None:
        if transport not in ("lean", "boto3"):
            raise ValueError(f"transport must be 'lean' or 'boto3', got {transport!r}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if not topic_arn or not topic_arn.startswith("arn:"):
            raise ValueError(f"topic_arn must be an SNS topic ARN, got {topic_arn!r}")
        if not 0 < offload_threshold <= SNS_MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"offload_threshold must be in 1..{SNS_MAX_PAYLOAD_BYTES}, got {offload_threshold}"
            )
        self.topic_arn = topic_arn
        self.fifo = topic_arn.endswith(".fifo") if fifo is None else fifo
        self.offloader = offloader
        self.offload_threshold = offload_threshold
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max_concurrency
        self._client = (
            client
            if client is not None
            else build_publish_client(
                region_name=region_name,
                endpoint_url=endpoint_url,
                max_pool_connections=max(10, max_concurrency),
                lean=transport == "lean",
            )
        )
        install_fast_body(self._client)
        self._pool = CallPool(max_concurrency)
        # True once a call was answered, False after a whole call failed: decides whether a
        # round starts with a probe. A benign race between threads sharing the sender.
        self._answering = False

    # -- public ---------------------------------------------------------------------------

    def send(
        self, messages: Sequence[OutgoingMessage], *, sleep: Sleeper | None = None
    ) -> SendOutcome:
        """Publish ``messages`` within the retry budget; never raises for delivery failures.

        ``sleep(seconds)`` pauses between rounds and returns True to abandon the retries
        (shutdown); by default the thread sleeps.
        """
        sleeper = sleep or _plain_sleep
        outcome = SendOutcome()
        accepted: set[int] = set()
        rejected: dict[int, BaseException] = {}
        pending: list[tuple[int, _Prepared]] = []
        for index, message in enumerate(messages):
            try:
                pending.append((index, self._prepare(message)))
            except PermanentError as exc:  # too large and nowhere to offload it
                rejected[index] = exc
            except TransportError as exc:  # the S3 upload failed: retry later
                outcome.last_error = exc
        attempt = 1
        while pending:
            failures = dict(self._round(pending))
            retry_next: list[tuple[int, _Prepared]] = []
            for index, prepared in pending:
                failure = failures.get(index)
                if failure is None:
                    accepted.add(index)
                elif failure.retryable:
                    retry_next.append((index, prepared))
                    outcome.last_error = failure.error
                else:
                    rejected[index] = failure.error
            if not retry_next:
                break
            if attempt >= self.retry.max_attempts or sleeper(self.retry.delay(attempt)):
                break
            attempt += 1
            pending = retry_next
        for index, message in enumerate(messages):
            if index in accepted:
                outcome.accepted.append(message)
            elif index in rejected:
                outcome.rejected.append((message, rejected[index]))
            else:
                outcome.undelivered.append(message)
        return outcome

    # -- preparation ----------------------------------------------------------------------

    def _prepare(self, message: OutgoingMessage) -> _Prepared:
        attributes = message_attributes(message)
        encoded = message.body.encode("utf-8")
        size = len(encoded) + attributes_size(attributes)
        if size <= self.offload_threshold:
            return _Prepared(message, message.body, attributes, size)
        if self.offloader is None:
            raise PayloadTooLargeError(
                f"event {message.event_id} of table {message.table!r} is {size} bytes, above "
                f"the {self.offload_threshold}-byte threshold, and no S3 bucket is configured "
                "for large payloads"
            )
        pointer = self.offloader.offload(message.event_id, encoded)
        attributes[PAYLOAD_SIZE_ATTRIBUTE] = {
            "DataType": "Number",
            "StringValue": str(len(encoded)),
        }
        size = len(pointer.encode()) + attributes_size(attributes)
        return _Prepared(message, pointer, attributes, size)

    def _entry(self, entry_id: str, prepared: _Prepared) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": entry_id,
            "Message": prepared.body,
            "MessageAttributes": prepared.attributes,
        }
        if self.fifo:
            message = prepared.message
            entry["MessageGroupId"] = fifo_id(f"{message.table}:{message.record_id}")
            entry["MessageDeduplicationId"] = fifo_id(message.event_id)
        return entry

    # -- one round: every pending message tried once ----------------------------------------

    def _round(self, pending: list[tuple[int, _Prepared]]) -> Iterator[tuple[int, _Failure]]:
        rest = pending
        if not self._answering:
            # Probe: one batch alone while the endpoint is not known to answer.
            probe = next(_batches(pending))
            failures = self._publish_batch(probe)
            yield from failures
            rest = pending[len(probe) :]
            if rest and self._stops(probe, failures):
                yield from _deferred(rest, failures[0][1].error)
                return
        if not rest:
            return
        if self.fifo:
            lanes = self._lanes(rest)
            for failures in self._pool.map(self._send_lane, lanes):
                yield from failures
            return
        # Standard topic: every batch of the round in one pipeline of max_concurrency
        # calls. After a whole call failed (down or throttling) the batches not yet started
        # are deferred to the next attempt: no point hammering the endpoint with them.
        stopped: list[BaseException] = []

        def call(batch: list[tuple[int, _Prepared]]) -> list[tuple[int, _Failure]]:
            if stopped:
                return list(_deferred(batch, stopped[0]))
            failures = self._publish_batch(batch)
            if _whole_call_failed(batch, failures):
                stopped.append(failures[0][1].error)
            return failures

        for failures in self._pool.map(call, list(_batches(rest))):
            yield from failures

    def _stops(
        self, batch: list[tuple[int, _Prepared]], failures: list[tuple[int, _Failure]]
    ) -> bool:
        """Whether the batches after ``batch`` must wait for the next attempt: the whole call
        failed (down or throttling), or, on a FIFO topic, an entry must be retried and a
        later message of its group must not overtake it."""
        if _whole_call_failed(batch, failures):
            return True
        return self.fifo and any(f.retryable for _, f in failures)

    def _lanes(self, items: list[tuple[int, _Prepared]]) -> list[list[tuple[int, _Prepared]]]:
        """FIFO: split by message group into at most ``max_concurrency`` lanes, each in input
        order; one group is always in one lane."""
        count = min(self.max_concurrency, -(-len(items) // SNS_MAX_BATCH_ENTRIES))
        if count <= 1:
            return [items]
        lanes: list[list[tuple[int, _Prepared]]] = [[] for _ in range(count)]
        for item in items:
            message = item[1].message
            group = f"{message.table}:{message.record_id}".encode()
            lanes[zlib.crc32(group) % count].append(item)
        return [lane for lane in lanes if lane]

    def _send_lane(self, lane: list[tuple[int, _Prepared]]) -> list[tuple[int, _Failure]]:
        """FIFO: the batches of one lane in order, stopping at the first retryable failure."""
        out: list[tuple[int, _Failure]] = []
        batches = list(_batches(lane))
        for position, batch in enumerate(batches):
            failures = self._publish_batch(batch)
            out.extend(failures)
            if self._stops(batch, failures):
                later = [item for b in batches[position + 1 :] for item in b]
                out.extend(_deferred(later, failures[0][1].error))
                break
        return out

    def _publish_batch(self, batch: list[tuple[int, _Prepared]]) -> list[tuple[int, _Failure]]:
        entries = [self._entry(str(n), prepared) for n, (_, prepared) in enumerate(batch)]
        try:
            response = self._client.publish_batch(
                TopicArn=self.topic_arn, PublishBatchRequestEntries=entries
            )
        except ClientError as exc:
            code = _normalize_code(str(exc.response.get("Error", {}).get("Code", "")))
            if code in INVALID_REQUEST_CODES:
                self._answering = True
                return self._isolate(batch, exc)
            self._answering = False
            error = TransportError(f"SNS PublishBatch failed: {exc}")
            error.__cause__ = exc
            return [(i, _Failure(p, error, retryable=True)) for i, p in batch]
        except ParamValidationError as exc:
            return self._isolate(batch, exc)
        except (BotoCoreError, ResponseParserError) as exc:
            # Connection refused, timeouts, no credentials, a connection cut mid-response...
            self._answering = False
            error = TransportError(f"SNS unreachable: {exc}")
            error.__cause__ = exc
            return [(i, _Failure(p, error, retryable=True)) for i, p in batch]
        self._answering = True
        failures: list[tuple[int, _Failure]] = []
        answered: set[str] = {str(item.get("Id")) for item in response.get("Successful", [])}
        for item in response.get("Failed", []):
            entry_id = str(item.get("Id"))
            answered.add(entry_id)
            index, prepared = batch[int(entry_id)]
            code = _normalize_code(str(item.get("Code", "")))
            retryable = (
                not item.get("SenderFault", False)
                or code in THROTTLING_CODES
                or code in _TRANSIENT_ENTRY_CODES
            )
            reason = f"{code}: {item.get('Message', '')}"
            entry_error: AuditError = (
                TransportError(f"SNS did not accept the entry: {reason}")
                if retryable
                else SNSRejectedError(f"SNS rejected the event: {reason}")
            )
            failures.append((index, _Failure(prepared, entry_error, retryable)))
        for n, (index, prepared) in enumerate(batch):
            if str(n) not in answered:  # neither successful nor failed: ask again
                missing = TransportError("SNS response did not mention the entry")
                failures.append((index, _Failure(prepared, missing, retryable=True)))
        return sorted(failures, key=lambda item: item[0])

    def _isolate(
        self, batch: list[tuple[int, _Prepared]], exc: BaseException
    ) -> list[tuple[int, _Failure]]:
        if len(batch) == 1:
            index, prepared = batch[0]
            error = SNSRejectedError(f"SNS rejected the event: {exc}")
            error.__cause__ = exc
            return [(index, _Failure(prepared, error, retryable=False))]
        failures: list[tuple[int, _Failure]] = []
        for item in batch:
            failures.extend(self._publish_batch([item]))
        return failures


def _whole_call_failed(
    batch: list[tuple[int, _Prepared]], failures: list[tuple[int, _Failure]]
) -> bool:
    """Every entry of the call failed retryably: the endpoint is down or throttling."""
    return bool(failures) and len(failures) == len(batch) and failures[0][1].retryable


def _deferred(
    items: list[tuple[int, _Prepared]], error: BaseException
) -> Iterator[tuple[int, _Failure]]:
    """Messages not tried in this round: retryable, with the error that stopped it."""
    for index, prepared in items:
        yield index, _Failure(prepared, error, retryable=True)


def _plain_sleep(seconds: float) -> bool:
    threading.Event().wait(seconds)
    return False


def _batches(
    pending: list[tuple[int, _Prepared]],
) -> Iterator[list[tuple[int, _Prepared]]]:
    """Split into PublishBatch calls: at most 10 entries and 256 KiB in total."""
    batch: list[tuple[int, _Prepared]] = []
    total = 0
    for item in pending:
        size = item[1].size
        if batch and (len(batch) >= SNS_MAX_BATCH_ENTRIES or total + size > SNS_MAX_PAYLOAD_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch


__all__ = [
    "INVALID_REQUEST_CODES",
    "THROTTLING_CODES",
    "SNSSender",
    "SendOutcome",
    "Transport",
]
