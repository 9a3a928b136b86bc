"""Writes change events into the outbox table inside the application's transaction.

The capture library calls :meth:`OutboxWriter.write` from ``before_commit`` of the outermost
transaction, after the final flush, with the connection of that transaction (see
:class:`sqla_audit.delivery.TransactionalWriter`). The rows therefore commit or roll back
with the data: a rolled-back transaction leaves no row, a committed one leaves all of them,
whatever happens to the process afterwards. An error raised here makes the commit fail --
in outbox mode, data without its audit trail is never committed.

Rows are inserted with ``executemany`` (SQLAlchemy turns it into multi-row ``INSERT``s),
in chunks bounded by row count and by payload bytes so a transaction touching thousands of
wide rows does not build one gigantic statement (MySQL's ``max_allowed_packet``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Table

from sqla_audit.events import ChangeEvent, utcnow
from sqla_audit.outbox.table import outbox_table


class OutboxWriter:
    """A :class:`~sqla_audit.delivery.TransactionalWriter` into the outbox table."""

    def __init__(
        self,
        table: Table | None = None,
        *,
        chunk_rows: int = 500,
        chunk_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if chunk_rows < 1 or chunk_bytes < 1:
            raise ValueError("chunk_rows and chunk_bytes must be positive")
        self.table = outbox_table() if table is None else table
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes

    def write(self, connection: Connection, events: Sequence[ChangeEvent]) -> None:
        """Insert one row per event, in ``sequence`` order, through ``connection``."""
        if not events:
            return
        now = utcnow()
        rows = [
            {
                "event_id": str(event.event_id),
                "transaction_id": str(event.transaction_id),
                "table_name": event.table,
                "record_id": event.record_id,
                "payload": event.to_json(),
                "created_at": now,
            }
            for event in sorted(events, key=lambda e: e.sequence)
        ]
        insert = self.table.insert()
        for chunk in self._chunks(rows):
            connection.execute(insert, chunk)

    def _chunks(self, rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            payload: str = row["payload"]
            # bytes, not characters, count against the server's packet limit
            payload_size = len(payload) if payload.isascii() else len(payload.encode("utf-8"))
            if chunk and (len(chunk) >= self.chunk_rows or size + payload_size > self.chunk_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(row)
            size += payload_size
        if chunk:
            yield chunk


__all__ = ["OutboxWriter"]
