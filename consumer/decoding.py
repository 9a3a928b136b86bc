"""From a queue message body to change events.

An SQS message reaches the consumer in one of several shapes, and the decoder peels them
in order:

1. **SNS notification** -- when the queue's subscription does not use raw message delivery,
   the body is SNS's JSON envelope (``{"Type": "Notification", "Message": "...",
   "TopicArn": ...}``) and the event is the ``Message`` string. Other SNS envelope types
   (``SubscriptionConfirmation``...) are not change events and are rejected.
2. **S3 payload pointer** -- an event too large for SNS (256 KiB) is stored in S3 by the
   producer, which publishes AWS's payload-offloading pointer instead:
   ``["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": B, "s3Key": K}]``.
   The decoder parses it with :mod:`sqla_audit.offload_pointer` (the shared wire
   contract), fetches the object through a :class:`PayloadFetcher` and continues with its
   content.
3. **The event** -- one change-event object, or a JSON array of them (a producer may
   bundle the events of one transaction), each validated by
   :meth:`ChangeEvent.from_dict <sqla_audit.events.ChangeEvent.from_dict>` including its
   ``schema_version``.

A payload (the event or bundle, after unwrapping and fetching) is at most
:data:`~sqla_audit.wire_limits.MAX_PAYLOAD_BYTES`; an offloaded one is measured before it is
parsed.

With a ``verifier`` (:mod:`consumer.verification`) the decoded events must then pass the
deployment's signature policy, or :class:`~consumer.verification.SignatureError` (a
``DecodeError``) says why.

Anything else raises :class:`~sqla_audit.errors.DecodeError` (permanent: the message is
parked for the dead-letter queue and never retried here). A pointer whose object cannot be
fetched *right now* raises :class:`~sqla_audit.errors.TransportError` (retryable); one whose
object does not exist is a :class:`DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from sqla_audit.errors import DecodeError
from sqla_audit.events import ChangeEvent, json_text_is_plain, loads_wire_json
from sqla_audit.offload_pointer import POINTER_CLASS, parse_pointer
from sqla_audit.wire_limits import MAX_PAYLOAD_BYTES

if TYPE_CHECKING:
    from consumer.verification import EventVerifier

#: Largest number of events accepted in one bundled message body.
MAX_EVENTS_PER_MESSAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class S3Pointer:
    """Where an offloaded payload lives."""

    bucket: str
    key: str


class PayloadFetcher(Protocol):
    """Reads an offloaded payload (S3 in production, a dict in tests)."""

    def fetch(self, pointer: S3Pointer) -> bytes:
        """The object's bytes; raise ``DecodeError`` if it does not exist, ``TransportError``
        if it cannot be read now."""
        ...


def _check_size(payload: str | bytes, what: str) -> None:
    """Refuse a payload above :data:`MAX_PAYLOAD_BYTES` (UTF-8) before parsing it."""
    size = len(payload)
    if size * 4 > MAX_PAYLOAD_BYTES and isinstance(payload, str):
        size = len(payload.encode("utf-8", "surrogatepass"))  # only near the limit
    if size > MAX_PAYLOAD_BYTES:
        raise DecodeError(
            f"{what} is {size} bytes, above the {MAX_PAYLOAD_BYTES}-byte payload limit"
        )


def _loads(text: str | bytes, what: str) -> Any:
    try:
        return loads_wire_json(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{what} is not JSON: {exc}") from exc
    except RecursionError as exc:  # nested deeper than the parser can follow
        raise DecodeError(f"{what} is not JSON this reader can parse: {exc}") from exc


def unwrap_sns(body: str | bytes) -> tuple[str | bytes, Any]:
    """The payload of ``body`` and its parsed JSON: an SNS envelope's ``Message``, or
    ``body`` itself when it is not an envelope (raw message delivery)."""
    data = _loads(body, "message body")
    if not (isinstance(data, dict) and "Type" in data and "TopicArn" in data):
        return body, data
    if data.get("Type") != "Notification":
        raise DecodeError(f"SNS message of type {data.get('Type')!r} is not a change event")
    message = data.get("Message")
    if not isinstance(message, str):
        raise DecodeError("SNS notification has no Message string")
    return message, _loads(message, f"SNS Message (topic {data.get('TopicArn')})")


def _pointer_of(payload: str | bytes, data: Any) -> S3Pointer | None:
    if not (isinstance(data, list) and data and data[0] == POINTER_CLASS):
        return None
    bucket, key = parse_pointer(payload)  # DecodeError explains a malformed pointer
    return S3Pointer(bucket=bucket, key=key)


class Decoder:
    """Turns message bodies into change events (see the module docstring)."""

    def __init__(
        self, fetcher: PayloadFetcher | None = None, *, verifier: EventVerifier | None = None
    ) -> None:
        self._fetcher = fetcher
        #: the signature policy (:mod:`consumer.verification`); ``None``: nothing checked
        self.verifier = verifier

    def decode(self, body: str | bytes) -> list[ChangeEvent]:
        """Every event in ``body``; :class:`DecodeError` if it holds none or is malformed."""
        payload, data = unwrap_sns(body)
        pointer = _pointer_of(payload, data)
        if pointer is not None:
            if self._fetcher is None:
                raise DecodeError(
                    f"message points to s3://{pointer.bucket}/{pointer.key} but no S3 "
                    "client is configured"
                )
            payload = self._fetcher.fetch(pointer)
            _check_size(payload, "offloaded payload")
            data = _loads(payload, "offloaded payload")
            if _pointer_of(payload, data) is not None:
                raise DecodeError("offloaded payload is itself a pointer")
        else:
            _check_size(payload, "payload")
        if isinstance(data, list):
            if not data:
                raise DecodeError("message holds an empty list of events")
            if len(data) > MAX_EVENTS_PER_MESSAGE:
                raise DecodeError(
                    f"message holds {len(data)} events (at most {MAX_EVENTS_PER_MESSAGE})"
                )
            checked = json_text_is_plain(payload)
            events = [ChangeEvent.from_dict(item, values_checked=checked) for item in data]
        else:
            events = [ChangeEvent.from_dict(data, values_checked=json_text_is_plain(payload))]
        if self.verifier is not None:
            self.verifier.check(events)  # SignatureError: refused by the signature policy
        return events


__all__ = [
    "MAX_EVENTS_PER_MESSAGE",
    "Decoder",
    "PayloadFetcher",
    "S3Pointer",
    "unwrap_sns",
]
