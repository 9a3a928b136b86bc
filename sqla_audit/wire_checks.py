"""Strict checks of wire JSON: what :meth:`sqla_audit.events.ChangeEvent.from_dict` uses to
refuse, field by field, everything a store could not hold.

Each check raises :class:`~sqla_audit.errors.DecodeError` naming the field and the reason:
types, lengths (:mod:`sqla_audit.wire_limits`), text that is not valid Unicode (a lone
surrogate), nesting deeper than the limit, numbers JSON cannot carry (NaN, Infinity). The
parser :func:`loads_wire_json` and the fast pre-check :func:`json_text_is_plain` let a
decoder skip walking values when the text itself proves them plain.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any, Final

from sqla_audit.errors import DecodeError
from sqla_audit.serialization import is_plain_text
from sqla_audit.wire_limits import MAX_NAME_CHARS, MAX_SEQUENCE, MAX_VALUE_DEPTH


def preview(value: Any) -> str:
    """A short description of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def invalid(field: str, reason: str) -> DecodeError:
    return DecodeError(f"invalid change event: {field} {reason}")


def surrogate_error(field: str) -> DecodeError:
    return invalid(field, "contains a lone surrogate (text that is not valid Unicode)")


def _check_keys(row: dict[Any, Any], field: str) -> None:
    """Every key of ``row`` is a string of valid Unicode (checked in one joined string)."""
    try:
        keys = "".join(row)
    except TypeError:
        bad = next(key for key in row if type(key) is not str)
        raise invalid(field, f"has a non-string key {preview(bad)}") from None
    if not is_plain_text(keys):  # a lone surrogate: no store can hold it
        raise surrogate_error(field)


def _check_items(container: dict[Any, Any] | list[Any], field: str, depth: int) -> None:
    """Check the values of an object or array that has ``depth`` containers around it
    (a row is depth 0). Scalars, nearly every value, are checked inline; only nested
    containers recurse."""
    if type(container) is dict:
        _check_keys(container, field)
        items: Any = container.values()
    else:
        items = container
    for item in items:
        kind = type(item)
        if kind is str:
            if not item.isascii() and not is_plain_text(item):
                raise surrogate_error(field)
        elif kind is dict or kind is list:
            if depth >= MAX_VALUE_DEPTH:
                raise invalid(field, f"is nested more than {MAX_VALUE_DEPTH} levels deep")
            _check_items(item, field, depth + 1)
        elif kind is float:
            if not math.isfinite(item):
                raise invalid(field, f"holds a non-finite number {item!r} (not JSON)")
        elif item is not None and kind is not int and kind is not bool:
            raise invalid(field, f"holds a {kind.__name__}, which is not a JSON value")


#: In JSON text: a ``\\udXXX`` escape in the surrogate range.
_ESCAPED_SURROGATE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError(f"invalid change event: the number {text[:40]} is not finite (not JSON)")
    return value


def _refuse_constant(name: str) -> float:
    raise DecodeError(f"invalid change event: {name} is not JSON")


#: ``json.loads`` for the wire: ``NaN``/``Infinity`` and floats that overflow are refused
#: while parsing (the hooks run only for those tokens and for floats).
_WIRE_JSON: Final = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)


def loads_wire_json(text: str | bytes) -> Any:
    """Parse wire JSON strictly: UTF-8, no non-finite numbers.

    Raises :class:`DecodeError` for a non-finite number, ``ValueError`` (or
    ``UnicodeDecodeError``) for text that is not JSON, ``RecursionError`` past the
    parser's nesting limit.
    """
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    return _WIRE_JSON.decode(text)


def json_text_is_plain(text: str | bytes) -> bool:
    """True if ``text``, parsed by :func:`loads_wire_json`, cannot hold a lone surrogate or
    values nested deeper than :data:`~sqla_audit.wire_limits.MAX_VALUE_DEPTH`, so that
    :meth:`ChangeEvent.from_dict` may skip walking the values parsed from it.

    A few passes in C instead of one in Python over every value: a bracket count bounds
    the nesting (an event's own structure adds two levels), a UTF-8 encoding finds raw
    surrogates and a literal-prefixed search finds escaped ones. False means "not proven",
    never "invalid".
    """
    if not isinstance(text, str):
        return False
    if text.count("[") + text.count("{") > MAX_VALUE_DEPTH:
        return False
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return "\\u" not in text or _ESCAPED_SURROGATE.search(text) is None


def check_row(row: dict[Any, Any], field: str) -> None:
    """Check an object of column (or attribute, or metadata) values at any depth."""
    _check_items(row, field, 0)


def checked_text(data: dict[str, Any], key: str, field: str, limit: int) -> str:
    """``data[key]``: a non-empty string of at most ``limit`` characters, valid Unicode."""
    value = data.get(key)
    if type(value) is not str or not value:
        raise invalid(field, f"must be a non-empty string, got {preview(value)}")
    if len(value) > limit:
        raise invalid(field, f"is {len(value)} characters long (at most {limit})")
    if not is_plain_text(value):
        raise surrogate_error(field)
    return value


def optional_text(data: dict[str, Any], field: str, limit: int) -> str | None:
    if data.get(field) is None:
        return None
    return checked_text(data, field, field, limit)


def checked_names(value: Any, field: str) -> tuple[str, ...]:
    """A list of column names: each a non-empty, valid, bounded string."""
    if type(value) is not list:
        raise invalid(field, f"must be a list of strings, got {preview(value)}")
    for name in value:
        if type(name) is not str or not name or len(name) > MAX_NAME_CHARS:
            raise invalid(
                field,
                f"must hold non-empty strings of at most {MAX_NAME_CHARS} characters, "
                f"got {preview(name)}",
            )
        if not is_plain_text(name):
            raise surrogate_error(field)
    return tuple(value)


def checked_uuid(data: dict[str, Any], field: str) -> uuid.UUID:
    value = data[field]
    if type(value) is not str:
        raise invalid(field, f"must be a UUID string, got {preview(value)}")
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise invalid(field, f"is not a UUID: {preview(value)}") from exc


def checked_event_count(data: dict[str, Any], field: str, sequence: int) -> int | None:
    """``data[field]`` (a transaction's event count), ``None`` when absent: an integer
    from 1 to ``MAX_SEQUENCE + 1`` greater than the event's ``sequence``."""
    value = data.get(field)
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_SEQUENCE + 1:
        raise invalid(
            field, f"must be an integer from 1 to {MAX_SEQUENCE + 1}, got {preview(value)}"
        )
    if sequence >= value:
        raise invalid(field, f"is {value}, but the event's sequence is {sequence}")
    return value


__all__ = [
    "check_row",
    "checked_event_count",
    "checked_names",
    "checked_text",
    "checked_uuid",
    "invalid",
    "json_text_is_plain",
    "loads_wire_json",
    "optional_text",
    "preview",
    "surrogate_error",
]
