"""The wire text of change events: the envelope's JSON written field by field, in its order.

Every event's text is ``json.dumps(event.to_dict(), separators=(",", ":"),
ensure_ascii=False)`` byte for byte; this module writes it without building that dictionary.
The fields the events of one transaction share (``committed_at``, ``service``,
``transaction_id``, ``schema_version``) are encoded once per transaction
(:class:`TransactionText`); an event's own mappings (``primary_key``, ``before``, ``after``)
and names go through the standard library's C JSON encoder in one call per event; the rest
is string concatenation. :meth:`ChangeEvent.to_json <sqla_audit.events.ChangeEvent.to_json>`
and the outbox writer both use it, so the field order is written in one place
(:meth:`TransactionText.text`).

Order of the fields: ``schema_version``, ``event_id``, ``occurred_at``, ``committed_at``,
``service``, ``table``, ``record_id``, ``previous_record_id``, ``primary_key``,
``operation``, ``before``, ``after``, ``changed_columns``, ``masked_columns``, ``actor``,
``request_id``, ``transaction_id``, ``sequence``, ``metadata``, then, on signed events only,
``transaction_event_count`` and ``signature``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Final, Protocol

from sqla_audit.serialization import JSONValue
from sqla_audit.signing import EVENT_COUNT_FIELD, SIGNATURE_FIELD

#: One encoder for every event (``json.dumps`` with options builds a new one per call).
#: Event data is a tree of plain JSON values (encoded column values, never shared back
#: up the tree), so the encoder's cycle check would only cost time.
ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def _make_encode() -> Callable[[Any], str]:
    """``ENCODER.encode`` without the per-call set-up: the C encoder ``json`` itself builds
    on each call, built once with the same settings (checked on a probe value), or
    ``ENCODER.encode`` where there is no C encoder."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover -- CPython always has it
        return ENCODER.encode
    c_encoder = c_make_encoder(
        None,
        ENCODER.default,
        encode_basestring,
        None,
        ENCODER.key_separator,
        ENCODER.item_separator,
        ENCODER.sort_keys,
        ENCODER.skipkeys,
        ENCODER.allow_nan,
    )

    def encode(value: Any) -> str:
        return "".join(c_encoder(value, 0))

    probe = {"s": 'é\u2028\x00"\\\ud800', "n": [1, -2.5, 1e16, float("nan"), True, None], "o": {}}
    try:
        same = encode(probe) == ENCODER.encode(probe)
    except Exception:  # noqa: BLE001 -- a C encoder of another signature  # pragma: no cover
        same = False
    return encode if same else ENCODER.encode


#: ``ENCODER.encode``, faster: the JSON text of a value.
encode_json: Final = _make_encode()


def format_timestamp(value: dt.datetime) -> str:
    """UTC, microsecond precision, ``Z`` suffix: ``2026-01-31T12:00:00.000001Z``."""
    if value.tzinfo is dt.UTC:  # the common case, without strftime
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    if value.tzinfo is None:
        raise ValueError("event timestamps must be timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LastFormatted:
    """:func:`format_timestamp` remembering the last datetime object it formatted.

    The events of one transaction share one ``committed_at`` object (and those of one
    flush one ``occurred_at``), so rendering a transaction formats each once. The entry
    holds a reference to the object, so an identity match is never another datetime; it
    is one tuple, replaced whole, so any thread may read it.
    """

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        self._entry: tuple[dt.datetime | None, str] = (None, "")

    def __call__(self, value: dt.datetime) -> str:
        entry = self._entry
        if entry[0] is value:
            return entry[1]
        text = format_timestamp(value)
        self._entry = (value, text)
        return text


format_occurred: Final = LastFormatted()
format_committed: Final = LastFormatted()

#: A mapping as a ``dict`` the encoder accepts (:func:`sqla_audit.events._plain`).
Plain = Callable[[Mapping[str, JSONValue]], dict[str, JSONValue]]


class Signed(Protocol):
    """What the text needs of an event's signature (:class:`~sqla_audit.signing.EventSignature`)."""

    def to_dict(self) -> dict[str, str]: ...


class ActorLike(Protocol):
    """What the text needs of an actor (:class:`~sqla_audit.events.Actor`)."""

    def to_dict(self) -> dict[str, JSONValue]: ...


class EventBody(Protocol):
    """The fields of an event that are its own, as a :class:`~sqla_audit.events.ChangeEvent`
    and a captured :class:`~sqla_audit.changes.RowChange` both hold them."""

    @property
    def occurred_at(self) -> dt.datetime: ...
    @property
    def table(self) -> str: ...
    @property
    def record_id(self) -> str: ...
    @property
    def previous_record_id(self) -> str | None: ...
    @property
    def primary_key(self) -> Mapping[str, JSONValue]: ...
    @property
    def operation(self) -> str: ...
    @property
    def before(self) -> Mapping[str, JSONValue] | None: ...
    @property
    def after(self) -> Mapping[str, JSONValue] | None: ...
    @property
    def changed_columns(self) -> Sequence[str]: ...
    @property
    def masked_columns(self) -> Sequence[str]: ...
    @property
    def actor(self) -> ActorLike | None: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def metadata(self) -> Mapping[str, JSONValue]: ...


def _integer(value: int) -> str:
    return str(value) if type(value) is int else encode_json(value)


def _string(value: str | None) -> str:
    if type(value) is str:
        return encode_basestring(value)
    return encode_json(value)


class TransactionText:
    """Writes the wire texts of the events of one transaction.

    What every event of the transaction holds alike is encoded once, here. Immutable
    once built (its parts are strings), so one instance may serve any number of events
    and threads.
    """

    __slots__ = ("_committed", "_head", "_plain", "_transaction")

    def __init__(
        self,
        *,
        committed_at: dt.datetime,
        service: str,
        transaction_id: str,
        plain: Plain,
        schema_version: int = 1,
    ) -> None:
        self._head = '{"schema_version":' + _integer(schema_version) + ',"event_id":"'
        self._committed = (
            '","committed_at":"'
            + format_timestamp(committed_at)
            + '","service":'
            + _string(service)
            + ","
        )
        self._transaction = ',"transaction_id":' + _string(transaction_id) + ',"sequence":'
        self._plain = plain

    def actor_text(self, actor: ActorLike | None) -> str:
        """The JSON of an ``actor`` field."""
        return "null" if actor is None else encode_json(actor.to_dict())

    def metadata_text(self, metadata: Mapping[str, JSONValue]) -> str:
        """The JSON of a ``metadata`` field."""
        return encode_json(self._plain(metadata))

    def text(
        self,
        body: EventBody,
        event_id: str,
        sequence: int,
        actor: str,
        metadata: str,
        *,
        signature: str = "",
    ) -> str:
        """One event's wire text. ``actor`` and ``metadata`` are :meth:`actor_text` and
        :meth:`metadata_text` of the body's (the caller may reuse them while they are the
        same objects); ``signature`` is :func:`signature_text` of a signed event."""
        plain = self._plain
        before = body.before
        after = body.after
        own = encode_json(
            {
                "table": body.table,
                "record_id": body.record_id,
                "previous_record_id": body.previous_record_id,
                "primary_key": plain(body.primary_key),
                "operation": body.operation,
                "before": None if before is None else plain(before),
                "after": None if after is None else plain(after),
                "changed_columns": body.changed_columns,
                "masked_columns": body.masked_columns,
            }
        )
        request_id = body.request_id
        return "".join(
            (
                self._head,
                event_id,
                '","occurred_at":"',
                format_occurred(body.occurred_at),
                self._committed,
                own[1:-1],
                ',"actor":',
                actor,
                ',"request_id":',
                "null" if request_id is None else _string(request_id),
                self._transaction,
                _integer(sequence),
                ',"metadata":',
                metadata,
                signature,
                "}",
            )
        )

    def texts(
        self, bodies: Sequence[EventBody], event_ids: Sequence[str], first_sequence: int = 0
    ) -> list[str]:
        """The texts of unsigned events: ``bodies[i]`` with ``event_ids[i]`` and sequence
        ``first_sequence + i``. An actor or metadata mapping that is the same object as the
        previous body's is encoded once (nothing runs between two events that could change
        it)."""
        texts: list[str] = []
        actor_of: object = texts  # never an actor
        metadata_of: object = texts
        actor = metadata = ""
        sequence = first_sequence
        for body, event_id in zip(bodies, event_ids, strict=True):
            if body.actor is not actor_of:
                actor_of = body.actor
                actor = self.actor_text(body.actor)
            if body.metadata is not metadata_of:
                metadata_of = body.metadata
                metadata = self.metadata_text(body.metadata)
            texts.append(self.text(body, event_id, sequence, actor, metadata))
            sequence += 1
        return texts


def signature_text(count: int | None, signature: Signed | None) -> str:
    """The signature fields of an event (with their leading comma), ``""`` when unsigned."""
    text = ""
    if count is not None:
        text = f',"{EVENT_COUNT_FIELD}":{_integer(count)}'
    if signature is not None:
        text += f',"{SIGNATURE_FIELD}":{encode_json(signature.to_dict())}'
    return text


__all__ = [
    "ENCODER",
    "EventBody",
    "LastFormatted",
    "TransactionText",
    "encode_json",
    "format_committed",
    "format_occurred",
    "format_timestamp",
    "signature_text",
]
