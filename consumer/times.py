"""Time expressions on the command line: one parser for every ``--since``, ``--until``,
``--at`` and ``--older-than``.

Three forms are accepted, all giving an aware UTC datetime:

* an ISO 8601 time *with* a timezone: ``2026-01-01T00:00:00Z``, ``2026-01-01T01:00:00+01:00``
  (an audit log spans services in several zones, so a naive time is ambiguous and refused);
* a duration back from now: a whole number and one of ``s``, ``m``, ``h``, ``d``
  (``90m``, ``12h``, ``7d``);
* ``now``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections.abc import Callable
from typing import Final

#: What a time expression may be, for help texts and error messages.
TIME_FORMS: Final = "an ISO 8601 time with a zone (2026-01-01T00:00:00Z), 12h / 7d back, or now"

_DURATION: Final = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_OUT_OF_RANGE: Final = "outside the supported range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z"

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_time(text: str, *, now: Clock | None = None) -> dt.datetime:
    """``text`` as an aware UTC datetime (module docstring); an
    :class:`argparse.ArgumentTypeError` saying what is accepted when it is none of them."""
    value = text.strip()
    clock = now or _utcnow
    if value.lower() == "now":
        return clock().astimezone(dt.UTC)
    match = _DURATION.match(value)
    if match is not None:
        amount = dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        try:
            return clock().astimezone(dt.UTC) - amount
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} back from now is {_OUT_OF_RANGE}") from None
    if value.endswith("z"):  # RFC 3339 allows a lower-case zone designator
        value = value[:-1] + "Z"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, a duration or now; write {TIME_FORMS}"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no timezone; add Z for UTC or an offset such as +02:00 "
            "(e.g. 2026-01-01T00:00:00Z)"
        )
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is {_OUT_OF_RANGE}") from None


__all__ = ["TIME_FORMS", "parse_time"]
