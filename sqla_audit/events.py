"""The change-event envelope, version 1: the wire contract between producer and consumer.

One :class:`ChangeEvent` describes one changed row. It is plain JSON data (values are
already encoded by :mod:`sqla_audit.serialization`), so it can be written to SNS, an outbox
row or a file and read back by any consumer. ``docs/event-schema.md`` documents every field;
``sqla_audit/schema/change-event-v1.schema.json`` is the JSON Schema.

Record ids. ``record_id`` is a canonical string built from the primary key values in the
mapper's primary-key column order:

* one key column: the value's canonical text (``42``, ``alice``, a UUID in lowercase
  hyphenated form, a date in ISO 8601, a Decimal as ``str()``);
* several key columns: each component's canonical text with ``%`` and ``:`` percent-encoded
  (``%25``, ``%3A``), joined by ``:`` -- ``7:2026-01-01``;
* a table without a primary key: the same composite form over every column.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from sqla_audit.errors import DecodeError, UnsupportedSchemaVersion
from sqla_audit.lazy_images import LazyImage
from sqla_audit.serialization import JSONValue, escape_surrogates, is_plain_text
from sqla_audit.signing import EVENT_COUNT_FIELD, SIGNATURE_FIELD, EventSignature
from sqla_audit.wire_checks import (
    check_row,
    checked_event_count,
    checked_names,
    checked_text,
    checked_uuid,
    invalid,
    json_text_is_plain,
    loads_wire_json,
    optional_text,
    preview,
)
from sqla_audit.wire_limits import (
    MAX_EVENT_TIME,
    MAX_IDENTIFIER_CHARS,
    MAX_NAME_CHARS,
    MAX_RECORD_ID_CHARS,
    MAX_SEQUENCE,
    MIN_EVENT_TIME,
)
from sqla_audit.wire_text import TransactionText, format_timestamp, signature_text
from sqla_audit.wire_text import format_committed as _format_committed
from sqla_audit.wire_text import format_occurred as _format_occurred

SCHEMA_VERSION: Final = 1

#: ``record_id`` of a *marker*: an event about rows of ``table`` that one bulk statement
#: changed but that are not described one by one (see docs/event-schema.md, *Markers*).
MARKER_RECORD_ID: Final = "*"

#: ``metadata`` key holding a marker's description (reason, row counts, statement text).
MARKER_METADATA_KEY: Final = "sqla_audit.bulk"


class Operation(StrEnum):
    """What happened to the row."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made the change: an id plus optional attributes (name, roles, tenant...)."""

    id: str
    attributes: Mapping[str, JSONValue] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JSONValue]:
        return {"id": self.id, "attributes": dict(self.attributes)}

    @classmethod
    def from_dict(cls, data: Any, *, values_checked: bool = False) -> Actor | None:
        """Validate and build an actor (``None`` for ``null``); :class:`DecodeError` says why.

        ``values_checked``: as for :meth:`ChangeEvent.from_dict`.
        """
        if data is None:
            return None
        if type(data) is not dict or type(data.get("id")) is not str:
            raise DecodeError(
                f"invalid change event: actor must be an object with a string 'id', "
                f"got {preview(data)}"
            )
        identity = checked_text(data, "id", "actor.id", MAX_IDENTIFIER_CHARS)
        attributes = data.get("attributes")
        if attributes is None:
            attributes = {}
        elif type(attributes) is not dict:
            raise invalid("actor.attributes", f"must be an object, got {preview(attributes)}")
        elif not values_checked:
            check_row(attributes, "actor.attributes")
        return cls(id=identity, attributes=attributes)


# --------------------------------------------------------------------------- ids and time

_uuid7_lock = threading.Lock()
_uuid7_last: list[int] = [0, 0]  # [unix_ms, counter]


def new_event_id() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), monotonic within the process.

    48 bits of Unix milliseconds, then a 12-bit counter that orders ids made in the same
    millisecond (seeded at random each new millisecond, in its lower half so it rarely
    overflows), then 62 random bits.
    """
    return new_event_ids(1)[0]


def new_event_ids(count: int) -> list[uuid.UUID]:
    """``count`` ids, each as :func:`new_event_id` makes them, in increasing order.

    One system call for the random bits and one lock for the whole batch: a transaction
    needs an id per event.
    """
    return [uuid.UUID(int=value) for value in _new_id_values(count)]


def new_event_id_texts(count: int) -> list[str]:
    """:func:`new_event_ids` as their canonical texts (``str(uuid)``), without making the
    UUID objects: what the outbox writes."""
    texts: list[str] = []
    for value in _new_id_values(count):
        h = f"{value:032x}"
        texts.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return texts


def _new_id_values(count: int) -> list[int]:
    if count <= 0:
        return []
    pool = os.urandom(10 * count)  # 10 random bytes per id, one system call
    values: list[int] = []
    with _uuid7_lock:
        last_ms, counter = _uuid7_last
        for index in range(0, 10 * count, 10):
            entropy = int.from_bytes(pool[index : index + 10], "big")
            now_ms = time.time_ns() // 1_000_000
            if now_ms <= last_ms:
                counter += 1
                if counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                    last_ms += 1
                    counter = 0
                now_ms = last_ms
            else:
                counter = (entropy >> 62) & 0x3FF
            last_ms = now_ms
            values.append(
                ((now_ms & 0xFFFF_FFFF_FFFF) << 80)
                | (0x7 << 76)
                | (counter << 64)
                | (0b10 << 62)
                | (entropy & 0x3FFF_FFFF_FFFF_FFFF)
            )
        _uuid7_last[0], _uuid7_last[1] = last_ms, counter
    return values


def uuid7_time(event_id: uuid.UUID) -> dt.datetime:
    """The millisecond timestamp embedded in a version 7 UUID."""
    return dt.datetime.fromtimestamp((event_id.int >> 80) / 1000, tz=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_timestamp(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return value.astimezone(dt.UTC)


# --------------------------------------------------------------------------- record ids


def canonical_key_text(value: Any) -> str:
    """The canonical text of one primary-key component.

    Text holding surrogate code points (not valid Unicode, so not storable as a record id
    anywhere) has each written as its escape, ``\\ud800``: readable and valid, though not
    reversible -- the exact value travels in ``primary_key`` (see
    :func:`sqla_audit.serialization.escape_surrogates`).
    """
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str:  # most keys; subclasses (bool, Enum) take the checks below
        return value if is_plain_text(value) else escape_surrogates(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "value") and hasattr(value, "name") and type(value).__module__ != "builtins":
        # Enum members: their value's text
        return canonical_key_text(value.value)
    return canonical_key_text(str(value))


def _escape(component: str) -> str:
    return component.replace("%", "%25").replace(":", "%3A")


def _unescape(component: str) -> str:
    return component.replace("%3A", ":").replace("%25", "%")


def make_record_id(values: Sequence[Any]) -> str:
    """Build the canonical ``record_id`` from primary-key values in key column order."""
    if len(values) == 1:
        return canonical_key_text(values[0])
    return ":".join(_escape(canonical_key_text(v)) for v in values)


def split_record_id(record_id: str, arity: int) -> list[str]:
    """Split a composite ``record_id`` back into its canonical component texts."""
    if arity == 1:
        return [record_id]
    parts = record_id.split(":")
    if len(parts) != arity:
        raise ValueError(f"record id {record_id!r} does not have {arity} components")
    return [_unescape(p) for p in parts]


# --------------------------------------------------------------------------- strict decode

_OPERATIONS: Final = {op.value: op for op in Operation}


def _timestamp(data: dict[str, Any], field: str) -> dt.datetime:
    text = data[field]
    if type(text) is not str:
        raise invalid(field, f"must be a timestamp string, got {preview(text)}")
    try:
        value = parse_timestamp(text)
    except (ValueError, OverflowError) as exc:
        raise invalid(field, f"is not a valid UTC timestamp: {exc}") from exc
    if not MIN_EVENT_TIME <= value < MAX_EVENT_TIME:
        raise invalid(
            field,
            f"{text!r} is outside the supported range "
            f"[{MIN_EVENT_TIME.isoformat()}, {MAX_EVENT_TIME.isoformat()})",
        )
    return value


# --------------------------------------------------------------------------- the envelope


def _plain(mapping: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """``mapping`` as a ``dict`` the JSON encoder accepts, copied only when it is not one
    (a :class:`~sqla_audit.lazy_images.LazyImage` gives its own, encoded on first use)."""
    if type(mapping) is dict:
        return mapping
    if type(mapping) is LazyImage:
        return mapping.as_dict()
    return dict(mapping)


def transaction_text(
    committed_at: dt.datetime,
    service: str,
    transaction_id: str,
    schema_version: int = SCHEMA_VERSION,
) -> TransactionText:
    """The writer of the wire texts of one transaction's events (:mod:`sqla_audit.wire_text`)."""
    return TransactionText(
        committed_at=committed_at,
        service=service,
        transaction_id=transaction_id,
        plain=_plain,
        schema_version=schema_version,
    )


#: ``(committed_at, transaction_id, service, schema_version, text)`` of the last transaction
#: :meth:`ChangeEvent.to_json` wrote: the events of one transaction share those objects, so
#: their common fields are encoded once. One tuple, replaced whole (any thread may read
#: it); it holds only immutable values, so a match by identity is always right.
_last_transaction: list[tuple[Any, ...]] = [(None, None, None, None, None)]


def _transaction_text(event: ChangeEvent) -> TransactionText:
    entry = _last_transaction[0]
    if (
        entry[0] is event.committed_at
        and entry[1] is event.transaction_id
        and entry[2] == event.service
        and entry[3] == event.schema_version
    ):
        text: TransactionText = entry[4]
        return text
    text = transaction_text(
        event.committed_at, event.service, str(event.transaction_id), event.schema_version
    )
    _last_transaction[0] = (
        event.committed_at,
        event.transaction_id,
        event.service,
        event.schema_version,
        text,
    )
    return text


#: The (empty) signature fields of an unsigned event; never changed.
_NO_FIELDS: Final[dict[str, JSONValue]] = {}

_REQUIRED: Final = (
    "schema_version",
    "event_id",
    "occurred_at",
    "committed_at",
    "service",
    "table",
    "record_id",
    "primary_key",
    "operation",
    "before",
    "after",
    "changed_columns",
    "transaction_id",
    "sequence",
)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One changed row, as it travels on the wire (values already type-tagged)."""

    event_id: uuid.UUID
    occurred_at: dt.datetime
    committed_at: dt.datetime
    service: str
    table: str
    record_id: str
    primary_key: Mapping[str, JSONValue]
    operation: Operation
    before: Mapping[str, JSONValue] | None
    after: Mapping[str, JSONValue] | None
    changed_columns: Sequence[str]
    transaction_id: uuid.UUID
    sequence: int
    actor: Actor | None = None
    request_id: str | None = None
    previous_record_id: str | None = None
    masked_columns: Sequence[str] = ()
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: Signed events only (see :mod:`sqla_audit.signing`): how many events the transaction
    #: has, and the signature. ``None`` on unsigned events, whose wire form lacks both.
    transaction_event_count: int | None = None
    signature: EventSignature | None = None

    def __post_init__(self) -> None:
        # Sequences are stored as tuples so equal events compare equal however built.
        if type(self.changed_columns) is not tuple:
            object.__setattr__(self, "changed_columns", tuple(self.changed_columns))
        if type(self.masked_columns) is not tuple:
            object.__setattr__(self, "masked_columns", tuple(self.masked_columns))

    # -- wire form ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, JSONValue]:
        """The wire form as new JSON data (mappings copied: the caller may change it)."""
        return {
            "schema_version": self.schema_version,
            "event_id": str(self.event_id),
            "occurred_at": _format_occurred(self.occurred_at),
            "committed_at": _format_committed(self.committed_at),
            "service": self.service,
            "table": self.table,
            "record_id": self.record_id,
            "previous_record_id": self.previous_record_id,
            "primary_key": dict(self.primary_key),
            "operation": self.operation.value,
            "before": None if self.before is None else dict(self.before),
            "after": None if self.after is None else dict(self.after),
            "changed_columns": list(self.changed_columns),
            "masked_columns": list(self.masked_columns),
            "actor": None if self.actor is None else self.actor.to_dict(),
            "request_id": self.request_id,
            "transaction_id": str(self.transaction_id),
            "sequence": self.sequence,
            "metadata": dict(self.metadata),
            **self._signature_fields(),
        }

    def _signature_fields(self) -> dict[str, JSONValue]:
        """The wire fields of a signed event (none for an unsigned one)."""
        if self.transaction_event_count is None and self.signature is None:
            return _NO_FIELDS
        fields: dict[str, JSONValue] = {}
        if self.transaction_event_count is not None:
            fields[EVENT_COUNT_FIELD] = self.transaction_event_count
        if self.signature is not None:
            fields[SIGNATURE_FIELD] = dict(self.signature.to_dict())
        return fields

    def to_json(self) -> str:
        """The wire text: :meth:`to_dict` as compact JSON, written by
        :class:`~sqla_audit.wire_text.TransactionText` without copying mappings."""
        text = _transaction_text(self)
        return text.text(
            self,
            str(self.event_id),
            self.sequence,
            text.actor_text(self.actor),
            text.metadata_text(self.metadata),
            signature=signature_text(self.transaction_event_count, self.signature),
        )

    @classmethod
    def from_dict(cls, data: Any, *, values_checked: bool = False) -> ChangeEvent:
        """Validate and build an event; :class:`DecodeError` names the field and the reason.

        Strict: every field has its documented JSON type, integers and timestamps are in
        the range every store holds, strings are valid Unicode (no lone surrogates, in
        values and keys at any depth), names and nesting within the bounds of
        :mod:`sqla_audit.wire_limits`.

        ``values_checked=True`` skips walking the values of ``primary_key``, ``before``,
        ``after``, ``metadata`` and ``actor.attributes``: pass it only for data just parsed
        by :func:`loads_wire_json` from a text for which :func:`json_text_is_plain` returned
        True (then no value holds a lone surrogate, a non-finite number or deep nesting).
        """
        if type(data) is not dict:
            raise DecodeError(f"a change event is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if type(version) is not int or version != SCHEMA_VERSION:
            if type(version) is int:
                raise UnsupportedSchemaVersion(
                    f"schema_version {version} is not supported (this reader knows "
                    f"{SCHEMA_VERSION})"
                )
            raise DecodeError(f"missing or invalid schema_version: {preview(version)}")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise DecodeError(f"change event lacks field(s): {', '.join(missing)}")
        operation_text = data["operation"]
        if type(operation_text) is not str or operation_text not in _OPERATIONS:
            raise invalid(
                "operation",
                f"must be one of insert, update, delete, got {preview(operation_text)}",
            )
        operation = _OPERATIONS[operation_text]
        primary_key = data["primary_key"]
        if type(primary_key) is not dict:
            raise invalid("primary_key", f"must be an object, got {preview(primary_key)}")
        if not values_checked:
            check_row(primary_key, "primary_key")
        before = data["before"]
        after = data["after"]
        for name, row in (("before", before), ("after", after)):
            if row is not None:
                if type(row) is not dict:
                    raise invalid(name, f"must be an object or null, got {preview(row)}")
                if not values_checked:
                    check_row(row, name)
        if operation is Operation.INSERT and after is None:
            raise DecodeError("an insert event needs 'after'")
        if operation is Operation.DELETE and before is None:
            raise DecodeError("a delete event needs 'before'")
        if operation is Operation.UPDATE and (before is None or after is None):
            raise DecodeError("an update event needs 'before' and 'after'")
        sequence = data["sequence"]
        if type(sequence) is not int or not 0 <= sequence <= MAX_SEQUENCE:
            raise invalid(
                "sequence", f"must be an integer from 0 to {MAX_SEQUENCE}, got {preview(sequence)}"
            )
        metadata = data.get("metadata")
        if metadata is None:
            metadata = {}
        elif type(metadata) is not dict:
            raise invalid("metadata", f"must be an object, got {preview(metadata)}")
        elif not values_checked:
            check_row(metadata, "metadata")
        masked = data.get("masked_columns")
        signature = data.get(SIGNATURE_FIELD)
        count = checked_event_count(data, EVENT_COUNT_FIELD, sequence)
        if signature is not None and count is None:
            raise invalid(EVENT_COUNT_FIELD, "is required on a signed event")
        return cls(
            schema_version=SCHEMA_VERSION,
            event_id=checked_uuid(data, "event_id"),
            occurred_at=_timestamp(data, "occurred_at"),
            committed_at=_timestamp(data, "committed_at"),
            service=checked_text(data, "service", "service", MAX_NAME_CHARS),
            table=checked_text(data, "table", "table", MAX_NAME_CHARS),
            record_id=checked_text(data, "record_id", "record_id", MAX_RECORD_ID_CHARS),
            previous_record_id=optional_text(data, "previous_record_id", MAX_RECORD_ID_CHARS),
            primary_key=primary_key,
            operation=operation,
            before=before,
            after=after,
            changed_columns=checked_names(data["changed_columns"], "changed_columns"),
            masked_columns=() if masked is None else checked_names(masked, "masked_columns"),
            actor=Actor.from_dict(data.get("actor"), values_checked=values_checked),
            request_id=optional_text(data, "request_id", MAX_IDENTIFIER_CHARS),
            transaction_id=checked_uuid(data, "transaction_id"),
            sequence=sequence,
            metadata=metadata,
            transaction_event_count=count,
            signature=None if signature is None else EventSignature.from_dict(signature),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ChangeEvent:
        """Parse (:func:`loads_wire_json`) and validate one event's wire text."""
        try:
            data = loads_wire_json(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"not JSON: {exc}") from exc
        return cls.from_dict(data, values_checked=json_text_is_plain(text))

    # -- helpers -----------------------------------------------------------------------

    @property
    def is_marker(self) -> bool:
        """True for a bulk-statement marker (rows changed but not itemized), not a row."""
        return self.record_id == MARKER_RECORD_ID and MARKER_METADATA_KEY in self.metadata


__all__ = [
    "MARKER_METADATA_KEY",
    "MARKER_RECORD_ID",
    "SCHEMA_VERSION",
    "Actor",
    "ChangeEvent",
    "Operation",
    "canonical_key_text",
    "format_timestamp",
    "json_text_is_plain",
    "loads_wire_json",
    "make_record_id",
    "new_event_id",
    "new_event_id_texts",
    "new_event_ids",
    "parse_timestamp",
    "split_record_id",
    "transaction_text",
    "utcnow",
    "uuid7_time",
]
