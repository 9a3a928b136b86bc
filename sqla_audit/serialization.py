"""Type-tagged JSON encoding of column values.

JSON has strings, numbers, booleans, null, arrays and objects. Column values that JSON
would lose or blur travel as a *tagged object* ``{"$type": TAG, "v": ...}``:

============  ===========================================  ==================================
tag           Python value                                 ``v``
============  ===========================================  ==================================
decimal       :class:`decimal.Decimal`                     ``str(value)`` (exponent kept)
datetime      :class:`datetime.datetime` (naive or aware)  ISO 8601, offset kept when aware;
                                                           ``"tz"`` names a zoneinfo key
date          :class:`datetime.date`                       ISO 8601
time          :class:`datetime.time` (naive or aware)      ISO 8601; ``"tz"`` as for datetime
timedelta     :class:`datetime.timedelta`                  ``[days, seconds, microseconds]``
uuid          :class:`uuid.UUID`                           canonical hyphenated text
bytes         ``bytes`` / ``bytearray`` / ``memoryview``   standard base64
utf16         ``str`` holding surrogate code points        standard base64 of its UTF-16-BE
              (lone surrogates: not valid Unicode, no      code units (``surrogatepass``)
              UTF-8 form)
pairs         a ``dict`` with a key holding surrogates     ``[[key, value], ...]``, keys and
                                                           values encoded, in dict order
enum          :class:`enum.Enum` member                    encoded ``.value``; ``"name"`` and
                                                           ``"cls"`` (``module:QualName``)
float         non-finite ``float``                         ``"nan"``, ``"inf"``, ``"-inf"``
set           ``set`` / ``frozenset``                      encoded items, sorted when possible
object        a ``dict`` that itself has a ``"$type"`` key  the dict, values encoded
repr          anything else (see *fallback*)               ``repr(value)``; ``"type"`` names it
masked        a masked column (value withheld)            ``null``
============  ===========================================  ==================================

``str``, ``int``, ``bool``, ``None`` and finite ``float`` pass through unchanged; lists
and tuples become arrays (ARRAY columns come back as lists) and dicts become objects with
their values encoded, so JSON columns round-trip exactly.

Text that is not valid Unicode. A Python ``str`` may hold surrogate code points
(U+D800..U+DFFF, e.g. ``"\ud800"`` from ``json.loads`` or ``surrogateescape``); no UTF-8
text can, so such a value would make the outbox INSERT or the SNS request fail. It travels
as the ``utf16`` tag instead, at any depth, and decodes to the exact string -- with one
limit of UTF-16 itself: a high surrogate directly followed by a low one reads back as the
single character that pair encodes. A dict with such a key becomes the ``pairs`` tag (JSON
object keys cannot be tagged). Valid text, ASCII above all, pays one ``isascii()`` check.

Fallback policy: a value of a type not listed above is encoded with the ``repr`` tag when
``fallback="repr"`` (the default at run time; the value is then readable but not
restorable, and :func:`decode_value` returns an :class:`Unserializable`), or raises
:class:`~sqla_audit.errors.SerializationError` when ``fallback="error"``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import importlib
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias
from zoneinfo import ZoneInfo

from sqla_audit.errors import SerializationError

JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None
Fallback: TypeAlias = Literal["repr", "error"]

TAG: Final = "$type"
_PASSTHROUGH: Final = (str, int, bool, type(None))

#: Exact types whose values are their own encoding. Checked with ``type(value) in ...``
#: before anything else: most column values are of these types, and one set lookup is
#: cheaper than the ``isinstance`` chain. Subclasses (``IntEnum``, ``StrEnum``, a ``str``
#: subclass) are not in it and take the chain, which handles them as before. ``str`` is
#: not in it: a string is its own encoding only when it is valid Unicode (see
#: :func:`is_plain_text`).
PASSTHROUGH_TYPES: Final[frozenset[type]] = frozenset({int, bool, type(None)})

#: A surrogate code point: a ``str`` holding one has no UTF-8 (nor any Unicode) form.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def is_plain_text(value: str) -> bool:
    """True when ``value`` is valid Unicode, so its own encoding (ASCII is checked in C)."""
    return value.isascii() or _SURROGATE.search(value) is None


def escape_surrogates(value: str) -> str:
    """``value`` with each surrogate code point written as its escape (``\\ud800``, six
    ASCII characters): valid Unicode, readable, but not reversible.

    The rule for text a tag cannot carry because the envelope needs a plain string there:
    the actor id and the keys of ``metadata`` and ``actor.attributes``. Valid text is
    returned unchanged.
    """
    if is_plain_text(value):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def encode_mapping(
    mapping: Mapping[Any, Any], *, fallback: Fallback = "repr"
) -> dict[str, JSONValue]:
    """A JSON object of ``mapping``: values encoded, keys as text with surrogates escaped
    (see :func:`escape_surrogates`). Used for ``metadata`` and actor attributes."""
    return {
        escape_surrogates(str(key)): encode_value(item, fallback=fallback)
        for key, item in mapping.items()
    }


def _encode_utf16(value: str) -> dict[str, JSONValue]:
    units = value.encode("utf-16-be", "surrogatepass")
    return {TAG: "utf16", "v": base64.b64encode(units).decode("ascii")}


@dataclass(frozen=True, slots=True)
class Unserializable:
    """A value that was sent with the ``repr`` fallback: readable, not restorable."""

    type_name: str
    text: str


@dataclass(frozen=True, slots=True)
class TaggedEnum:
    """An Enum member whose class could not be resolved while decoding."""

    cls: str
    name: str
    value: Any


class _Masked:
    """The stand-in for a masked column's value: the change is known, the value is not."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MASKED"


#: Decoded form of a masked value.
MASKED: Final = _Masked()

#: Encoded form of a masked value; the real value never leaves the process.
MASKED_VALUE: Final[dict[str, JSONValue]] = {TAG: "masked", "v": None}


EnumResolver: TypeAlias = Callable[[str], type[enum.Enum] | None]


def _qualname(tp: type) -> str:
    return f"{tp.__module__}:{tp.__qualname__}"


def _tagged(tag: str, value: JSONValue, **extra: JSONValue) -> dict[str, JSONValue]:
    out: dict[str, JSONValue] = {TAG: tag, "v": value}
    out.update(extra)
    return out


def _encode_datetime(value: dt.datetime) -> JSONValue:
    tz = value.tzinfo
    if tz is None or type(tz) is dt.timezone:  # no zone key (and no costly failed getattr)
        return {TAG: "datetime", "v": value.isoformat()}
    key = getattr(tz, "key", None)
    if isinstance(key, str):
        return {TAG: "datetime", "v": value.isoformat(), "tz": key}
    return {TAG: "datetime", "v": value.isoformat()}


def _encode_time(value: dt.time) -> JSONValue:
    key = getattr(value.tzinfo, "key", None)  # a zone has no offset without a date
    if isinstance(key, str):
        return {TAG: "time", "v": value.isoformat(), "tz": key}
    return {TAG: "time", "v": value.isoformat()}


def _encode_timedelta(value: dt.timedelta) -> JSONValue:
    return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}


#: Encoders of the tagged scalar types, by *exact* type (a subclass takes the chain in
#: :func:`encode_value`, which gives it the same result, or its Enum tag). They build the
#: same ``{"$type": ..., "v": ...}`` objects as :func:`_tagged`, as literals.
_EXACT: Final[dict[type, Callable[[Any], JSONValue]]] = {
    decimal.Decimal: lambda value: {TAG: "decimal", "v": str(value)},
    dt.datetime: _encode_datetime,
    dt.date: lambda value: {TAG: "date", "v": value.isoformat()},
    dt.time: _encode_time,
    dt.timedelta: _encode_timedelta,
    uuid.UUID: lambda value: {TAG: "uuid", "v": str(value)},
}


def encode_value(value: Any, *, fallback: Fallback = "repr") -> JSONValue:
    """Encode one column value to JSON-safe data, tagging what JSON would lose."""
    plain: JSONValue = value  # typed view of the pass-through case
    kind = type(value)
    if kind is str:
        return (
            plain if value.isascii() or _SURROGATE.search(value) is None else _encode_utf16(value)
        )
    if kind in PASSTHROUGH_TYPES or (kind is float and math.isfinite(value)):
        return plain
    exact = _EXACT.get(kind)
    if exact is not None:
        return exact(value)
    if isinstance(value, _PASSTHROUGH) and not isinstance(value, enum.Enum):
        if isinstance(value, str) and not is_plain_text(value):
            return _encode_utf16(str(value))
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return _tagged("float", "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, enum.Enum):
        return _tagged(
            "enum",
            encode_value(value.value, fallback=fallback),
            name=value.name,
            cls=_qualname(type(value)),
        )
    if isinstance(value, decimal.Decimal):
        return _tagged("decimal", str(value))
    if isinstance(value, dt.datetime):
        return _encode_datetime(value)
    if isinstance(value, dt.date):
        return _tagged("date", value.isoformat())
    if isinstance(value, dt.time):
        return _encode_time(value)
    if isinstance(value, dt.timedelta):
        return _encode_timedelta(value)
    if isinstance(value, uuid.UUID):
        return _tagged("uuid", str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return _tagged("bytes", base64.b64encode(bytes(value)).decode("ascii"))
    if isinstance(value, list | tuple):
        return [encode_value(item, fallback=fallback) for item in value]
    if isinstance(value, Mapping):
        encoded: dict[str, JSONValue] = {}
        for raw_key, item in value.items():
            if not isinstance(raw_key, str) and fallback == "error":
                raise SerializationError(
                    f"mapping key {raw_key!r} is not a string; JSON objects need string keys"
                )
            key = str(raw_key)
            if not is_plain_text(key):
                return _encode_pairs(value, fallback)
            encoded[key] = encode_value(item, fallback=fallback)
        if TAG in encoded:
            return _tagged("object", encoded)
        return encoded
    if isinstance(value, set | frozenset):
        items = [encode_value(item, fallback=fallback) for item in value]
        try:
            items.sort()
        except TypeError:
            items.sort(key=repr)
        return _tagged("set", items)
    if isinstance(value, Unserializable):
        return _tagged("repr", value.text, type=value.type_name)
    if fallback == "error":
        raise SerializationError(
            f"cannot serialize a value of type {_qualname(type(value))}; "
            "configure the column as excluded, or use fallback='repr'"
        )
    return _tagged("repr", repr(value), type=_qualname(type(value)))


def _encode_pairs(value: Mapping[Any, Any], fallback: Fallback) -> JSONValue:
    """A mapping with a key that is not valid Unicode, as ``[[key, value], ...]``."""
    pairs: list[JSONValue] = [
        [encode_value(str(key), fallback=fallback), encode_value(item, fallback=fallback)]
        for key, item in value.items()
    ]
    return _tagged("pairs", pairs)


def encode_row(row: Mapping[str, Any], *, fallback: Fallback = "repr") -> dict[str, JSONValue]:
    """Encode every value of a column -> value mapping."""
    return {key: encode_value(value, fallback=fallback) for key, value in row.items()}


def import_enum(qualified: str) -> type[enum.Enum] | None:
    """Resolve ``module:QualName`` to an Enum class by importing it.

    Only use this resolver on trusted input: it imports the named module.
    """
    module_name, _, qualname = qualified.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return obj
    return None


def registry_resolver(*enums: type[enum.Enum]) -> EnumResolver:
    """A resolver that knows exactly the given Enum classes (safe on untrusted input)."""
    known = {_qualname(cls): cls for cls in enums}
    return known.get


def _in_zone(value: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """Put ``value`` back in ``zone`` with its wall time, keeping the encoded offset.

    Re-attaching the zone (choosing the ``fold`` whose offset matches) restores even wall
    times that fall in a DST gap or overlap exactly; if the zone's rules disagree with the
    offset (different tz data), the instant is kept instead.
    """
    offset = value.utcoffset()
    for fold in (0, 1):
        candidate = value.replace(tzinfo=zone, fold=fold)
        if candidate.utcoffset() == offset:
            return candidate
    return value.astimezone(zone)


def _decode_tagged(obj: dict[str, Any], resolver: EnumResolver | None) -> Any:
    tag = obj[TAG]
    raw: Any = obj.get("v")
    try:
        if tag == "decimal":
            return decimal.Decimal(raw)
        if tag == "datetime":
            value = dt.datetime.fromisoformat(raw)
            key = obj.get("tz")
            if isinstance(key, str):
                value = _in_zone(value, ZoneInfo(key))
            return value
        if tag == "date":
            return dt.date.fromisoformat(raw)
        if tag == "time":
            clock = dt.time.fromisoformat(raw)
            key = obj.get("tz")
            if isinstance(key, str):
                clock = clock.replace(tzinfo=ZoneInfo(key))
            return clock
        if tag == "timedelta":
            days, seconds, micros = raw
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if tag == "uuid":
            return uuid.UUID(raw)
        if tag == "bytes":
            return base64.b64decode(raw, validate=True)
        if tag == "utf16":
            return base64.b64decode(raw, validate=True).decode("utf-16-be", "surrogatepass")
        if tag == "pairs":
            return {_decode(key, resolver): _decode(item, resolver) for key, item in raw}
        if tag == "float":
            return float(raw)
        if tag == "set":
            return {_decode(item, resolver) for item in raw}
        if tag == "object":
            return {key: _decode(item, resolver) for key, item in raw.items()}
        if tag == "enum":
            member_value = _decode(raw, resolver)
            cls = resolver(obj["cls"]) if resolver is not None else None
            if cls is not None:
                try:
                    return cls[obj["name"]]
                except KeyError:
                    return cls(member_value)
            return TaggedEnum(cls=obj["cls"], name=obj["name"], value=member_value)
        if tag == "masked":
            return MASKED
        if tag == "repr":
            return Unserializable(type_name=str(obj.get("type", "?")), text=str(raw))
    except (TypeError, ValueError, KeyError, AttributeError, decimal.InvalidOperation) as exc:
        raise SerializationError(f"malformed {tag!r} value: {obj!r}") from exc
    raise SerializationError(f"unknown value tag {tag!r}")


def _decode(value: Any, resolver: EnumResolver | None) -> Any:
    if isinstance(value, list):
        return [_decode(item, resolver) for item in value]
    if isinstance(value, dict):
        if TAG in value:
            return _decode_tagged(value, resolver)
        return {key: _decode(item, resolver) for key, item in value.items()}
    return value


def decode_value(value: JSONValue, *, enum_resolver: EnumResolver | None = None) -> Any:
    """Restore a value produced by :func:`encode_value`.

    Enum members are restored when ``enum_resolver`` knows their class (see
    :func:`registry_resolver` and :func:`import_enum`); otherwise a :class:`TaggedEnum`.
    """
    return _decode(value, enum_resolver)


def decode_row(
    row: Mapping[str, JSONValue], *, enum_resolver: EnumResolver | None = None
) -> dict[str, Any]:
    """Restore every value of an encoded row."""
    return {key: _decode(value, enum_resolver) for key, value in row.items()}


def is_nested(value: JSONValue) -> bool:
    """True for encoded values that need a structural diff (arrays and plain objects)."""
    return isinstance(value, list) or (isinstance(value, dict) and TAG not in value)


__all__ = [
    "MASKED",
    "MASKED_VALUE",
    "PASSTHROUGH_TYPES",
    "TAG",
    "EnumResolver",
    "Fallback",
    "JSONValue",
    "TaggedEnum",
    "Unserializable",
    "decode_row",
    "decode_value",
    "encode_mapping",
    "encode_row",
    "encode_value",
    "escape_surrogates",
    "import_enum",
    "is_nested",
    "is_plain_text",
    "registry_resolver",
]
