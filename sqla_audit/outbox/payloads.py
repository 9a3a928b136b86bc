"""The ``payload`` of an outbox row: one event's JSON (layout 1) or an array of them (layout 2).

A layout-2 payload is ``[e1,e2,...]`` where each ``eN`` is an event's wire text exactly as the
producer encoded it (:meth:`ChangeEvent.to_json <sqla_audit.events.ChangeEvent.to_json>`,
signature included when there is one). Readers cut the array back into those texts without
re-encoding anything (:func:`split_payload`): what SNS or the store receives is byte for byte
what the producer wrote, as with layout 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from sqla_audit.errors import DecodeError
from sqla_audit.outbox.table import LAYOUT_BATCH, LAYOUT_EVENT

_DECODER: Final = json.JSONDecoder()


class Unreadable(str):
    """The parsed value of a stored event that is not JSON: why (a ``str`` subclass, so it
    is never mistaken for an event object)."""


_WHITESPACE: Final = frozenset(" \t\n\r")


def batch_payload(texts: Sequence[str]) -> str:
    """The layout-2 payload of event texts (each kept verbatim)."""
    return "[" + ",".join(texts) + "]"


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _split_array(payload: str) -> list[tuple[str, Any]]:
    pos = _skip(payload, 0)
    if payload[pos : pos + 1] != "[":
        raise DecodeError("outbox row of layout 2 does not hold a JSON array")
    pos = _skip(payload, pos + 1)
    items: list[tuple[str, Any]] = []
    if payload[pos : pos + 1] == "]":
        raise DecodeError("outbox row of layout 2 holds an empty array")
    while True:
        try:
            value, end = _DECODER.raw_decode(payload, pos)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"outbox row holds an array that is not JSON: {exc}") from exc
        items.append((payload[pos:end], value))
        pos = _skip(payload, end)
        separator = payload[pos : pos + 1]
        if separator == ",":
            pos = _skip(payload, pos + 1)
            continue
        if separator == "]" and _skip(payload, pos + 1) == len(payload):
            return items
        raise DecodeError(f"outbox row holds an array that is not JSON (at character {pos})")


def split_payload(payload: str | bytes, layout: int) -> list[tuple[str, Any]]:
    """``(text, parsed value)`` of each event a row holds, in order; the text verbatim.

    Layout 1: the payload itself, its parsed value or an :class:`Unreadable` saying why it
    is not JSON (the caller decides what an unreadable event means). Layout 2: each element
    of the array.
    :class:`DecodeError` when the row cannot be cut into events at all (not an array,
    malformed, unknown layout).
    """
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    if layout == LAYOUT_EVENT:
        try:
            return [(text, json.loads(text))]
        except (ValueError, RecursionError) as exc:
            return [(text, Unreadable(exc))]
    if layout == LAYOUT_BATCH:
        return _split_array(text)
    raise DecodeError(f"outbox row of unknown layout {layout!r} (a newer producer?)")


def event_field(value: Any, name: str) -> str | None:
    """A non-empty string field of a parsed event, else ``None``."""
    if isinstance(value, dict):
        field = value.get(name)
        if isinstance(field, str) and field:
            return field
    return None


__all__ = ["Unreadable", "batch_payload", "event_field", "split_payload"]
