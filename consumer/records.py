"""What the audit store keeps for one change event: :class:`AuditRecord`.

A record is the consumer's view of a :class:`~sqla_audit.events.ChangeEvent` after the diff:
who changed which row, when, in which transaction, and exactly which columns went from what
to what. It also keeps the full ``before`` and ``after`` rows so that "the state of record X
as of time t" is a single partition read (the newest record at or before t) rather than a
replay of the whole history.

Values stay in their wire encoding (type-tagged JSON, see :mod:`sqla_audit.serialization`),
so a store never has to know a column's Python type and every store returns exactly what was
sent. :func:`record_to_row` / :func:`record_from_row` turn a record into flat columns (JSON
text for the structured parts) for stores that persist rows, so all stores agree on the
stored form.

Ordering. Every store returns history newest first by ``(event time in milliseconds,
event_id)``. Milliseconds, because that is the precision of a Cassandra ``timestamp`` (the
clustering column of the primary table); the exact microsecond time is kept beside it and
returned in :attr:`AuditRecord.event_time`. ``event_id`` is a version 7 UUID, so within a
millisecond it breaks ties in creation order (it is stored as ``uuid``, not ``timeuuid``:
Cassandra's ``timeuuid`` accepts only version 1).

Changed primary keys. An update that moves a row to a new key arrives as one event under the
*new* record id (``previous_record_id`` names the old one). The differ then also makes a
*departure* record under the old id: operation ``delete``, ``before`` the old row, ``after``
``None``, and two metadata entries -- :data:`MOVED_TO_KEY` (the new record id) and
:data:`MOVE_EVENT_KEY` (the real event's id). Its ``event_id`` is
:func:`departure_event_id` of the real one: deterministic, so a redelivered event rewrites
the same departure row, and time-ordered like the original. :attr:`AuditRecord.moved_to`
recognises a departure only when that derivation checks out, so metadata that merely
carries the same keys (producers' metadata is free-form) is never mistaken for one.
Departures live only in a record's history: the by-actor and by-transaction indexes keep the
real event alone, so a move counts once there.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from consumer.seal import Seal
from sqla_audit.errors import DecodeError
from sqla_audit.events import Operation
from sqla_audit.serialization import JSONValue
from sqla_audit.tracing import TRACE_ID_KEY
from sqla_audit.wire_limits import MAX_IDENTIFIER_CHARS

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: Metadata key of a departure record: the record id the row moved to.
MOVED_TO_KEY: Final = "sqla_audit.moved_to"

#: Metadata key of a departure record: the ``event_id`` of the update that moved the row.
MOVE_EVENT_KEY: Final = "sqla_audit.move_event_id"

#: Namespace of the name-based UUIDs that derive departure ids (never change it: stored
#: departure rows would no longer be recognised, and redelivery would duplicate them).
_DEPARTURE_NAMESPACE: Final = uuid.UUID("5b1f6c1e-8d0a-4f43-9a57-2f6f2d0c7a31")
_LOW_62: Final = (1 << 62) - 1


def departure_event_id(event_id: uuid.UUID) -> uuid.UUID:
    """The ``event_id`` of the departure record that a key-changing event leaves behind.

    Deterministic (the same input gives the same id, so replays are idempotent) and distinct
    from ``event_id``. For a version 7 id the upper 64 bits -- the millisecond and the
    counter that order ids -- are kept and only the 62 random bits are replaced by a name
    hash, so the departure sorts where the original would. Any other UUID gives a version 5
    name-based id.
    """
    derived = uuid.uuid5(_DEPARTURE_NAMESPACE, str(event_id))
    if event_id.version != 7:
        return derived
    value = (event_id.int >> 64 << 64) | (0b10 << 62) | (derived.int & _LOW_62)
    if value == event_id.int:  # a 1 in 2**62 chance; stay distinct from the original
        value ^= 1
    return uuid.UUID(int=value)


@dataclass(frozen=True, slots=True)
class NestedChange:
    """One structural difference inside a JSON or ARRAY column.

    ``path`` walks from the column value to the changed element (object keys are strings,
    array positions are ints); ``kind`` is ``changed``, ``added`` or ``removed``; ``old`` is
    ``None`` for ``added`` and ``new`` is ``None`` for ``removed``.
    """

    kind: str
    path: tuple[str | int, ...]
    old: JSONValue = None
    new: JSONValue = None

    def to_dict(self) -> dict[str, JSONValue]:
        return {"kind": self.kind, "path": list(self.path), "old": self.old, "new": self.new}

    @classmethod
    def from_dict(cls, data: Any) -> NestedChange:
        if not isinstance(data, dict) or not isinstance(data.get("path"), list):
            raise DecodeError(f"invalid nested change: {data!r}")
        return cls(
            kind=str(data.get("kind")),
            path=tuple(data["path"]),
            old=data.get("old"),
            new=data.get("new"),
        )


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One column's change: its old and new value (wire-encoded).

    For an insert ``old`` is ``None``; for a delete ``new`` is ``None``. A masked column
    carries the masked marker on both sides: the change is known, the values are not.
    ``detail`` lists the structural differences when both sides are nested values (JSON
    objects or arrays); it is empty otherwise.
    """

    old: JSONValue
    new: JSONValue
    detail: tuple[NestedChange, ...] = ()

    def to_dict(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {"old": self.old, "new": self.new}
        if self.detail:
            out["detail"] = [item.to_dict() for item in self.detail]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> FieldChange:
        if not isinstance(data, dict) or "old" not in data or "new" not in data:
            raise DecodeError(f"invalid field change: {data!r}")
        detail = data.get("detail") or ()
        return cls(
            old=data["old"],
            new=data["new"],
            detail=tuple(NestedChange.from_dict(item) for item in detail),
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored change event (see the module docstring for ordering and encoding)."""

    table: str
    record_id: str
    event_id: uuid.UUID
    #: When the change became durable: the event's ``committed_at`` (UTC, microseconds).
    event_time: dt.datetime
    #: When the application flushed the change (UTC, microseconds).
    occurred_at: dt.datetime
    operation: Operation
    service: str
    transaction_id: uuid.UUID
    sequence: int
    changes: Mapping[str, FieldChange]
    before: Mapping[str, JSONValue] | None
    after: Mapping[str, JSONValue] | None
    actor_id: str | None = None
    actor_attributes: Mapping[str, JSONValue] = field(default_factory=dict)
    request_id: str | None = None
    previous_record_id: str | None = None
    masked_columns: tuple[str, ...] = ()
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    #: The signature of a signed event and what re-checking it needs (see
    #: :mod:`consumer.seal`); ``None`` for an unsigned event and for a departure record.
    #: Stores keep it beside the record, by event id, and hand it back through their
    #: ``seals()`` method (:mod:`consumer.verify`), not on the records they read.
    seal: Seal | None = field(default=None, compare=False)

    @property
    def sort_key(self) -> tuple[int, uuid.UUID]:
        """The store order key: ``(event time in ms, event_id)``; history is newest first."""
        return (to_millis(self.event_time), self.event_id)

    @property
    def moved_to(self) -> str | None:
        """For a departure record (the row's key changed): the record id it moved to.

        ``None`` for every other record. See the module docstring for how a departure is
        recognised.
        """
        target = self.metadata.get(MOVED_TO_KEY)
        source = self.metadata.get(MOVE_EVENT_KEY)
        if (
            not isinstance(target, str)
            or not isinstance(source, str)
            or self.operation is not Operation.DELETE
        ):
            return None
        try:
            original = uuid.UUID(source)
        except ValueError:
            return None
        return target if departure_event_id(original) == self.event_id else None

    @property
    def is_departure(self) -> bool:
        """True for the record a primary-key change leaves under the old id."""
        return self.moved_to is not None

    @property
    def trace_id(self) -> str | None:
        """The OpenTelemetry trace id in :attr:`metadata` (``otel.trace_id``), if any.

        Only a non-empty string of at most ``MAX_IDENTIFIER_CHARS`` characters counts (the
        metadata is free-form); the trace view indexes exactly these records.
        """
        value = self.metadata.get(TRACE_ID_KEY)
        if isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER_CHARS:
            return value
        return None

    @property
    def day(self) -> dt.date:
        """The UTC day of :attr:`event_time` (the ``changes_by_actor`` partition)."""
        return self.event_time.astimezone(dt.UTC).date()


# --------------------------------------------------------------------------- time helpers


def to_micros(value: dt.datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def to_millis(value: dt.datetime) -> int:
    """Milliseconds since the Unix epoch, rounded down (Cassandra ``timestamp`` precision)."""
    return to_micros(value) // 1000


def from_micros(value: int) -> dt.datetime:
    """The aware UTC datetime of microseconds since the Unix epoch."""
    return _EPOCH + dt.timedelta(microseconds=value)


# --------------------------------------------------------------------------- flat rows


#: ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``, with the encoder built
#: once instead of on every call (the same text; a third cheaper for a row-sized object).
_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _object_json(value: Mapping[str, Any]) -> str:
    """Compact JSON text of a mapping, as stored in the text columns of every persistent
    store, without copying it when it already is a dict."""
    if not value:
        return "{}"
    return _ENCODE(value if type(value) is dict else dict(value))


def _load_object(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"stored {what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DecodeError(f"stored {what} is not a JSON object")
    return value


def changes_to_json(changes: Mapping[str, FieldChange]) -> str:
    return _ENCODE({name: change.to_dict() for name, change in changes.items()})


def changes_from_json(text: str) -> dict[str, FieldChange]:
    data = _load_object(text, "changes") or {}
    return {name: FieldChange.from_dict(item) for name, item in data.items()}


def record_to_row(record: AuditRecord) -> dict[str, Any]:
    """The flat, store-neutral form of a record: scalars plus JSON text columns.

    Keys: ``table_name record_id event_id event_time_us occurred_at_us operation service
    transaction_id sequence actor_id actor_attributes request_id previous_record_id
    masked_columns changes before after metadata``. UUIDs stay :class:`uuid.UUID`.
    """
    return {
        "table_name": record.table,
        "record_id": record.record_id,
        "event_id": record.event_id,
        "event_time_us": to_micros(record.event_time),
        "occurred_at_us": to_micros(record.occurred_at),
        "operation": record.operation.value,
        "service": record.service,
        "transaction_id": record.transaction_id,
        "sequence": record.sequence,
        "actor_id": record.actor_id,
        "actor_attributes": _object_json(record.actor_attributes),
        "request_id": record.request_id,
        "previous_record_id": record.previous_record_id,
        "masked_columns": _ENCODE(list(record.masked_columns)) if record.masked_columns else "[]",
        "changes": changes_to_json(record.changes),
        "before": None if record.before is None else _object_json(record.before),
        "after": None if record.after is None else _object_json(record.after),
        "metadata": _object_json(record.metadata),
    }


def record_from_row(row: Mapping[str, Any]) -> AuditRecord:
    """Rebuild a record from :func:`record_to_row`'s form; :class:`DecodeError` if corrupt."""
    try:
        masked = json.loads(row["masked_columns"] or "[]")
        return AuditRecord(
            table=row["table_name"],
            record_id=row["record_id"],
            event_id=_as_uuid(row["event_id"]),
            event_time=from_micros(int(row["event_time_us"])),
            occurred_at=from_micros(int(row["occurred_at_us"])),
            operation=Operation(row["operation"]),
            service=row["service"],
            transaction_id=_as_uuid(row["transaction_id"]),
            sequence=int(row["sequence"]),
            actor_id=row["actor_id"],
            actor_attributes=_load_object(row["actor_attributes"], "actor_attributes") or {},
            request_id=row["request_id"],
            previous_record_id=row["previous_record_id"],
            masked_columns=tuple(str(name) for name in masked),
            changes=changes_from_json(row["changes"]),
            before=_load_object(row["before"], "before"),
            after=_load_object(row["after"], "after"),
            metadata=_load_object(row["metadata"], "metadata") or {},
        )
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"corrupt stored audit record: {exc!r}") from exc


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


__all__ = [
    "MOVED_TO_KEY",
    "MOVE_EVENT_KEY",
    "AuditRecord",
    "FieldChange",
    "NestedChange",
    "changes_from_json",
    "changes_to_json",
    "departure_event_id",
    "from_micros",
    "record_from_row",
    "record_to_row",
    "to_micros",
    "to_millis",
]
