"""Row images whose values are encoded when the image is first read.

Encoding a row's values (:func:`~sqla_audit.serialization.encode_value`: a ``Decimal`` to
its text, a ``datetime`` to ISO 8601...) is the largest per-row cost of a bulk statement's
capture. A :class:`LazyImage` holds the values as the driver or the session returned them
and encodes them the first time anything reads the image -- in SNS mode where the events
are built, on the publisher's thread, after the application's commit returned.

Only values whose encoding cannot fail and cannot change later wait: values of the exact
types in :data:`DEFERRED_TYPES` (immutable, with an encoding that depends on the value
alone), a ``datetime`` or ``time`` only with no zone, a fixed offset or a ``ZoneInfo``.
A column holding anything else -- a JSON ``dict`` or ``list`` the application may change
after the statement, an ``Enum``, a value of an unknown type whose fallback may raise --
is encoded when the image is made, as before, so a
:class:`~sqla_audit.errors.SerializationError` still surfaces inside the statement or flush.

Reading an image once turns it into a plain ``dict`` (kept: later reads cost a lookup),
with the keys in column order and each value exactly what eager encoding gives. Two
threads reading a new image at once both build it; the results are equal, one is kept.
An update's after image names its before image: an after value equal to its before value
of a type whose equal values always encode alike takes the before image's encoding.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqla_audit.serialization import MASKED_VALUE, PASSTHROUGH_TYPES, JSONValue, encode_value

#: Exact types that are their own encoding (nothing to encode, ever).
AS_IS_TYPES: Final[frozenset[type]] = PASSTHROUGH_TYPES

#: Exact types whose encoding may wait: immutable values whose encoding cannot fail and
#: depends on the value alone (a ``datetime``/``time`` also on its zone: see :func:`deferrable`).
DEFERRED_TYPES: Final[frozenset[type]] = frozenset(
    {
        str,
        float,
        decimal.Decimal,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
        bytes,
    }
)

_WAITING: Final[frozenset[type]] = DEFERRED_TYPES | AS_IS_TYPES
#: Types whose values wait only in one of :data:`SAFE_ZONES`.
CLOCK_TYPES: Final[frozenset[type]] = frozenset({dt.datetime, dt.time})
#: Zones whose offset and name are pure functions of the value.
SAFE_ZONES: Final[frozenset[type]] = frozenset({type(None), dt.timezone, ZoneInfo})
_ZONE: Final = attrgetter("tzinfo")

#: The deferred types whose values wait without a further check (see :func:`value_deferrable`).
UNCHECKED_TYPES: Final[frozenset[type]] = DEFERRED_TYPES - {decimal.Decimal, dt.datetime, dt.time}

#: Types whose equal values always have the same encoding.
SAME_ENCODING: Final[frozenset[type]] = frozenset({str, int, bool, type(None)})


def same_text(was: Any, now: Any) -> bool:
    """Two equal values of one type that also encode alike: a ``Decimal`` with the same
    text, a ``datetime`` with the same ``tzinfo`` and ``fold``, a ``date``."""
    kind = type(was)
    if kind is decimal.Decimal:
        return str(was) == str(now)  # the encoding is the text (as_tuple() is slower)
    if kind is dt.datetime:
        return bool(was.tzinfo is now.tzinfo and was.fold == now.fold)
    return kind is dt.date


#: :func:`column_mode` answers: every value is its own encoding, every value's encoding
#: may wait, or the column is encoded now.
AS_IS: Final = 0
WAIT: Final = 1
NOW: Final = 2


def column_mode(values: Sequence[Any]) -> int:
    """How a column's values (one per row) are encoded: :data:`AS_IS` (``int``, ``bool``,
    ``None``), :data:`WAIT` (every value of a type in :data:`DEFERRED_TYPES`, a clock in a
    pure zone) or :data:`NOW`.

    A ``Decimal``'s text follows the thread's decimal context (``capitals``): values wait
    only while that is the default, which :meth:`LazyImage.as_dict` then uses as well.
    """
    kinds = set(map(type, values))
    if kinds <= AS_IS_TYPES:
        return AS_IS
    if not kinds <= _WAITING:
        return NOW
    if decimal.Decimal in kinds and decimal.getcontext().capitals != 1:
        return NOW
    if kinds & CLOCK_TYPES:
        clocks = values if kinds <= CLOCK_TYPES else [v for v in values if type(v) in CLOCK_TYPES]
        if not set(map(type, map(_ZONE, clocks))) <= SAFE_ZONES:
            return NOW
    return WAIT


def deferrable(values: Sequence[Any]) -> bool:
    """No value of the column needs encoding now (see :func:`column_mode`)."""
    return column_mode(values) != NOW


def value_deferrable(value: Any) -> bool:
    """One value's encoding may wait (:func:`deferrable` of one value)."""
    kind = type(value)
    if kind in CLOCK_TYPES:
        return type(value.tzinfo) in SAFE_ZONES
    if kind is decimal.Decimal:
        return decimal.getcontext().capitals == 1
    return kind in _WAITING


class Layout:
    """What the images of one statement share: the column names (the image's keys, in
    order), the positions whose values are encoded when read, and the masked names."""

    __slots__ = ("deferred", "index", "masked", "names")

    def __init__(
        self, names: tuple[str, ...], deferred: tuple[int, ...], masked: tuple[str, ...]
    ) -> None:
        self.names = names
        self.index = frozenset(names)
        self.deferred = deferred
        self.masked = masked


class LazyImage(Mapping[str, JSONValue]):
    """A read-only row image (column name -> encoded value), encoded when first read.

    ``values`` are in ``layout.names`` order: at ``layout.deferred`` positions a value to
    encode, elsewhere its encoding (a masked position holds ``None``; it reads as a fresh
    ``MASKED_VALUE``). ``previous`` is an update's before image (same layout).
    """

    __slots__ = ("_layout", "_plain", "_previous", "_values")

    def __init__(
        self, layout: Layout, values: Sequence[Any], previous: LazyImage | None = None
    ) -> None:
        self._layout = layout
        self._values = values
        self._previous = previous
        self._plain: dict[str, JSONValue] | None = None

    @property
    def layout(self) -> Layout:
        """The layout this image shares with the other images of its statement or model."""
        return self._layout

    @property
    def materialized(self) -> bool:
        """The image was read: its values are encoded."""
        return self._plain is not None

    def as_dict(self) -> dict[str, JSONValue]:
        """The image as a plain ``dict``, encoded on the first call (shared: read-only)."""
        plain = self._plain
        if plain is None:
            if decimal.getcontext().capitals == 1:
                plain = self._build()
            else:  # the text a Decimal had where the image was made
                with decimal.localcontext() as context:
                    context.capitals = 1
                    plain = self._build()
            self._plain = plain
        return plain

    def _build(self) -> dict[str, JSONValue]:
        layout, values = self._layout, self._values
        names = layout.names
        plain: dict[str, JSONValue] = dict(zip(names, values, strict=True))
        previous = self._previous
        if previous is None:
            for i in layout.deferred:
                plain[names[i]] = encode_value(values[i])
        else:
            earlier, old_values = previous.as_dict(), previous._values
            for i in layout.deferred:
                new, old = values[i], old_values[i]
                kind = type(new)
                if old is new or (
                    type(old) is kind
                    and (kind in SAME_ENCODING or same_text(old, new))
                    and old == new
                ):
                    plain[names[i]] = earlier[names[i]]
                else:
                    plain[names[i]] = encode_value(new)
        for name in layout.masked:
            plain[name] = dict(MASKED_VALUE)  # one object per image, never shared
        return plain

    def __getitem__(self, key: str) -> JSONValue:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout.names)

    def __len__(self) -> int:
        return len(self._layout.names)

    def __contains__(self, key: object) -> bool:
        return key in self._layout.index

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def keys(self) -> Any:
        return self.as_dict().keys()

    def items(self) -> Any:
        return self.as_dict().items()

    def values(self) -> Any:
        return self.as_dict().values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyImage):
            return self.as_dict() == other.as_dict()
        if isinstance(other, Mapping):
            return self.as_dict() == (other if type(other) is dict else dict(other.items()))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.as_dict())

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.as_dict(),))


__all__ = [
    "AS_IS",
    "AS_IS_TYPES",
    "CLOCK_TYPES",
    "DEFERRED_TYPES",
    "NOW",
    "SAFE_ZONES",
    "SAME_ENCODING",
    "UNCHECKED_TYPES",
    "WAIT",
    "Layout",
    "LazyImage",
    "column_mode",
    "deferrable",
    "same_text",
    "value_deferrable",
]
