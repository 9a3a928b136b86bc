"""Primary keys named in a bulk statement's parameters: read, converted, matched.

An INSERT or an UPDATE by primary key names its rows' keys in its values. They are
converted by their column's type (``"07"`` for an Integer key is ``7``, as the database
stores it) before the rows are read by key, and a row read back is paired with the key
given when equal or equal as text.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, ClauseElement

from sqla_audit.capture import PREFETCH_CHUNK
from sqla_audit.config import ModelPlan

#: A value the database computes (an SQL expression, a server default).
MISSING: Final[Any] = object()

Key = tuple[Any, ...]
Raw = dict[str, Any]


def chunks(items: Sequence[Key]) -> Iterator[Sequence[Key]]:
    """``items`` in slices of at most ``PREFETCH_CHUNK`` (one ``IN`` list each)."""
    for start in range(0, len(items), PREFETCH_CHUNK):
        yield items[start : start + PREFETCH_CHUNK]


def sort_key(key: Key) -> tuple[Any, ...]:
    """An order on keys of any types (``None`` last, then by type, then by value)."""
    return tuple((value is None, str(type(value)), value) for value in key)


def plain_value(value: Any) -> Any:
    """The Python value of a parameter, or ``MISSING`` when the database computes it."""
    if isinstance(value, BindParameter):
        if value.callable is None and value.value is None:
            return MISSING
        return value.effective_value
    if isinstance(value, ClauseElement) or value is None:
        return MISSING
    return value


def coerce_key_value(value: Any, column: sa.Column[Any]) -> Any:
    """``value`` as the column's type stores it: ``"07"``, ``" 8"``, ``"9.0"`` -> ``7, 8, 9``.

    Keys given in a statement's parameters are matched with the keys read back, and read
    with binds of the column's type (PostgreSQL refuses ``integer = varchar``). A value
    that is already of the type, or that cannot be converted, is returned unchanged.
    """
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    if value is None or isinstance(value, (python_type, bool)):
        return value
    try:
        if python_type is int:
            number = decimal.Decimal(value.strip() if isinstance(value, str) else value)
            if number.is_finite() and number == number.to_integral_value():
                return int(number)
            return value
        if python_type is decimal.Decimal and isinstance(value, str | int | float):
            return decimal.Decimal(value.strip() if isinstance(value, str) else repr(value))
        if python_type is str and isinstance(value, int | decimal.Decimal | uuid.UUID):
            return str(value)
        if python_type is uuid.UUID and isinstance(value, str):
            return uuid.UUID(value)
        if python_type in (dt.date, dt.datetime) and isinstance(value, str):
            return python_type.fromisoformat(value)
    except (ValueError, TypeError, ArithmeticError):
        return value
    return value


def keys_of(plan: ModelPlan, rows: Iterable[Mapping[Any, Any]]) -> list[Key] | None:
    """The primary key of every row, from its values; ``None`` if any is not given."""
    lookups: list[list[str]] = []
    for spec in plan.primary_key:
        names = [spec.key]
        for column in plan.mapper.attrs[spec.key].columns:
            if isinstance(column, sa.Column):
                names += [column.key, column.name]
        lookups.append(names)
    columns = [spec.column for spec in plan.primary_key]
    keys: list[Key] = []
    for row in rows:
        by_name = {
            (name if isinstance(name, str) else getattr(name, "key", None)): value
            for name, value in row.items()
        }
        key = []
        for names in lookups:
            value = MISSING
            for name in names:
                if name in by_name:
                    value = plain_value(by_name[name])
                    break
            if value is MISSING:
                return None
            key.append(value)
        keys.append(tuple(coerce_key_value(v, c) for v, c in zip(key, columns, strict=True)))
    return list(dict.fromkeys(keys))


def match_keys(keys: Sequence[Key], found: Mapping[Key, Raw]) -> tuple[list[Key], int]:
    """The keys of ``found`` in the order of the given ``keys``, and how many are missing.

    A given key matches the database's key when equal (after type coercion) or equal as
    text (``"7"``, a str UUID); rows read by key but matched to none still belong to the
    statement (the database found them by its own comparison) and come last, in key
    order; the count of given keys no row stands for is what is left unitemized.
    """
    matched: dict[Key, None] = {}
    by_text: dict[tuple[str, ...], Key] | None = None
    for key in keys:
        if key in found:
            matched[key] = None
            continue
        if by_text is None:
            by_text = {tuple(str(v) for v in candidate): candidate for candidate in found}
        candidate = by_text.get(tuple(str(v) for v in key))
        if candidate is not None:
            matched[candidate] = None
    extra = sorted((key for key in found if key not in matched), key=sort_key)
    return [*matched, *extra], max(len(keys) - len(found), 0)


__all__ = [
    "MISSING",
    "Key",
    "Raw",
    "chunks",
    "coerce_key_value",
    "keys_of",
    "match_keys",
    "plain_value",
    "sort_key",
]
