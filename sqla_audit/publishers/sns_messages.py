"""The message of one change event on SNS: body, routing attributes, FIFO ids."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Final

from sqla_audit.errors import DecodeError
from sqla_audit.events import ChangeEvent

#: Longest FIFO ``MessageGroupId`` / ``MessageDeduplicationId``.
FIFO_ID_MAX_LENGTH: Final = 128

#: Characters SNS accepts in FIFO group and deduplication ids: ASCII letters, digits and
#: punctuation (no space).
_FIFO_ID_RE: Final = re.compile(r"[!-~]+")


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


def attributes_size(attributes: dict[str, dict[str, str]]) -> int:
    # SNS counts the attribute name, data type and value toward the message size.
    return sum(
        len(name.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
        for name, a in attributes.items()
    )


__all__ = [
    "FIFO_ID_MAX_LENGTH",
    "OutgoingMessage",
    "attributes_size",
    "fifo_id",
    "message_attributes",
]
