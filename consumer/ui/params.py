"""The viewer's query-string parameters: read, checked, turned into values.

A bad value is an :class:`~consumer.sinks.base.InvalidQuery` whose text says what is wrong;
the pages show it with status 400.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Final

from starlette.requests import Request

from consumer.sinks.base import InvalidQuery
from consumer.times import parse_time

#: Changes per page unless ``size`` says otherwise; the largest ``size``.
DEFAULT_SIZE: Final = 25
MAX_SIZE: Final = 100


def text(request: Request, name: str) -> str | None:
    """Parameter ``name`` without surrounding spaces; ``None`` when absent or blank."""
    value = request.query_params.get(name, "").strip()
    return value or None


def required(request: Request, name: str) -> str:
    """Parameter ``name``; :class:`InvalidQuery` when absent or blank."""
    value = text(request, name)
    if value is None:
        raise InvalidQuery(f"{name} is required")
    return value


def size(request: Request) -> int:
    """``size``: changes per page, 1 to :data:`MAX_SIZE` (default :data:`DEFAULT_SIZE`)."""
    given = text(request, "size")
    if given is None:
        return DEFAULT_SIZE
    try:
        value = int(given)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_SIZE:
        raise InvalidQuery(f"size must be an integer from 1 to {MAX_SIZE}, got {given!r}")
    return value


def offset(request: Request, name: str) -> int:
    """A position in a list read whole (a whole-read listing's page token); 0 when absent."""
    given = text(request, name)
    if given is None:
        return 0
    if not (given.isascii() and given.isdigit()):
        raise InvalidQuery(f"{name} must be a position (0, 25, ...), got {given!r}")
    return int(given)


def instant(request: Request, name: str, default: str | None = None) -> dt.datetime | None:
    """An instant in any form the CLI's time options take (consumer.times): ISO 8601 with a
    zone, a duration back from now (``2h``), ``now``."""
    given = text(request, name) or default
    if given is None:
        return None
    try:
        return parse_time(given)
    except argparse.ArgumentTypeError as exc:
        raise InvalidQuery(f"{name}: {exc}") from None


def day(value: str) -> dt.date:
    """A UTC day, ``2026-03-01``."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidQuery(f"day must be a date such as 2026-03-01, got {value!r}") from None


__all__ = ["DEFAULT_SIZE", "MAX_SIZE", "day", "instant", "offset", "required", "size", "text"]
