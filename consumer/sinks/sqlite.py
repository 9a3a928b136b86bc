"""The embedded audit store: one SQLite file, no server.

For demos, small deployments and tests that want persistence without Cassandra. It keeps
the same records with the same semantics as the Cassandra store (idempotent by
``event_id``, newest first by ``(event time ms, event_id)``, exact ``since``/``until``,
keyset page tokens) in one table with three indexes that play the role of Cassandra's
three tables. The file runs in WAL mode so readers (the query side) do not block the
writer; writes from several threads share one connection behind a lock.

Writes are idempotent by ``event_id`` and content: inside one ``BEGIN IMMEDIATE``
transaction the store reads which of the batch's event ids are already stored, compares
their content (:func:`~consumer.sinks.base.content_digest`), inserts the new records with
``INSERT OR IGNORE`` and refuses a conflicting duplicate with
:class:`~consumer.sinks.base.RecordConflict` -- the stored record is never replaced. The
write lock taken by ``BEGIN IMMEDIATE`` makes the read and the inserts one step for every
process sharing the file.

Errors are classified: a problem of one record (a value SQLite cannot bind, an integer
outside 64 bits, text that is not valid Unicode, a constraint, "string or blob too big")
is :class:`~consumer.sinks.base.RecordRejected`; only the database itself failing (locked
past the timeout, disk I/O, cannot open, disk full) is a retryable
:class:`~sqla_audit.errors.StoreError`.

The one table holds departure records too (a row's key changed, see
:mod:`consumer.records`); ``by_actor`` and ``by_transaction`` leave them out, as the
Cassandra store does by not writing them to its companion tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from consumer.records import AuditRecord, record_from_row, record_to_row, to_millis
from consumer.sinks.base import (
    MAX_PAGE_SIZE,
    Page,
    RecordConflict,
    RecordRejected,
    Window,
    conflict,
    content_digest,
    paginate,
)
from sqla_audit.errors import ConfigurationError, StoreError

log = logging.getLogger(__name__)

_COLUMNS: Final = (
    "event_id",
    "table_name",
    "record_id",
    "event_ms",
    "event_time_us",
    "occurred_at_us",
    "operation",
    "service",
    "transaction_id",
    "sequence",
    "actor_id",
    "actor_attributes",
    "request_id",
    "previous_record_id",
    "masked_columns",
    "changes",
    "before",
    "after",
    "metadata",
)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit_records (
    event_id TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event_ms INTEGER NOT NULL,
    event_time_us INTEGER NOT NULL,
    occurred_at_us INTEGER NOT NULL,
    operation TEXT NOT NULL,
    service TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    actor_id TEXT,
    actor_attributes TEXT NOT NULL,
    request_id TEXT,
    previous_record_id TEXT,
    masked_columns TEXT NOT NULL,
    changes TEXT NOT NULL,
    "before" TEXT,
    "after" TEXT,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_by_record
    ON audit_records (table_name, record_id, event_ms DESC, event_id DESC);
CREATE INDEX IF NOT EXISTS audit_records_by_actor
    ON audit_records (actor_id, event_ms DESC, event_id DESC) WHERE actor_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_records_by_transaction
    ON audit_records (transaction_id, sequence, event_id);
"""

_QUOTED: Final = ", ".join('"' + c + '"' for c in _COLUMNS)
_INSERT: Final = (
    f"INSERT OR IGNORE INTO audit_records ({_QUOTED}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT: Final = f"SELECT {_QUOTED} FROM audit_records"

#: Most rows fetched per round trip while scanning (the first chunk is ``limit + 1``).
_MAX_CHUNK: Final = MAX_PAGE_SIZE + 1
_EVENT_MS: Final = _COLUMNS.index("event_ms")


def _to_params(record: AuditRecord) -> tuple[Any, ...]:
    row = record_to_row(record)
    row["event_id"] = str(record.event_id)
    row["transaction_id"] = str(record.transaction_id)
    row["event_ms"] = to_millis(record.event_time)
    return tuple(row[c] for c in _COLUMNS)


def _from_tuple(values: tuple[Any, ...]) -> AuditRecord:
    return record_from_row(dict(zip(_COLUMNS, values, strict=True)))


#: Most event ids looked up in one ``IN (...)`` (below SQLite's bound-parameter limit).
_LOOKUP_CHUNK: Final = 500

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


class SQLiteStore:
    """An :class:`~consumer.sinks.base.AuditStore` over one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        target = str(path)
        if target.startswith("sqlite:///"):
            target = target[len("sqlite:///") :]
        if not target:
            raise ConfigurationError("the SQLite store needs a file path (or ':memory:')")
        if target != ":memory:" and not Path(target).parent.exists():
            raise ConfigurationError(f"directory of SQLite store {target!r} does not exist")
        self.path = target
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(target, timeout=timeout, check_same_thread=False)
            if target != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(SCHEMA)
            self._conn.commit()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {target!r}: {exc}") from exc
        self._closed = False

    # -- writes ----------------------------------------------------------------------------

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Insert the new records, skip redeliveries, refuse conflicts (module docstring)."""
        batch = [(record, content_digest(record)) for record in records]
        if not batch:
            return
        try:
            params = [_to_params(record) for record, _ in batch]
        except (TypeError, ValueError, OverflowError) as exc:
            raise RecordRejected(f"SQLite cannot store a record: {exc}") from exc
        first: RecordConflict | None = None
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    stored = self._stored_digests([record.event_id for record, _ in batch])
                    fresh: list[tuple[Any, ...]] = []
                    for (record, digest), values in zip(batch, params, strict=True):
                        known = stored.get(record.event_id)
                        if known is None:
                            stored[record.event_id] = digest
                            fresh.append(values)
                        elif known != digest:
                            first = first or conflict(record, log)
                    self._conn.executemany(_INSERT, fresh)
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
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = self._conn.execute(
                f"{_SELECT} WHERE event_id IN ({marks})", tuple(chunk)
            ).fetchall()
            for values in rows:
                record = _from_tuple(values)
                found[record.event_id] = content_digest(record)
        return found

    # -- reads -----------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite read failed: {exc}") from exc

    def _scan(self, where: str, params: tuple[Any, ...], window: Window) -> Iterator[AuditRecord]:
        """Newest-first records inside the exact window, fetched by keyset in growing chunks.

        The exact microsecond bounds and the page cursor are part of the SQL, so every row
        fetched is a match and the first chunk is only ``limit + 1`` rows: one page plus the
        row that tells whether another page exists (``as_of`` reads a handful of rows, not
        hundreds). A caller that reads on -- following ties within a millisecond, or
        dropping rows it filters out -- gets chunks that double up to :data:`_MAX_CHUNK`.
        The ``event_ms`` bounds let the index narrow the range; the ``event_time_us`` bounds
        make it exact inside the boundary milliseconds.
        """
        clauses = [where]
        bounds: list[Any] = list(params)
        if window.min_ms is not None:
            clauses.append("event_ms >= ?")
            bounds.append(window.min_ms)
        if window.max_ms is not None:
            clauses.append("event_ms <= ?")
            bounds.append(window.max_ms)
        if window.since_us is not None:
            clauses.append("event_time_us >= ?")
            bounds.append(window.since_us)
        if window.until_us is not None:
            clauses.append("event_time_us <= ?")
            bounds.append(window.until_us)
        position: tuple[int, str] | None = None
        if window.cursor is not None:
            position = (window.cursor.millis, str(window.cursor.event_id))
        chunk = min(window.limit + 1, _MAX_CHUNK)
        while True:
            sql_clauses = list(clauses)
            sql_params = list(bounds)
            if position is not None:
                sql_clauses.append("(event_ms < ? OR (event_ms = ? AND event_id < ?))")
                sql_params += [position[0], position[0], position[1]]
            sql = (
                f"{_SELECT} WHERE {' AND '.join(sql_clauses)} "
                f"ORDER BY event_ms DESC, event_id DESC LIMIT {chunk}"
            )
            rows = self._query(sql, tuple(sql_params))
            for values in rows:
                yield _from_tuple(values)
            if len(rows) < chunk:
                return
            last = rows[-1]
            position = (int(last[_EVENT_MS]), str(last[0]))
            chunk = min(chunk * 2, _MAX_CHUNK)

    def history(
        self,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        window = Window.build(since, until, limit, page)
        return paginate(
            self._scan("table_name = ? AND record_id = ?", (table, record_id), window), window
        )

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        window = Window.build(since, until, limit, page)
        found = self._scan("actor_id = ?", (actor_id,), window)
        return paginate((r for r in found if not r.is_departure), window)

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        rows = self._query(
            f"{_SELECT} WHERE transaction_id = ? ORDER BY sequence, event_id",
            (str(transaction_id),),
        )
        found = (_from_tuple(values) for values in rows)
        return [record for record in found if not record.is_departure]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


__all__ = ["SCHEMA", "SQLiteStore"]
