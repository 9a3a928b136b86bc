"""The errors of the audit stores: a bad read, a disabled view, a refused or conflicting record.

:class:`RecordRejected` (and its :class:`RecordConflict`) concern one record and are permanent;
:class:`InvalidQuery` (and its :class:`ViewDisabled`) concern one read. A store that is itself
unavailable raises :class:`~sqla_audit.errors.StoreError` (retryable) instead.
"""

from __future__ import annotations

import uuid

from consumer.sinks.views import VIEWS_FLAG
from sqla_audit.errors import PermanentError


class InvalidQuery(PermanentError, ValueError):
    """A read was asked with bad arguments (a malformed page token, a bad limit or window)."""


class ViewDisabled(InvalidQuery):
    """A read asked a secondary view this store does not keep."""

    def __init__(self, view: str) -> None:
        super().__init__(
            f"the {view} view is not enabled in this audit store: enable it with "
            f"`{VIEWS_FLAG} ...,{view}` on `sqla-audit schema apply` (Cassandra) or "
            f"`sqla-audit consume` (SQLite)"
        )
        self.view = view


class RecordRejected(PermanentError):
    """The store refused a record for good (too large, invalid): retrying cannot help."""


class RecordConflict(RecordRejected):
    """A record's ``event_id`` is already stored with different content; the first is kept."""

    def __init__(self, message: str, event_id: uuid.UUID) -> None:
        super().__init__(message)
        self.event_id = event_id


__all__ = ["InvalidQuery", "RecordConflict", "RecordRejected", "ViewDisabled"]
