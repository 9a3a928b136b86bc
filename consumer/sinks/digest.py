"""Content digests: what tells a redelivery (same ``event_id``, same content) from a conflict.

Every store keeps the digest of each stored record and compares it with the digest of a
record written again under the same ``event_id`` (:func:`content_digest`); a difference is a
conflict (:func:`conflict`), and the stored record is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Final

from consumer.records import AuditRecord, to_micros
from consumer.sinks.errors import RecordConflict, RecordRejected
from sqla_audit.wire_limits import (
    MAX_EVENT_TIME,
    MAX_IDENTIFIER_CHARS,
    MAX_NAME_CHARS,
    MAX_RECORD_ID_CHARS,
    MAX_SEQUENCE,
    MIN_EVENT_TIME,
)

#: ``json.dumps`` options of the canonical content: sorted keys, compact, UTF-8 text, and
#: no NaN/Infinity (not JSON).
_CANONICAL: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _check_storable(record: AuditRecord) -> None:
    """Refuse, as every store would, a record outside :mod:`sqla_audit.wire_limits`."""
    if type(record.sequence) is not int or not 0 <= record.sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {record.sequence!r} is outside 0..{MAX_SEQUENCE}")
    for name, value, limit in (
        ("service", record.service, MAX_NAME_CHARS),
        ("table", record.table, MAX_NAME_CHARS),
        ("record_id", record.record_id, MAX_RECORD_ID_CHARS),
        ("previous_record_id", record.previous_record_id, MAX_RECORD_ID_CHARS),
        ("actor_id", record.actor_id, MAX_IDENTIFIER_CHARS),
        ("request_id", record.request_id, MAX_IDENTIFIER_CHARS),
    ):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise ValueError(f"{name} is not a string of at most {limit} characters")
    for name, moment in (("event_time", record.event_time), ("occurred_at", record.occurred_at)):
        if not MIN_EVENT_TIME <= moment < MAX_EVENT_TIME:
            raise ValueError(f"{name} {moment.isoformat()} is outside the supported range")


def content_digest(record: AuditRecord) -> bytes:
    """SHA-256 of the record's canonical content: what tells a redelivery from a conflict.

    The content is every field the event carried -- ids, times in microseconds, names,
    operation, sequence, actor, request id, previous record id, masked columns, ``before``,
    ``after`` and ``metadata`` -- as JSON with sorted keys, compact, UTF-8. The field-level
    ``changes`` are left out: they are derived from ``before``/``after`` by the consumer's
    differ, whose options may change between deliveries of one event.

    Raises :class:`RecordRejected` for a record no store can hold (a lone surrogate, a
    non-finite number, a value that is not JSON, a field outside
    :mod:`sqla_audit.wire_limits`), so every store refuses the same records.
    """
    try:
        _check_storable(record)
        content = {
            "table": record.table,
            "record_id": record.record_id,
            "event_id": str(record.event_id),
            "event_time_us": to_micros(record.event_time),
            "occurred_at_us": to_micros(record.occurred_at),
            "operation": record.operation.value,
            "service": record.service,
            "transaction_id": str(record.transaction_id),
            "sequence": record.sequence,
            "actor_id": record.actor_id,
            "actor_attributes": dict(record.actor_attributes),
            "request_id": record.request_id,
            "previous_record_id": record.previous_record_id,
            "masked_columns": list(record.masked_columns),
            "before": None if record.before is None else dict(record.before),
            "after": None if record.after is None else dict(record.after),
            "metadata": dict(record.metadata),
        }
        text = _CANONICAL.encode(content).encode("utf-8")
    except (ValueError, TypeError, OverflowError, RecursionError, AttributeError) as exc:
        raise RecordRejected(
            f"record {record.event_id} cannot be stored: {type(exc).__name__}: {exc}"
        ) from exc
    return hashlib.sha256(text).digest()


def conflict(record: AuditRecord, log: logging.Logger) -> RecordConflict:
    """Log a conflicting duplicate (a warning naming the event id) and make its error."""
    log.warning(
        "conflicting duplicate of event %s (table %s, record %s): the stored record is "
        "kept, this one is refused",
        record.event_id,
        record.table,
        record.record_id,
        extra={"event_id": str(record.event_id)},
    )
    return RecordConflict(
        f"event {record.event_id} is already stored with different content "
        "(conflicting duplicate; the first record is kept)",
        record.event_id,
    )


__all__ = ["conflict", "content_digest"]
