"""The dead-letter queue, without the AWS console: list what is there and why, move it back.

Messages reach the DLQ two ways: the worker moves a message it rejected (with the reason in
the ``sqla_audit_reject_reason`` message attribute, see :mod:`consumer.sources.sqs`), or
the queue's redrive policy moves one that was received ``maxReceiveCount`` times without
being deleted (then there is no reason attribute: only the receive count tells).

Listing receives the messages with a short visibility timeout and hands each back at once
(visibility 0), so a listing leaves the DLQ as it found it apart from the receive counts.
SQS has no "peek": a message another reader holds at that moment is not listed.

Redriving sends each chosen message to the target queue *first* and deletes it from the
DLQ only when the send succeeded, so a redrive that stops midway (a crash, Ctrl-C, an
error) loses nothing: at worst a message is on both queues, and the consumer's writes are
idempotent by event id. This works on every SQS-compatible endpoint, unlike
``StartMessageMoveTask``, which some endpoints do not implement.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from consumer.decoding import Decoder
from consumer.sources.sqs import REASON_ATTRIBUTE
from sqla_audit.errors import AuditError, ConfigurationError, TransportError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

#: SQS returns at most this many messages per receive, and takes this many per batch call.
SQS_BATCH: Final = 10
#: Seconds a listed message stays hidden while the listing runs (it is handed back at once).
LIST_VISIBILITY_SECONDS: Final = 30
#: The reason shown for a message that carries none (moved by the redrive policy).
NO_REASON: Final = "(no reason recorded: moved by the queue's redrive policy)"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter queue, with what can be read from it."""

    message_id: str
    receipt_handle: str = field(repr=False)
    body: str = field(repr=False)
    receive_count: int
    sent_at: dt.datetime | None
    reason: str
    #: ``service``, ``table``, ``record_id`` and ``event_id`` of each event the body holds
    #: (empty when it cannot be decoded)
    events: tuple[dict[str, str], ...] = ()
    #: the message attributes to carry over when the message is moved (the reason excluded)
    attributes: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "receive_count": self.receive_count,
            "sent_at": None if self.sent_at is None else self.sent_at.isoformat(),
            "reason": self.reason,
            "events": list(self.events),
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on (every field optional; all must match)."""

    #: a case-insensitive substring of the reason
    reason: str | None = None
    #: only messages first sent before this instant
    sent_before: dt.datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None and self.reason.lower() not in letter.reason.lower():
            return False
        return self.sent_before is None or (
            letter.sent_at is not None and letter.sent_at < self.sent_before
        )


@dataclass(slots=True)
class RedriveResult:
    moved: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def _summaries(body: str) -> tuple[dict[str, str], ...]:
    try:
        events = Decoder().decode(body)
    except AuditError:
        return ()
    except Exception:  # noqa: BLE001 - a listing shows what it can; decoding is best effort
        return ()
    return tuple(
        {
            "service": event.service,
            "table": event.table,
            "record_id": event.record_id,
            "event_id": str(event.event_id),
        }
        for event in events
    )


def _letter(raw: Any) -> DeadLetter:
    attributes = dict(raw.get("MessageAttributes") or {})
    reason_attr = attributes.pop(REASON_ATTRIBUTE, None)
    reason = reason_attr.get("StringValue") if isinstance(reason_attr, dict) else None
    system = raw.get("Attributes") or {}
    sent_ms = system.get("SentTimestamp")
    body = raw.get("Body") or ""
    return DeadLetter(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=body,
        receive_count=int(system.get("ApproximateReceiveCount", 0)),
        sent_at=(
            None if sent_ms is None else dt.datetime.fromtimestamp(int(sent_ms) / 1000, tz=dt.UTC)
        ),
        reason=reason or NO_REASON,
        events=_summaries(body),
        attributes=attributes,
    )


class DeadLetterQueue:
    """Lists and redrives the messages of one dead-letter queue."""

    def __init__(self, client: SQSClient, url: str, *, wait_seconds: int = 1) -> None:
        self._client = client
        self.url = url
        self._wait = wait_seconds

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        from botocore.exceptions import (  # noqa: PLC0415
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        try:
            return call()
        except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
            raise ConfigurationError(
                f"{what} on {self.url}: {exc}; set AWS credentials and a region "
                "(AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION)"
            ) from exc
        except (BotoCoreError, ClientError) as exc:
            raise TransportError(f"{what} on {self.url} failed: {exc}") from exc

    def _receive(self) -> list[DeadLetter]:
        response = self._call(
            "receive",
            lambda: self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=SQS_BATCH,
                WaitTimeSeconds=self._wait,
                VisibilityTimeout=LIST_VISIBILITY_SECONDS,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            ),
        )
        return [_letter(raw) for raw in response.get("Messages", [])]

    def _hand_back(self, letters: Sequence[DeadLetter]) -> None:
        for start in range(0, len(letters), SQS_BATCH):
            chunk = letters[start : start + SQS_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                for i, letter in enumerate(chunk)
            ]
            try:
                self._call(
                    "hand back",
                    lambda entries=entries: self._client.change_message_visibility_batch(  # type: ignore[misc]
                        QueueUrl=self.url, Entries=entries
                    ),
                )
            except TransportError as exc:  # they reappear after the listing's timeout
                log.warning("could not hand %d message(s) back: %s", len(chunk), exc)

    def _scan(self) -> Iterator[list[DeadLetter]]:
        """Batches of distinct messages, each kept hidden until the caller settles it.

        Ends when a receive brings nothing new (a message whose listing visibility ran out
        during a long scan comes back, and is recognised by its id).
        """
        seen: set[str] = set()
        while True:
            batch = [letter for letter in self._receive() if letter.message_id not in seen]
            if not batch:
                return
            seen.update(letter.message_id for letter in batch)
            yield batch

    def browse(
        self, selection: Selection | None = None, *, limit: int | None = None
    ) -> list[DeadLetter]:
        """The messages of the queue (at most ``limit``), handed back before returning."""
        chosen = selection or Selection()
        found: list[DeadLetter] = []
        held: list[DeadLetter] = []
        try:
            for batch in self._scan():
                held.extend(batch)
                found.extend(letter for letter in batch if chosen.matches(letter))
                if limit is not None and len(found) >= limit:
                    break
        finally:
            self._hand_back(held)
        return found[:limit] if limit is not None else found

    def redrive(
        self,
        target_url: str,
        selection: Selection | None = None,
        *,
        limit: int | None = None,
        progress: Callable[[DeadLetter], None] | None = None,
    ) -> RedriveResult:
        """Move the chosen messages to ``target_url``: send each, then delete it here."""
        chosen = selection or Selection()
        result = RedriveResult()
        held: list[DeadLetter] = []
        try:
            for batch in self._scan():
                for letter in batch:
                    if not chosen.matches(letter) or (limit is not None and result.moved >= limit):
                        held.append(letter)
                        result.skipped += 1
                        continue
                    try:
                        self._move(letter, target_url)
                    except TransportError as exc:
                        held.append(letter)
                        result.failed.append((letter.message_id, str(exc)))
                        continue
                    result.moved += 1
                    if progress is not None:
                        progress(letter)
        finally:
            self._hand_back(held)
        return result

    def _move(self, letter: DeadLetter, target_url: str) -> None:
        send: dict[str, Any] = {"QueueUrl": target_url, "MessageBody": letter.body}
        if letter.attributes:
            send["MessageAttributes"] = letter.attributes
        self._call("send", lambda: self._client.send_message(**send))
        self._call(
            "delete",
            lambda: self._client.delete_message(
                QueueUrl=self.url, ReceiptHandle=letter.receipt_handle
            ),
        )


def render_json(letters: Sequence[DeadLetter]) -> str:
    return json.dumps([letter.to_json() for letter in letters], indent=2)


__all__ = [
    "LIST_VISIBILITY_SECONDS",
    "NO_REASON",
    "DeadLetter",
    "DeadLetterQueue",
    "RedriveResult",
    "Selection",
    "render_json",
]
