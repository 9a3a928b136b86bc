"""Writes change events into the outbox table inside the application's transaction.

The capture library calls :meth:`OutboxWriter.write_encoded` from ``before_commit`` of the
outermost transaction, after the final flush, with the connection of that transaction and the
events' wire texts (see :class:`sqla_audit.delivery.EncodedTransactionalWriter`);
:meth:`OutboxWriter.write` takes :class:`~sqla_audit.events.ChangeEvent` objects. The rows
therefore commit or roll back with the data: a rolled-back transaction leaves no row, a
committed one leaves all of them, whatever happens to the process afterwards. An error
raised here makes the commit fail -- in outbox mode, data without its audit trail is never
committed.

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

from sqla_audit.delivery import EncodedEvents
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
        # One statement object for every write: SQLAlchemy keys its compiled-statement cache
        # on it without walking a new construct each time. ``inline()``: nothing is asked
        # back from the database (no RETURNING of the new ids, which nothing reads).
        self._insert = self.table.insert().inline()

    def write(self, connection: Connection, events: Sequence[ChangeEvent]) -> None:
        """Insert the events, in ``sequence`` order, through ``connection``: one row per
        transaction (or chunk of one) in layout 2, one row per event in layout 1."""
        if events:
            self.write_encoded(connection, EncodedEvents.of_events(events))

    def write_encoded(self, connection: Connection, events: EncodedEvents) -> None:
        """Insert events already encoded (:func:`sqla_audit.delivery.encode_changes`, in
        ``sequence`` order) as :meth:`write` does: what capture calls in outbox mode."""
        texts = events.texts
        if not texts:
            return
        now = utcnow()
        if self.layout == LAYOUT_EVENT:
            rows = [
                {
                    "event_id": event_id,
                    "transaction_id": transaction_id,
                    "table_name": table,
                    "record_id": record_id,
                    "payload": text,
                    "created_at": now,
                }
                for event_id, transaction_id, table, record_id, text in zip(
                    events.event_ids,
                    events.transaction_ids,
                    events.tables,
                    events.record_ids,
                    texts,
                    strict=True,
                )
            ]
        else:
            rows = self._batch_rows(events, now)
        if len(rows) == 1:
            connection.execute(self._insert, rows[0])
            return
        for chunk in self._chunks(rows):
            connection.execute(self._insert, chunk)

    def _batch_rows(self, events: EncodedEvents, now: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        texts = events.texts
        count = len(texts)
        start = 0
        while start < count:
            # the group [start, end): at most events_per_row events and chunk_bytes of JSON
            # (the first event always goes in, however large)
            end = start + 1
            size = _size(texts[start]) + 1
            limit = min(count, start + self.events_per_row)
            while end < limit:
                size += _size(texts[end]) + 1
                if size > self.chunk_bytes:
                    break
                end += 1
            single = end - start == 1
            rows.append(
                {
                    "event_id": events.event_ids[start],
                    "transaction_id": events.transaction_ids[start],
                    "table_name": events.tables[start],
                    "record_id": events.record_ids[start],
                    "payload": texts[start]
                    if end - start == 1
                    else batch_payload(texts[start:end]),
                    "created_at": now,
                    "layout": LAYOUT_EVENT if single else LAYOUT_BATCH,
                    "event_count": end - start,
                }
            )
            start = end
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
