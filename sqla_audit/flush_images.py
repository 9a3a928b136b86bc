"""Row images of the flush's changes, encoded when first read (see :mod:`.lazy_images`).

A flush captures one object at a time: :class:`FlushImages` turns the attribute values of
one row (attribute key -> value, from the session's state or read from the database) into
a :class:`~sqla_audit.lazy_images.LazyImage` keyed by column name, in column order. Values
of the immutable types of :data:`~sqla_audit.lazy_images.DEFERRED_TYPES` wait; the key
columns (the event's ``primary_key`` needs their encoding now), JSON values the application
may still change in place, enums and unknown types are encoded here, during the flush.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqla_audit.config import ModelPlan
from sqla_audit.lazy_images import AS_IS_TYPES, Layout, LazyImage, value_deferrable
from sqla_audit.serialization import Fallback, JSONValue, encode_value

_MISSING: Final[Any] = object()

#: Most layouts kept: which columns wait depends on each row's values (a NULL is its own
#: encoding), so the number of distinct layouts is bounded by the cache, not the data.
MAX_LAYOUTS: Final = 1024

#: What an image keeps of its row besides the image: the key columns' encodings.
KeyEncodings = dict[str, JSONValue]


class FlushImages:
    """Makes the lazy images of one installation's flushes (layouts shared and cached)."""

    __slots__ = ("_fallback", "_layouts")

    def __init__(self, fallback: Fallback) -> None:
        self._fallback = fallback
        self._layouts: dict[tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]], Layout] = {}

    def _layout(
        self, names: tuple[str, ...], deferred: tuple[int, ...], masked: tuple[str, ...]
    ) -> Layout:
        cache = (names, deferred, masked)
        layout = self._layouts.get(cache)
        if layout is None:
            if len(self._layouts) >= MAX_LAYOUTS:  # rows with many NULL patterns: start over
                self._layouts.clear()
            layout = self._layouts[cache] = Layout(names, deferred, masked)
        return layout

    def image(
        self,
        plan: ModelPlan,
        raw: Mapping[str, Any],
        previous: LazyImage | None = None,
    ) -> tuple[LazyImage, KeyEncodings]:
        """The image of ``raw`` (attribute key -> value; absent keys are left out) and the
        encodings of its key columns. With ``previous`` (an update's before image), an after
        value equal to its before value that encodes alike takes the before image's
        encoding (when both images hold the same columns)."""
        fallback = self._fallback
        pk_keys = plan.pk_keys
        names: list[str] = []
        values: list[Any] = []
        deferred: list[int] = []
        masked: list[str] = []
        keys: KeyEncodings = {}
        for key, name, hidden, _spec in plan.column_rows:
            value = raw.get(key, _MISSING)
            if value is _MISSING:
                continue
            if hidden:
                masked.append(name)
                value = None  # the value itself is never kept
            elif type(value) in AS_IS_TYPES:
                pass
            elif key not in pk_keys and value_deferrable(value):
                deferred.append(len(values))
            else:
                value = encode_value(value, fallback=fallback)
            if key in pk_keys:
                keys[name] = value
            names.append(name)
            values.append(value)
        layout = self._layout(tuple(names), tuple(deferred), tuple(masked))
        if previous is not None and previous.layout.names != layout.names:
            previous = None
        return LazyImage(layout, values, previous), keys


__all__ = ["MAX_LAYOUTS", "FlushImages", "KeyEncodings"]
