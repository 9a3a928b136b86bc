"""Why a restore is refused: :class:`RestoreError` and one subclass per reason."""

from __future__ import annotations

from collections.abc import Sequence

from sqla_audit.errors import PermanentError


class RestoreError(PermanentError):
    """A restore was refused; nothing was written."""


class NotAudited(RestoreError):
    """The session or the model is not audited, so a restore would leave no trace."""


class UnknownState(RestoreError):
    """The audit log holds nothing to restore to (unknown event, record or transaction)."""


class StaleRecord(RestoreError):
    """The row in the database is not the one the restore was planned against."""

    def __init__(self, table: str, record_id: str, columns: Sequence[str], why: str) -> None:
        self.table = table
        self.record_id = record_id
        self.columns = tuple(columns)
        named = f" (columns: {', '.join(self.columns)})" if self.columns else ""
        super().__init__(f"{table} {record_id!r}: {why}{named}; plan the restore again")


class UnrestorableColumns(RestoreError):
    """Columns whose value at that point is not in the audit log (masked, excluded, repr)."""

    def __init__(self, table: str, record_id: str, columns: Sequence[str]) -> None:
        self.table = table
        self.record_id = record_id
        self.columns = tuple(columns)
        super().__init__(
            f"{table} {record_id!r}: cannot restore {', '.join(self.columns)} (masked, excluded "
            "or logged as text: the audit log does not hold the value); pass "
            "allow_unrestorable=True to leave them as they are"
        )


class RecordMoved(RestoreError):
    """The record's primary key changed: the row lives under another record id."""

    def __init__(self, table: str, record_id: str, moved_to: str | None) -> None:
        self.table = table
        self.record_id = record_id
        self.moved_to = moved_to
        where = f" to {moved_to!r}" if moved_to else ""
        super().__init__(
            f"{table} {record_id!r}: the record's key changed{where}; pass "
            "allow_unrestorable=True to restore it under this id anyway"
        )
