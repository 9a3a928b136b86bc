"""Which tables the store knows, for the search form's completion -- when that is cheap.

A store may offer ``known_tables(limit)``: ``(service, table)`` pairs it can list without
reading every record (the SQLite store walks its index, one probe per table). Stores without
it (Cassandra: listing tables would scan every partition key) get no completion; the search
form works the same, only without suggestions.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol, runtime_checkable

from sqla_audit.errors import StoreError

logger = logging.getLogger(__name__)

#: Most tables suggested.
MAX_TABLES: Final = 500


@runtime_checkable
class TableCatalog(Protocol):
    """A store that can list its ``(service, table)`` pairs cheaply."""

    def known_tables(self, limit: int = MAX_TABLES) -> list[tuple[str, str]]: ...


def known_tables(store: object) -> list[tuple[str, str]]:
    """The store's ``(service, table)`` pairs, or ``[]`` when it cannot list them cheaply."""
    if not isinstance(store, TableCatalog):
        return []
    try:
        return store.known_tables(MAX_TABLES)
    except StoreError:
        logger.warning("the audit store could not list its tables", exc_info=True)
        return []


__all__ = ["MAX_TABLES", "TableCatalog", "known_tables"]
