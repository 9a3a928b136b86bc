"""The secondary views an audit store can keep besides history, and how ``--views`` names them.

History (one record's changes, and which services wrote a record) is always kept; each view
in :data:`VIEWS` is an extra table (Cassandra) or index (SQLite) written for every change, so
the set is a choice (docs/cql.md, "Views"; docs/benchmarks.md measures each one's cost).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

#: The secondary views a store can keep besides history (which is always on).
VIEWS: Final = ("actor", "transaction", "request", "trace", "table")

#: The views a new store keeps unless told otherwise: all of them (docs/cql.md weighs each
#: one's write cost; the request and trace views cost nothing for records without a request
#: or trace id).
DEFAULT_VIEWS: Final = frozenset(VIEWS)

#: The flag that chooses the views, named in :class:`ViewDisabled` messages.
VIEWS_FLAG: Final = "--views"


def parse_views(text: str | Iterable[str]) -> frozenset[str]:
    """The views named in ``text`` (comma-separated) or an iterable of names.

    ``history`` may be named (it is always on) and ``all`` means every view; an unknown
    name raises :class:`ValueError` listing the known ones.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen: set[str] = set()
    for raw in names:
        name = raw.strip().lower()
        if not name or name == "history":
            continue
        if name == "all":
            chosen.update(VIEWS)
        elif name in VIEWS:
            chosen.add(name)
        else:
            raise ValueError(f"unknown view {raw.strip()!r} (known: history, {', '.join(VIEWS)})")
    return frozenset(chosen)


def check_views(views: frozenset[str] | None) -> frozenset[str]:
    """``views`` validated (``None``: :data:`DEFAULT_VIEWS`)."""
    if views is None:
        return DEFAULT_VIEWS
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)} (known: {', '.join(VIEWS)})")
    return frozenset(views)


def format_views(views: Iterable[str]) -> str:
    """The views as the ``--views`` flag spells them, in :data:`VIEWS` order."""
    chosen = set(views)
    return ",".join(view for view in VIEWS if view in chosen) or "history"


__all__ = ["DEFAULT_VIEWS", "VIEWS", "VIEWS_FLAG", "check_views", "format_views", "parse_views"]
