"""What a signed event leaves with its stored record: :class:`Seal`.

A record keeps nearly every field of its event (:class:`~consumer.records.AuditRecord`). To
re-check a signature later, ``sqla-audit verify`` rebuilds the event's signed content
(:func:`sqla_audit.signing.signed_content`) from the record, so the seal keeps what the
record lacks -- ``primary_key`` and ``changed_columns`` -- beside the signature itself (its
algorithm, key id and MAC) and the transaction's event count. Records of unsigned events
have no seal.

Every store keeps the seal in one text column, ``seal``: the compact JSON object
``{"alg", "kid", "mac", "count", "primary_key", "changed_columns"}`` (:meth:`Seal.to_json`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqla_audit.errors import DecodeError
from sqla_audit.events import ChangeEvent
from sqla_audit.serialization import JSONValue

_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Seal:
    """The signature of a record's event and what rebuilding its signed content needs."""

    algorithm: str
    key_id: str
    mac: str
    #: ``transaction_event_count`` of the event: how many events its transaction has.
    event_count: int
    primary_key: Mapping[str, JSONValue] = field(default_factory=dict)
    changed_columns: tuple[str, ...] = ()

    @classmethod
    def of_event(cls, event: ChangeEvent) -> Seal | None:
        """The seal of a signed event, ``None`` for an unsigned one."""
        signature = event.signature
        if signature is None or event.transaction_event_count is None:
            return None
        return cls(
            algorithm=signature.algorithm,
            key_id=signature.key_id,
            mac=signature.mac,
            event_count=event.transaction_event_count,
            primary_key=event.primary_key,
            changed_columns=tuple(event.changed_columns),
        )

    def to_json(self) -> str:
        """The stored form (the ``seal`` column)."""
        return _ENCODE(
            {
                "alg": self.algorithm,
                "kid": self.key_id,
                "mac": self.mac,
                "count": self.event_count,
                "primary_key": dict(self.primary_key),
                "changed_columns": list(self.changed_columns),
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> Seal | None:
        """A stored seal (``None`` for ``None``); :class:`DecodeError` if it is corrupt."""
        if text is None:
            return None
        try:
            data: Any = json.loads(text)
            columns = data["changed_columns"]
            primary_key = data["primary_key"]
            if not isinstance(columns, list) or not isinstance(primary_key, dict):
                raise TypeError("changed_columns or primary_key has the wrong type")
            return cls(
                algorithm=str(data["alg"]),
                key_id=str(data["kid"]),
                mac=str(data["mac"]),
                event_count=int(data["count"]),
                primary_key=primary_key,
                changed_columns=tuple(str(name) for name in columns),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"stored seal is corrupt: {exc!r}") from exc


__all__ = ["Seal"]
