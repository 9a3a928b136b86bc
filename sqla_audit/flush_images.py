"""Row images of the flush's changes, encoded when first read (see :mod:`.lazy_images`).

A flush captures one object at a time: :class:`FlushImages` turns the attribute values of
one row (attribute key -> value, from the session's state or read from the database) into
a :class:`~sqla_audit.lazy_images.LazyImage` keyed by column name, in column order. Values
of the immutable types of :data:`~sqla_audit.lazy_images.DEFERRED_TYPES` wait; the key
columns (the event's ``primary_key`` needs their encoding now), JSON values the application
may still change in place, enums and unknown types are encoded here, during the flush.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any, Final

from sqla_audit.config import ModelPlan
from sqla_audit.lazy_images import (
    AS_IS_TYPES,
    CLOCK_TYPES,
    SAFE_ZONES,
    UNCHECKED_TYPES,
    Layout,
    LazyImage,
    value_deferrable,
)
from sqla_audit.serialization import Fallback, JSONValue, encode_value

_MISSING: Final[Any] = object()

#: Most layouts kept: which columns wait depends on each row's values (a NULL is its own
#: encoding), so the number of distinct layouts is bounded by the cache, not the data.
MAX_LAYOUTS: Final = 1024

#: What an image keeps of its row besides the image: the key columns' encodings.
KeyEncodings = dict[str, JSONValue]


class _Model:
    """What the images of one model's complete rows share (computed once per plan)."""

    __slots__ = ("columns", "key_positions", "layouts", "masked", "names")

    def __init__(self, plan: ModelPlan) -> None:
        pk_keys = set(plan.pk_keys)
        #: (attribute key, masked, key column) of each column, in column order
        self.columns = [(key, hidden, key in pk_keys) for key, _n, hidden, _s in plan.column_rows]
        self.names = tuple(name for _k, name, _h, _s in plan.column_rows)
        self.masked = tuple(name for _k, name, hidden, _s in plan.column_rows if hidden)
        self.key_positions = [
            (name, i) for i, (key, name, _h, _s) in enumerate(plan.column_rows) if key in pk_keys
        ]
        #: layouts by the positions that wait
        self.layouts: dict[tuple[int, ...], Layout] = {}


class FlushImages:
    """Makes the lazy images of one installation's flushes (layouts shared and cached)."""

    __slots__ = ("_fallback", "_layouts", "_models")

    def __init__(self, fallback: Fallback) -> None:
        self._fallback = fallback
        self._layouts: dict[tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]], Layout] = {}
        self._models: dict[int, tuple[ModelPlan, _Model]] = {}

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

    def _model(self, plan: ModelPlan) -> _Model:
        found = self._models.get(id(plan))
        if found is None or found[0] is not plan:
            found = self._models[id(plan)] = (plan, _Model(plan))
        return found[1]

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
        if not plan.column_keys.issubset(raw):
            return self._partial(plan, raw, previous)
        model = self._model(plan)
        fallback = self._fallback
        values: list[Any] = []
        deferred: list[int] = []
        append = values.append
        for key, hidden, is_key in model.columns:
            value = raw[key]
            kind = type(value)
            if hidden:
                value = None  # the value itself is never kept
            elif kind in AS_IS_TYPES:
                pass
            elif not is_key and (
                kind in UNCHECKED_TYPES
                or (kind in CLOCK_TYPES and type(value.tzinfo) in SAFE_ZONES)
                or (kind is decimal.Decimal and decimal.getcontext().capitals == 1)
            ):
                deferred.append(len(values))
            else:
                value = encode_value(value, fallback=fallback)
            append(value)
        waiting = tuple(deferred)
        layout = model.layouts.get(waiting)
        if layout is None:
            if len(model.layouts) >= MAX_LAYOUTS:
                model.layouts.clear()
            layout = model.layouts[waiting] = Layout(model.names, waiting, model.masked)
        if previous is not None and previous.layout.names is not model.names:
            previous = None
        keys = {name: values[i] for name, i in model.key_positions}
        return LazyImage(layout, values, previous), keys

    def _partial(
        self, plan: ModelPlan, raw: Mapping[str, Any], previous: LazyImage | None
    ) -> tuple[LazyImage, KeyEncodings]:
        """:meth:`image` of a row some of whose columns are absent."""
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
