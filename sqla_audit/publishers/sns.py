"""Publishing change events to Amazon SNS.

Two layers, because two callers need different things:

* :class:`SNSSender` is the synchronous *publishing core*: it turns messages into
  ``PublishBatch`` calls of at most 10 entries and 256 KiB, offloads oversized bodies to S3,
  retries throttling and server errors with jittered backoff -- resending only the entries
  that failed -- and reports, per message, whether SNS accepted it, rejected it for good or
  could not be reached within the retry budget. The outbox relay uses it directly.
* :class:`SNSPublisher` is the :class:`~sqla_audit.publishers.base.Publisher` an
  application installs in *direct* mode. ``publish()`` only appends to a bounded in-memory
  queue (a commit never waits on the network); a background thread drains the queue through
  an :class:`SNSSender`. When SNS stays unreachable past the retry budget, or the queue is
  full, events spill to a local :class:`~sqla_audit.publishers.spool.EventSpool` and are
  re-sent in order once SNS answers again. Nothing raises into application code: failures
  go to the ``on_error`` hook and the counters of :meth:`SNSPublisher.stats`.

Messages. The body is ``ChangeEvent.to_json()``. Three ``String`` message attributes --
``table``, ``operation``, ``service`` -- let subscriptions filter without reading the body.
On a FIFO topic (ARN ending in ``.fifo``) ``MessageGroupId`` is ``<table>:<record_id>`` so
the events of one record are delivered in order while different records proceed in
parallel, and ``MessageDeduplicationId`` is the event id, so a re-sent event within SNS's
five-minute deduplication window is dropped by SNS itself. A group id longer than 128
characters, or with characters SNS does not allow, is replaced by ``sha256:<hex digest>``
of the same text (stable, so ordering per record is kept).

Error classification (what is retried):

* whole-call errors: throttling codes, HTTP 5xx, connection failures and timeouts, and
  also authorization / not-found / KMS errors (a configuration fix resumes delivery, and
  the spool keeps the events meanwhile) are *retryable*; request-validation errors
  (``InvalidParameter``, ``BatchRequestTooLong``...) make the sender split the batch to
  isolate the offending entry, which is then *rejected*;
* per-entry failures in the ``Failed`` list of a response: retryable when
  ``SenderFault`` is false or the code is a throttling code, rejected otherwise.

Rejected messages are reported to ``on_error`` and counted; they are never silently
dropped, and never block the messages behind them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Final, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from botocore.parsers import ResponseParserError

from sqla_audit import shutdown
from sqla_audit.delivery import report_failure
from sqla_audit.errors import (
    AuditError,
    ConfigurationError,
    DecodeError,
    PermanentError,
    PublisherClosedError,
    QueueFullError,
    SNSRejectedError,
    TransportError,
)
from sqla_audit.events import ChangeEvent
from sqla_audit.limits import (
    PAYLOAD_HEADROOM_BYTES,
    SNS_MAX_BATCH_ENTRIES,
    SNS_MAX_PAYLOAD_BYTES,
)
from sqla_audit.offload_pointer import PAYLOAD_SIZE_ATTRIBUTE
from sqla_audit.publishers.base import ErrorHook
from sqla_audit.publishers.offload import PayloadTooLargeError, S3Offloader
from sqla_audit.publishers.spool import EventSpool, SpoolFullError
from sqla_audit.retry import RetryPolicy, Sleeper

log = logging.getLogger(__name__)

#: Events serialized and written to the spool at a time when a queue spills.
_SPILL_CHUNK_EVENTS: Final = 500

#: ``PublishBatch`` calls the direct-mode publisher keeps in flight at most, by default.
DEFAULT_MAX_CONCURRENCY: Final = 16

#: The direct-mode publisher's pause between probes while SNS is unreachable: short enough
#: that the first send after the endpoint's return comes within about 1.5 s.
DEFAULT_OUTAGE_RETRY: Final = RetryPolicy(max_attempts=1_000_000_000, base_delay=0.5, max_delay=1.5)

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Longest FIFO ``MessageGroupId`` / ``MessageDeduplicationId``.
FIFO_ID_MAX_LENGTH: Final = 128

#: Characters SNS accepts in FIFO group and deduplication ids: ASCII letters, digits and
#: punctuation (no space).
_FIFO_ID_RE: Final = re.compile(r"[!-~]+")

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


def build_sns_client(
    *,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    max_attempts: int = 2,
    connect_timeout: float = 3.0,
    read_timeout: float = 10.0,
    max_pool_connections: int = 10,
) -> Any:
    """An SNS client from the standard AWS configuration, with botocore's retries kept low.

    Region, credentials and endpoint come from the usual chain (arguments, then
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, the credential chain, ``AWS_ENDPOINT_URL``...).
    botocore retries whole calls only; :class:`SNSSender` retries per entry, so the
    client's own budget is small to keep the total bounded. ``max_pool_connections`` is the
    number of HTTP connections kept open, one per ``PublishBatch`` call in flight.
    """
    import boto3  # noqa: PLC0415 -- optional dependency, loaded when SNS is used
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    try:
        return boto3.session.Session().client(
            "sns", region_name=region_name, endpoint_url=endpoint_url, config=config
        )
    except (BotoCoreError, ValueError) as exc:  # no region, malformed endpoint...
        raise ConfigurationError(f"cannot build the SNS client: {exc}") from exc


#: ``application/x-www-form-urlencoded`` for one byte (as a latin-1 character): unreserved
#: characters stay, space becomes ``+``, everything else ``%XX`` -- what ``urlencode`` does.
_FORM_ESCAPES: Final = {
    byte: (
        chr(byte)
        if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "_.-~")
        else "+"
        if byte == 0x20
        else f"%{byte:02X}"
    )
    for byte in range(256)
}


def form_encode(fields: dict[str, Any]) -> bytes:
    """The body ``urlencode(fields)`` would give, computed in C (``str.translate``).

    botocore encodes a query-protocol body with ``urllib.parse.urlencode`` -- a Python loop
    over every character, twice per call (once more for the signature) -- which was half of
    the CPU a ``PublishBatch`` of ten 1 KiB events cost.
    """
    return "&".join(
        f"{_form_part(str(key))}={_form_part(str(value))}" for key, value in fields.items()
    ).encode("ascii")


def _form_part(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(_FORM_ESCAPES)


def _encode_body_once(params: dict[str, Any], **_: Any) -> None:
    """botocore ``before-call`` hook: hand the request body over already encoded."""
    body = params.get("body")
    if isinstance(body, dict):
        params["body"] = form_encode(body)


def _install_fast_body(client: Any) -> None:
    """Register :func:`_encode_body_once` on a boto3 SNS client (no-op for test doubles)."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is not None:
        events.register("before-call.sns.PublishBatch", _encode_body_once)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One change event ready to publish: its JSON body and the fields routing needs."""

    event_id: str
    table: str
    operation: str
    service: str
    record_id: str
    body: str

    @classmethod
    def from_event(cls, event: ChangeEvent) -> OutgoingMessage:
        return cls(
            event_id=str(event.event_id),
            table=event.table,
            operation=event.operation.value,
            service=event.service,
            record_id=event.record_id,
            body=event.to_json(),
        )

    @classmethod
    def from_body(cls, body: str | bytes) -> OutgoingMessage:
        """Rebuild a message from a stored event body (spool record, outbox payload).

        Only the routing fields are checked; the body is published as stored.
        """
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DecodeError(f"stored event is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DecodeError("stored event is not a JSON object")
        fields: dict[str, str] = {}
        for name in ("event_id", "table", "operation", "service", "record_id"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise DecodeError(f"stored event lacks a string {name!r}")
            fields[name] = value
        return cls(body=text, **fields)

    def to_event(self) -> ChangeEvent | None:
        """The full event, for error hooks; None when the body does not decode."""
        try:
            return ChangeEvent.from_json(self.body)
        except DecodeError:
            return None


def fifo_id(text: str) -> str:
    """``text`` when SNS accepts it as a FIFO id, else ``sha256:<hex>`` of it."""
    if len(text) <= FIFO_ID_MAX_LENGTH and _FIFO_ID_RE.fullmatch(text):
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def message_attributes(message: OutgoingMessage) -> dict[str, dict[str, str]]:
    """The SNS message attributes of a message (for subscription filter policies)."""
    return {
        "table": {"DataType": "String", "StringValue": message.table},
        "operation": {"DataType": "String", "StringValue": message.operation},
        "service": {"DataType": "String", "StringValue": message.service},
    }


def _attributes_size(attributes: dict[str, dict[str, str]]) -> int:
    # SNS counts the attribute name, data type and value toward the message size.
    return sum(
        len(name.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
        for name, a in attributes.items()
    )


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


# --------------------------------------------------------------------------- call pool


class _CallPool:
    """Daemon worker threads that run a few calls at once for one :class:`SNSSender`.

    Not ``concurrent.futures``: its workers refuse new work once the interpreter starts
    shutting down, which happens *before* ``atexit`` handlers run -- and the publisher's
    ``atexit`` handler must still be able to send. Workers are started on first use, and
    again in a child process after ``fork()`` (threads do not survive it); a worker left
    idle for ``idle_exit`` seconds ends, so a sender that is no longer used keeps no thread.
    """

    def __init__(self, size: int, idle_exit: float = 30.0) -> None:
        self.size = size
        self.idle_exit = idle_exit
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._pid = os.getpid()

    def map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``[fn(item) for item in items]``, up to ``size`` at a time; the caller runs one.

        Waits for every call; the first exception raised by a call is raised afterwards.
        """
        if len(items) <= 1 or self.size <= 1:
            return [fn(item) for item in items]
        results: list[Any] = [None] * len(items)
        errors: list[BaseException] = []
        remaining = [len(items) - 1]
        done = threading.Condition()

        def job(index: int) -> Callable[[], None]:
            def run() -> None:
                try:
                    results[index] = fn(items[index])
                except BaseException as exc:  # noqa: BLE001 -- re-raised by the caller
                    errors.append(exc)
                finally:
                    with done:
                        remaining[0] -= 1
                        done.notify_all()

            return run

        with self._lock:  # workers and jobs together: an idle worker cannot leave them behind
            self._ensure_workers_locked(min(self.size, len(items)) - 1)
            for index in range(1, len(items)):
                self._jobs.put(job(index))
        try:
            results[0] = fn(items[0])
        finally:
            with done:
                done.wait_for(lambda: remaining[0] == 0)
        if errors:
            raise errors[0]
        return results

    @property
    def workers(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return self._workers

    def _ensure_workers_locked(self, wanted: int) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's workers are not here
            self._pid = os.getpid()
            self._jobs = queue.SimpleQueue()
            self._workers = 0
        while self._workers < wanted:
            self._workers += 1
            threading.Thread(
                target=self._work,
                args=(self._jobs,),
                name=f"sqla-audit-sns-call-{self._workers}",
                daemon=True,
            ).start()

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            try:
                job = jobs.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:
                    if not jobs.empty():
                        continue
                    if self._jobs is jobs:
                        self._workers -= 1
                    return
            job()


# --------------------------------------------------------------------------- sender


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

    Thread-safe as long as the client is (boto3 clients are).
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
    ) -> None:
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
            else build_sns_client(
                region_name=region_name,
                endpoint_url=endpoint_url,
                max_pool_connections=max(10, max_concurrency),
            )
        )
        _install_fast_body(self._client)
        self._pool = _CallPool(max_concurrency)
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
        size = len(encoded) + _attributes_size(attributes)
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
        size = len(pointer.encode()) + _attributes_size(attributes)
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
        batches = list(_batches(rest))
        width = self.max_concurrency
        for start in range(0, len(batches), width):
            wave = batches[start : start + width]
            answers = self._pool.map(self._publish_batch, wave)
            for failures in answers:
                yield from failures
            failed_call = next(
                (f for b, f in zip(wave, answers, strict=True) if _whole_call_failed(b, f)), None
            )
            if failed_call is not None:
                # The endpoint is down or throttling: no point hammering it with the other
                # batches of this round.
                later = [item for batch in batches[start + width :] for item in batch]
                yield from _deferred(later, failed_call[0][1].error)
                return

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


# --------------------------------------------------------------------------- publisher


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters of an :class:`SNSPublisher` since it started (events, not messages)."""

    accepted: int
    delivered: int
    spooled: int
    rejected: int
    dropped: int
    queued: int
    spool_bytes: int


class SNSPublisher:
    """Direct-mode publisher: bounded queue, background sender thread, local spool.

    ``publish()`` costs a lock and a deque append while the queue has room. During an
    outage (SNS unreachable past ``retry``) or once the queue holds more than
    ``max_queue_events``, events are written to ``spool`` by the sender thread, and from
    then on every new event follows them through the spool, so order is kept. The sender
    re-tries the spool's head with ``outage_retry`` backoff until SNS answers, then empties
    the spool before returning to the in-memory path.

    Spilling never holds the publisher's lock: the events are taken out of the queue under
    it (a swap) and serialized and written afterwards, so ``publish()`` does not wait for
    the disk. Only when the queue reaches ``max_queue_hard`` (default twice
    ``max_queue_events``) because the sender cannot keep up -- it is inside a blocking
    network call -- does ``publish()`` write to the spool itself (back-pressure, which
    keeps memory bounded). Spill batches are written in the order they left the queue,
    whichever thread writes them.

    Without a spool, events that cannot be delivered (or do not fit in the queue) are
    reported to ``on_error`` and counted as ``dropped``.

    Throughput: the sender thread takes ``max_batch_events`` events at a time (default ten
    per call in flight) and sends them with up to ``max_concurrency`` ``PublishBatch`` calls
    at once (see :class:`SNSSender`; FIFO topics keep one batch per message group in
    flight). The spool is drained the same way, so a backlog empties at the live rate.
    """

    def __init__(
        self,
        topic_arn: str,
        *,
        client: Any = None,
        sender: SNSSender | None = None,
        fifo: bool | None = None,
        offloader: S3Offloader | None = None,
        spool: EventSpool | str | PathLike[str] | None = None,
        max_queue_events: int = 10_000,
        max_queue_hard: int | None = None,
        max_batch_events: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        outage_retry: RetryPolicy | None = None,
        on_error: ErrorHook | None = None,
        close_timeout: float = 10.0,
        register_atexit: bool = True,
        region_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        if max_queue_events < 1:
            raise ValueError("max_queue_events must be at least 1")
        hard = 2 * max_queue_events if max_queue_hard is None else max_queue_hard
        if hard < max_queue_events:
            raise ValueError(
                f"max_queue_hard ({hard}) must be at least max_queue_events ({max_queue_events})"
            )
        if max_batch_events is not None and max_batch_events < 1:
            raise ValueError("max_batch_events must be at least 1")
        self._sender = sender or SNSSender(
            topic_arn,
            client=client,
            fifo=fifo,
            offloader=offloader,
            retry=retry,
            region_name=region_name,
            endpoint_url=endpoint_url,
            max_concurrency=max_concurrency,
        )
        self._spool = EventSpool(spool) if isinstance(spool, str | PathLike) else spool
        self._max_queue = max_queue_events
        self._max_queue_hard = hard
        # One round of the sender: a full batch for every call it may have in flight.
        self._max_batch = (
            SNS_MAX_BATCH_ENTRIES * self._sender.max_concurrency
            if max_batch_events is None
            else max_batch_events
        )
        self._outage_retry = outage_retry or DEFAULT_OUTAGE_RETRY
        self._on_error = on_error
        self._close_timeout = close_timeout

        self._cond = threading.Condition()
        self._queue: deque[ChangeEvent] = deque()
        self._inflight = 0
        self._spilling = self._spool is not None and not self._spool.empty
        # Spilling outside the lock: batches taken out of the queue wait here (oldest first)
        # until a thread holding ``_spill_lock`` writes them; ``_spill_backlog`` counts their
        # events until they are on disk, so flush() and stats() still see them.
        self._spill_pending: deque[tuple[int, deque[ChangeEvent]]] = deque()
        self._spill_seq = 0
        self._spill_backlog = 0
        self._spill_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._stop = threading.Event()
        self._window_done: set[str] = set()  # event ids of the spool head already accepted
        self._outage_attempt = 0
        self._counts = {"accepted": 0, "delivered": 0, "spooled": 0, "rejected": 0, "dropped": 0}

        self._thread = threading.Thread(
            target=self._run, name=f"sqla-audit-sns-{topic_arn.rsplit(':', 1)[-1]}", daemon=True
        )
        self._thread.start()
        self._atexit_registered = register_atexit
        if register_atexit:
            atexit.register(self._close_at_exit)
            shutdown.track(self)  # flush_publishers() and the signal flush include it

    # -- Publisher protocol -----------------------------------------------------------------

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Queue the events of one committed transaction; never blocks on the network."""
        if not events:
            return
        try:
            with self._cond:
                if self._closed:
                    self._drop(PublisherClosedError("the SNS publisher is closed"), events)
                    return
                self._counts["accepted"] += len(events)
                held = len(self._queue) + len(events)
                # Memory holds the queue and the events on their way to the spool.
                if held <= self._max_queue and held + self._spill_backlog <= self._max_queue_hard:
                    self._queue.extend(events)
                    self._cond.notify_all()
                    return
                if self._spool is None:
                    self._drop(
                        QueueFullError(
                            f"the SNS publisher queue is full ({self._max_queue} events) "
                            "and no spool is configured"
                        ),
                        events,
                    )
                    return
                # Past the soft cap: from now on events go through the spool. The sender
                # thread writes them; this thread only does when the sender is behind by
                # more than the hard cap (back-pressure).
                self._spilling = True
                self._queue.extend(events)
                self._cond.notify_all()
                if held + self._spill_backlog <= self._max_queue_hard:
                    return
                seq = self._take_queue_locked()
            self._write_spill(seq)
        except Exception as exc:  # noqa: BLE001 -- publish() never raises into application code
            self._report(exc, events)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted event is delivered, rejected or dropped."""
        with self._cond:
            return self._cond.wait_for(self._idle_locked, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` seconds, stop the thread, spool what is left."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        budget = self._close_timeout if timeout is None else timeout
        self.flush(budget)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(max(budget, 1.0))
        seq: int | None = None
        with self._cond:
            self._closed = True
            if self._queue:
                if self._spool is not None:
                    seq = self._take_queue_locked()
                else:
                    leftover = list(self._queue)
                    self._queue.clear()
                    self._drop(TransportError("SNS publisher closed before delivery"), leftover)
            self._cond.notify_all()
        if seq is not None:
            self._write_spill(seq)
        if self._spool is not None:
            with self._cond:  # a caller past the hard cap may still be writing its spill
                self._cond.wait_for(lambda: not self._spill_backlog, max(budget, 1.0))
        if self._spool is not None and not self._thread.is_alive():
            self._spool.close()
        if self._atexit_registered:
            atexit.unregister(self._close_at_exit)
            self._atexit_registered = False
        shutdown.untrack(self)

    # -- observability -------------------------------------------------------------------

    def stats(self) -> PublisherStats:
        # The spool's size is read outside the publisher's lock: the spool's own lock may be
        # held by a write in progress, and publish() must not queue up behind it.
        spool_bytes = self._spool.size_bytes if self._spool is not None else 0
        with self._cond:
            return PublisherStats(
                queued=len(self._queue) + self._inflight + self._spill_backlog,
                spool_bytes=spool_bytes,
                **self._counts,
            )

    # -- internals ------------------------------------------------------------------------

    def _close_at_exit(self) -> None:
        self._atexit_registered = False
        self.close(self._close_timeout)

    def _idle_locked(self) -> bool:
        # ``_spilling`` stays set while the spool may hold events: only the sender clears it,
        # after finding the spool empty with nothing queued or on its way to the spool. Not
        # asking the spool here keeps flush() from holding the publisher's lock while the
        # spool's lock is held by a write.
        return (
            not self._queue
            and not self._inflight
            and not self._spill_backlog
            and not self._spilling
        )

    def _report(self, error: BaseException, events: Sequence[ChangeEvent]) -> None:
        report_failure(error, events, self._on_error)

    def _drop(self, error: BaseException, events: Sequence[ChangeEvent]) -> None:
        self._counts["dropped"] += len(events)
        self._report(error, events)

    def _take_queue_locked(self) -> int:
        """Hand the whole queue over for spilling; return its batch number. Lock held.

        O(1): the deque is swapped, not copied. The events stay counted (``_spill_backlog``)
        until :meth:`_write_spill` has put them on disk.
        """
        if self._queue:
            self._spill_seq += 1
            batch, self._queue = self._queue, deque()
            self._spill_pending.append((self._spill_seq, batch))
            self._spill_backlog += len(batch)
        return self._spill_seq

    def _write_spill(self, upto: int) -> None:
        """Write the handed-over batches numbered up to ``upto`` to the spool, oldest first.

        Called without the publisher's lock. ``_spill_lock`` makes one thread at a time
        write, and batches leave ``_spill_pending`` in the order they entered it, so the
        sender's spill and a caller's spill (past the hard cap) never interleave: whoever
        gets the lock first also writes the older batches of the other.
        """
        with self._spill_lock:
            while True:
                with self._cond:
                    if not self._spill_pending or self._spill_pending[0][0] > upto:
                        return
                    _, batch = self._spill_pending.popleft()
                self._write_batch(batch)

    def _write_batch(self, batch: deque[ChangeEvent]) -> None:
        """Serialize and append one spill batch, in chunks; count and report what fails."""
        assert self._spool is not None
        # In chunks, so serialized copies of a whole queue never coexist in memory; the
        # events of a written chunk are released at once.
        while batch:
            chunk = [batch.popleft() for _ in range(min(_SPILL_CHUNK_EVENTS, len(batch)))]
            records: list[bytes] = []
            kept: list[ChangeEvent] = []
            bad: list[tuple[BaseException, ChangeEvent]] = []
            for event in chunk:
                try:
                    records.append(event.to_json().encode("utf-8"))
                except Exception as exc:  # noqa: BLE001 -- a bad event must not stop the others
                    bad.append((exc, event))
                else:
                    kept.append(event)
            written = 0
            failure: BaseException | None = None
            try:
                written = self._spool.append(records) if records else 0
            except SpoolFullError as exc:
                written, failure = exc.written, exc
            except Exception as exc:  # noqa: BLE001 -- disk errors are reported, not raised
                failure = exc
            lost = kept[written:]
            # Reported before they stop counting as pending, so flush() returns after the hook.
            for error, event in bad:
                self._report(error, [event])
            if failure is not None:
                self._report(failure, lost)
            with self._cond:
                self._spill_backlog -= len(chunk)
                self._counts["spooled"] += written
                self._counts["rejected"] += len(bad)
                self._counts["dropped"] += len(lost)
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception as exc:  # never let the thread die: report and carry on
                log.exception("sqla-audit: unexpected error in the SNS sender thread")
                self._report(exc, [])
                if self._stop.wait(1.0):
                    return

    def _step(self) -> bool:
        """One unit of work; False when the thread should exit."""
        batch: list[ChangeEvent] = []
        seq = 0
        with self._cond:
            while not self._queue and not self._spilling and not self._closing:
                self._cond.wait()
            if self._stop.is_set():
                return False
            spilling = self._spilling
            if spilling:
                seq = self._take_queue_locked()
            elif self._queue:
                size = min(self._max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                self._inflight = len(batch)
            elif self._closing:
                # Idle and closing: wait for close() to set the stop flag.
                self._cond.wait(0.1)
                return not self._stop.is_set()
            else:
                return True
        if spilling:
            self._write_spill(seq)
            self._drain_spool_step()
        else:
            self._send_inflight(batch)
        return True

    def _send_inflight(self, batch: list[ChangeEvent]) -> None:
        messages: list[OutgoingMessage] = []
        events_by_id: dict[str, ChangeEvent] = {}
        for event in batch:
            try:
                message = OutgoingMessage.from_event(event)
            except Exception as exc:  # noqa: BLE001 -- a bad event must not stop the others
                with self._cond:
                    self._counts["rejected"] += 1
                self._report(exc, [event])
                continue
            messages.append(message)
            events_by_id[message.event_id] = event
        outcome = self._sender.send(messages, sleep=self._sleep_spilling)
        for message, error in outcome.rejected:
            self._report(error, [events_by_id[message.event_id]])
        undelivered = [events_by_id[m.event_id] for m in outcome.undelivered]
        with self._cond:
            self._counts["delivered"] += len(outcome.accepted)
            self._counts["rejected"] += len(outcome.rejected)
            if not undelivered:
                self._inflight = 0
            elif self._spool is not None:
                # From now on new events follow these through the spool; the next step
                # moves what is queued behind them.
                self._spilling = True
            self._cond.notify_all()
        if not undelivered:
            return
        if self._spool is None:
            self._report(outcome.last_error or TransportError("SNS unreachable"), undelivered)
            with self._cond:
                self._counts["dropped"] += len(undelivered)
                self._inflight = 0
                self._cond.notify_all()
            return
        self._spool_front(
            undelivered, [m.body.encode("utf-8") for m in outcome.undelivered], outcome.last_error
        )

    def _spool_front(
        self, events: list[ChangeEvent], records: list[bytes], error: BaseException | None
    ) -> None:
        """Undelivered in-flight events go to the *front* of the spool (they are older than
        anything spilled meanwhile). Written without the publisher's lock; the events stay
        counted as in flight until they are on disk."""
        assert self._spool is not None
        log.warning(
            "sqla-audit: SNS unreachable (%s); spooling %d event(s) to %s",
            error,
            len(events),
            self._spool.directory,
        )
        written = 0
        failure: BaseException | None = None
        try:
            written = self._spool.push_front(records)
        except SpoolFullError as exc:
            written, failure = exc.written, exc
        except Exception as exc:  # noqa: BLE001 -- disk errors are reported, not raised
            failure = exc
        if failure is not None:
            self._report(failure, events[written:])
        with self._cond:
            self._counts["spooled"] += written
            self._counts["dropped"] += len(events) - written
            self._inflight = 0
            self._cond.notify_all()

    def _drain_spool_step(self) -> None:
        assert self._spool is not None
        records = self._spool.peek(self._max_batch)
        if not records:
            with self._cond:
                # Nothing queued and nothing on its way to the spool: with the publisher's
                # lock held no spill can start, so the spool's answer is final.
                if not self._queue and not self._spill_backlog and self._spool.empty:
                    self._spilling = False
                    log.info("sqla-audit: spool drained, back to direct delivery")
                self._cond.notify_all()
            return
        messages: list[OutgoingMessage] = []
        for record in records:
            try:
                message = OutgoingMessage.from_body(record)
            except (DecodeError, UnicodeDecodeError) as exc:
                with self._cond:
                    self._counts["rejected"] += 1
                self._report(exc, [])
                continue
            if message.event_id not in self._window_done:
                messages.append(message)
        outcome = self._sender.send(messages, sleep=self._sleep_spilling)
        for message, error in outcome.rejected:
            event = message.to_event()
            self._report(error, [event] if event is not None else [])
        if outcome.complete:
            # Outside the publisher's lock: the cursor write must not hold up publish().
            self._spool.ack(len(records))
        with self._cond:
            self._counts["delivered"] += len(outcome.accepted)
            self._counts["rejected"] += len(outcome.rejected)
            if outcome.complete:
                self._window_done.clear()
                self._outage_attempt = 0
                self._cond.notify_all()
                return
            self._window_done.update(m.event_id for m in outcome.accepted)
            self._window_done.update(m.event_id for m, _ in outcome.rejected)
            self._outage_attempt += 1
            attempt = self._outage_attempt
            self._cond.notify_all()
        delay = self._outage_retry.delay(attempt)
        log.warning(
            "sqla-audit: SNS still unreachable (%s); %d byte(s) spooled, next try in %.1fs",
            outcome.last_error,
            self._spool.size_bytes,
            delay,
        )
        self._sleep_spilling(delay)

    def _sleep_spilling(self, seconds: float) -> bool:
        """The sender thread's pause (between retries and between outage probes).

        While spilling, newly published events are moved to the spool as they come, so they
        neither wait in memory (where a crash would lose them) nor push publish() to the
        hard cap. Returns True when the publisher is stopping, like ``Event.wait``.
        """
        deadline = time.monotonic() + seconds
        while True:
            if self._stop.is_set():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                if not (self._spilling and self._queue):
                    self._cond.wait(min(remaining, 1.0))
                if not (self._spilling and self._queue) or self._spool is None:
                    continue
                seq = self._take_queue_locked()
            self._write_spill(seq)


__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_OUTAGE_RETRY",
    "FIFO_ID_MAX_LENGTH",
    "INVALID_REQUEST_CODES",
    "THROTTLING_CODES",
    "OutgoingMessage",
    "PublisherClosedError",
    "PublisherStats",
    "QueueFullError",
    "SNSPublisher",
    "SNSRejectedError",
    "SNSSender",
    "SendOutcome",
    "build_sns_client",
    "fifo_id",
    "message_attributes",
]
