"""The write path: idempotent by ``event_id`` and content inside one ``BEGIN IMMEDIATE``
transaction, conflicts refused, errors sorted into one record's problem and the store's."""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from typing import Any, Final

from consumer.records import AuditRecord
from consumer.sinks.base import RecordConflict, RecordRejected, conflict, content_digest
from consumer.sinks.sqlite.schema import (
    INSERT,
    INSERT_SEAL,
    LOOKUP_CHUNK,
    SELECT,
    from_tuple,
    to_params,
)
from sqla_audit.errors import StoreError

log = logging.getLogger("consumer.sinks.sqlite")

#: ``OperationalError`` texts that concern the record being written, not the database.
_RECORD_PROBLEMS: Final = ("too big", "too large", "too many sql variables")


def _classify(exc: BaseException) -> Exception:
    """A failed write -> :class:`RecordRejected` (one record) or :class:`StoreError` (outage)."""
    text = str(exc)
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in text.lower():
        return StoreError(f"SQLite store is closed: {text}")
    if isinstance(exc, sqlite3.OperationalError):
        if any(problem in text.lower() for problem in _RECORD_PROBLEMS):
            return RecordRejected(f"SQLite refused a record: {text}")
        return StoreError(f"SQLite write failed: {text}")
    if isinstance(
        exc,
        sqlite3.IntegrityError
        | sqlite3.InterfaceError
        | sqlite3.DataError
        | sqlite3.ProgrammingError
        | OverflowError
        | UnicodeError
        | TypeError
        | ValueError,
    ):
        return RecordRejected(f"SQLite refused a record: {type(exc).__name__}: {text}")
    return StoreError(f"SQLite write failed: {type(exc).__name__}: {text}")


class SQLiteWrites:
    """The write half of :class:`~consumer.sinks.sqlite.SQLiteStore`."""

    _conn: sqlite3.Connection
    _lock: threading.Lock

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Insert the new records, skip redeliveries, refuse conflicts (module docstring)."""
        batch = [(record, content_digest(record)) for record in records]
        if not batch:
            return
        try:
            params = [to_params(record) for record, _ in batch]
        except (TypeError, ValueError, OverflowError) as exc:
            raise RecordRejected(f"SQLite cannot store a record: {exc}") from exc
        first: RecordConflict | None = None
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    stored = self._stored_digests([record.event_id for record, _ in batch])
                    fresh: list[tuple[Any, ...]] = []
                    seals: list[tuple[str, str]] = []
                    for (record, digest), values in zip(batch, params, strict=True):
                        known = stored.get(record.event_id)
                        if known is None:
                            stored[record.event_id] = digest
                            fresh.append(values)
                            if record.seal is not None:
                                seals.append((str(record.event_id), record.seal.to_json()))
                        elif known != digest:
                            first = first or conflict(record, log)
                    self._conn.executemany(INSERT, fresh)
                    if seals:
                        self._conn.executemany(INSERT_SEAL, seals)
                except BaseException:
                    self._conn.rollback()
                    raise
                self._conn.commit()
            except (sqlite3.Error, OverflowError, UnicodeError, TypeError, ValueError) as exc:
                raise _classify(exc) from exc
        if first is not None:
            raise first

    def _stored_digests(self, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, bytes]:
        """Content digests of the already stored records among ``event_ids``."""
        found: dict[uuid.UUID, bytes] = {}
        unique = list(dict.fromkeys(str(event_id) for event_id in event_ids))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = self._conn.execute(
                f"{SELECT} WHERE event_id IN ({marks})", tuple(chunk)
            ).fetchall()
            for values in rows:
                record = from_tuple(values)
                found[record.event_id] = content_digest(record)
        return found
