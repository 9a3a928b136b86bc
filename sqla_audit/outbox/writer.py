"""Writes change events into the outbox table inside the application's transaction.

The capture library calls :meth:`OutboxWriter.write` from ``before_commit`` of the outermost
transaction, after the final flush, with the connection of that transaction (see
:class:`sqla_audit.delivery.TransactionalWriter`). The rows therefore commit or roll back
with the data: a rolled-back transaction leaves no row, a committed one leaves all of them,
whatever happens to the process afterwards. An error raised here makes the commit fail --
in outbox mode, data without its audit trail is never committed.

Layout 2 (the default): the events of one transaction go into one row, a JSON array of
their wire texts, so a 100-row transaction costs one outbox row instead of a hundred. A
transaction with more than ``events_per_row`` events, or more than ``chunk_bytes`` of JSON,
gets several rows, in order; a transaction with a single event gets a plain layout-1 row
(which any reader, old or new, relays). Layout 1 (``layout=1``) writes one row per event
without naming the ``layout``/``event_count`` columns: it works on a table created before
those columns existed, for the time of a migration.

Rows are inserted with ``executemany`` (SQLAlchemy turns it into multi-row ``INSERT``s), in
statements bounded by row count and by payload bytes so a transaction touching thousands of
wide rows does not build one gigantic statement (MySQL's ``max_allowed_packet``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Table

from sqla_audit.events import ChangeEvent, utcnow
from sqla_audit.outbox.payloads import batch_payload
from sqla_audit.outbox.table import LAYOUT_BATCH, LAYOUT_EVENT, outbox_table


def _size(text: str) -> int:
    # bytes, not characters, count against the server's packet limit
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class OutboxWriter:
    """A :class:`~sqla_audit.delivery.TransactionalWriter` into the outbox table."""

    def __init__(
        self,
        table: Table | None = None,
        *,
        layout: int = LAYOUT_BATCH,
        events_per_row: int = 500,
        chunk_rows: int = 500,
        chunk_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if chunk_rows < 1 or chunk_bytes < 1 or events_per_row < 1:
            raise ValueError("events_per_row, chunk_rows and chunk_bytes must be positive")
        if layout not in (LAYOUT_EVENT, LAYOUT_BATCH):
            raise ValueError(f"layout must be {LAYOUT_EVENT} or {LAYOUT_BATCH}, got {layout!r}")
        self.table = outbox_table() if table is None else table
        self.layout = layout
        self.events_per_row = events_per_row
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes

    def write(self, connection: Connection, events: Sequence[ChangeEvent]) -> None:
        """Insert the events, in ``sequence`` order, through ``connection``: one row per
        transaction (or chunk of one) in layout 2, one row per event in layout 1."""
        if not events:
            return
        now = utcnow()
        ordered = sorted(events, key=lambda e: e.sequence) if len(events) > 1 else events
        if self.layout == LAYOUT_EVENT:
            rows = [
                {
                    "event_id": str(event.event_id),
                    "transaction_id": str(event.transaction_id),
                    "table_name": event.table,
                    "record_id": event.record_id,
                    "payload": event.to_json(),
                    "created_at": now,
                }
                for event in ordered
            ]
        else:
            rows = self._batch_rows(ordered, now)
        insert = self.table.insert()
        if len(rows) == 1:
            connection.execute(insert, rows[0])
            return
        for chunk in self._chunks(rows):
            connection.execute(insert, chunk)

    def _batch_rows(self, events: Sequence[ChangeEvent], now: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        group: list[ChangeEvent] = []
        texts: list[str] = []
        size = 0

        def close() -> None:
            first = group[0]
            rows.append(
                {
                    "event_id": str(first.event_id),
                    "transaction_id": str(first.transaction_id),
                    "table_name": first.table,
                    "record_id": first.record_id,
                    "payload": texts[0] if len(texts) == 1 else batch_payload(texts),
                    "created_at": now,
                    "layout": LAYOUT_EVENT if len(texts) == 1 else LAYOUT_BATCH,
                    "event_count": len(texts),
                }
            )

        for event in events:
            text = event.to_json()
            text_size = _size(text) + 1
            if group and (len(group) >= self.events_per_row or size + text_size > self.chunk_bytes):
                close()
                group, texts, size = [], [], 0
            group.append(event)
            texts.append(text)
            size += text_size
        close()
        return rows

    def _chunks(self, rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            payload_size = _size(row["payload"])
            if chunk and (len(chunk) >= self.chunk_rows or size + payload_size > self.chunk_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(row)
            size += payload_size
        if chunk:
            yield chunk


__all__ = ["OutboxWriter"]
