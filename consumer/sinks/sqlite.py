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
:mod:`consumer.records`); ``by_actor``, ``by_transaction`` and the ordered views leave them
out, as the Cassandra store does by not writing them to its companion tables.

Layout versions. The file records its layout in ``PRAGMA user_version``: 2 for this
version (a record is identified by ``(service, table, record_id)``; indexes for the request,
trace and table views). A layout-1 file (``user_version`` 0 with an ``audit_records``
table, written by earlier versions) already has the ``service`` column, so opening it
upgrades it in place: the new indexes are built (one pass over the table, under SQLite's
write lock) and ``user_version`` set to 2. A file with a newer layout is refused with a
:class:`~sqla_audit.errors.ConfigurationError` asking to upgrade sqla-audit.

Views. The secondary views (:data:`~consumer.sinks.base.VIEWS`) are indexes here; the
chosen set is recorded in the ``audit_settings`` table. A store opened with ``views`` (the
consumer's ``--views``) records that set and builds its indexes; one opened without (a
reader) uses the recorded set. Reading a view that is not enabled raises
:class:`~consumer.sinks.base.ViewDisabled`. A disabled view's index is left in place if it
exists (dropping it is ``DROP INDEX``).
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

from consumer.records import AuditRecord, record_from_row, record_to_row, to_micros, to_millis
from consumer.seal import Seal
from consumer.sinks.base import (
    DEFAULT_VIEWS,
    MAX_PAGE_SIZE,
    OrderedWindow,
    Page,
    RecordConflict,
    RecordRejected,
    ViewDisabled,
    Window,
    check_views,
    conflict,
    content_digest,
    format_views,
    paginate,
    paginate_ordered,
    parse_views,
)
from sqla_audit.errors import ConfigurationError, StoreError
from sqla_audit.tracing import TRACE_ID_KEY
from sqla_audit.wire_limits import MAX_IDENTIFIER_CHARS

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
CREATE INDEX IF NOT EXISTS audit_records_by_service_record
    ON audit_records (service, table_name, record_id, event_ms DESC, event_id DESC);
CREATE TABLE IF NOT EXISTS audit_seals (
    event_id TEXT PRIMARY KEY,
    seal TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: The layout this version writes (``PRAGMA user_version``); 1 is the layout before
#: records were identified by service (``user_version`` 0 there).
LAYOUT_VERSION: Final = 2

#: SQL of the trace id of a row: the metadata's ``otel.trace_id`` when it is a string.
_TRACE_EXPR: Final = f"json_extract(metadata, '$.\"{TRACE_ID_KEY}\"')"

#: The index each secondary view needs.
VIEW_INDEXES: Final = {
    "actor": "CREATE INDEX IF NOT EXISTS audit_records_by_actor ON audit_records "
    "(actor_id, event_ms DESC, event_id DESC) WHERE actor_id IS NOT NULL",
    "transaction": "CREATE INDEX IF NOT EXISTS audit_records_by_transaction ON audit_records "
    "(transaction_id, sequence, event_id)",
    "request": "CREATE INDEX IF NOT EXISTS audit_records_by_request ON audit_records "
    "(request_id, event_time_us, sequence, event_id) WHERE request_id IS NOT NULL",
    "trace": f"CREATE INDEX IF NOT EXISTS audit_records_by_trace ON audit_records "
    f"({_TRACE_EXPR}, event_time_us, sequence, event_id)",
    "table": "CREATE INDEX IF NOT EXISTS audit_records_by_table ON audit_records "
    "(service, table_name, event_time_us, sequence, event_id)",
}

_QUOTED: Final = ", ".join('"' + c + '"' for c in _COLUMNS)
_INSERT: Final = (
    f"INSERT OR IGNORE INTO audit_records ({_QUOTED}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT: Final = f"SELECT {_QUOTED} FROM audit_records"
_INSERT_SEAL: Final = "INSERT OR IGNORE INTO audit_seals (event_id, seal) VALUES (?, ?)"

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

    def __init__(
        self, path: str | Path, *, timeout: float = 10.0, views: frozenset[str] | None = None
    ) -> None:
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
            self.views = self._open_layout(None if views is None else check_views(views))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {target!r}: {exc}") from exc
        self._closed = False

    @classmethod
    def open_read_only(cls, path: str | Path, *, timeout: float = 10.0) -> SQLiteStore:
        """An existing store file opened for reading only (the query commands).

        The file is opened with SQLite's ``mode=ro``: nothing is created, no table, index or
        setting is written, the journal mode is left as it is and a layout-1 file is read
        as it is (not upgraded). A file that does not exist, is not a SQLite database or
        holds no ``audit_records`` table is a :class:`ConfigurationError` saying so in one
        line; writing through the store fails.
        """
        target = str(path).removeprefix("sqlite:///")
        name = Path(target).name or target
        if not target or target == ":memory:" or not Path(target).is_file():
            raise ConfigurationError(
                f"SQLite store {target!r} does not exist; pass the file the consumer writes "
                "(consume --store sqlite --store-url FILE)"
            )
        store = cls.__new__(cls)
        store.path = target
        store._lock = threading.Lock()
        store._closed = False
        uri = f"{Path(target).resolve().as_uri()}?mode=ro"
        try:
            store._conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {target!r}: {exc}") from exc
        try:
            store.views = store._read_layout(name)
        except BaseException:
            store._conn.close()
            raise
        return store

    def _read_layout(self, name: str) -> frozenset[str]:
        """Check, without writing, that the file holds a readable audit store; its views."""
        try:
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
            tables = {
                str(row[0])
                for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            recorded = None
            if "audit_settings" in tables:
                recorded = self._conn.execute(
                    "SELECT value FROM audit_settings WHERE name = 'views'"
                ).fetchone()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise ConfigurationError(
                    f"{name} is not a SQLite database ({exc}); is --store-url the audit store?"
                ) from exc
            raise StoreError(f"cannot read SQLite store {self.path!r}: {exc}") from exc
        if version > LAYOUT_VERSION:
            raise ConfigurationError(
                f"the SQLite store {self.path!r} holds audit layout {version}, newer than "
                f"this sqla-audit understands ({LAYOUT_VERSION}): upgrade sqla-audit"
            )
        if "audit_records" not in tables:
            raise ConfigurationError(
                f"{name} holds no audit store (no audit_records table); is --store-url the "
                "audit store, not the application database?"
            )
        return DEFAULT_VIEWS if recorded is None else parse_views(recorded[0])

    def _open_layout(self, views: frozenset[str] | None) -> frozenset[str]:
        """Check the file's layout, create or upgrade it; the views it keeps."""
        conn = self._conn
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > LAYOUT_VERSION:
            conn.close()
            raise ConfigurationError(
                f"the SQLite store {self.path!r} holds audit layout {version}, newer than "
                f"this sqla-audit understands ({LAYOUT_VERSION}): upgrade sqla-audit"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            recorded = conn.execute(
                "SELECT value FROM audit_settings WHERE name = 'views'"
            ).fetchone()
            if views is None:
                views = DEFAULT_VIEWS if recorded is None else parse_views(recorded[0])
            if recorded is None or parse_views(recorded[0]) != views:
                conn.execute(
                    "INSERT OR REPLACE INTO audit_settings (name, value) VALUES ('views', ?)",
                    (format_views(views),),
                )
            for view in sorted(views):
                conn.execute(VIEW_INDEXES[view])
            conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        return views

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
                    self._conn.executemany(_INSERT, fresh)
                    if seals:
                        self._conn.executemany(_INSERT_SEAL, seals)
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

    def seals(self, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Seal]:
        """The seals of the signed records among ``event_ids`` (see :mod:`consumer.verify`);
        none from a file written before seals existed (no ``audit_seals`` table)."""
        unique = list(dict.fromkeys(str(event_id) for event_id in event_ids))
        found: dict[uuid.UUID, Seal] = {}
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            try:
                rows = self._query(
                    f"SELECT event_id, seal FROM audit_seals WHERE event_id IN ({marks})",
                    tuple(chunk),
                )
            except StoreError as exc:
                if "no such table" in str(exc):
                    return {}
                raise
            for event_id, text in rows:
                seal = Seal.from_json(text)
                if seal is not None:
                    found[uuid.UUID(event_id)] = seal
        return found

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

    def _require(self, view: str) -> None:
        if view not in self.views:
            raise ViewDisabled(view)

    def history(
        self,
        service: str,
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
            self._scan(
                "service = ? AND table_name = ? AND record_id = ?",
                (service, table, record_id),
                window,
            ),
            window,
        )

    def services_of(self, table: str, record_id: str) -> list[str]:
        rows = self._query(
            "SELECT DISTINCT service FROM audit_records WHERE table_name = ? AND record_id = ? "
            "ORDER BY service",
            (table, record_id),
        )
        return [str(row[0]) for row in rows]

    def known_tables(self, limit: int = 500) -> list[tuple[str, str]]:
        """The ``(service, table)`` pairs of the store, sorted, at most ``limit``.

        Not part of :class:`AuditStore`: the viewer's table completion. One index probe per
        pair (a skip scan of ``audit_records_by_service_record``), not a scan of the records.
        """
        found: list[tuple[str, str]] = []
        sql = (
            "SELECT service, table_name FROM audit_records WHERE (service, table_name) > (?, ?) "
            "ORDER BY service, table_name LIMIT 1"
        )
        rows = self._query(
            "SELECT service, table_name FROM audit_records ORDER BY service, table_name LIMIT 1",
            (),
        )
        while rows and len(found) < limit:
            pair = (str(rows[0][0]), str(rows[0][1]))
            found.append(pair)
            rows = self._query(sql, pair)
        return found

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
        service: str | None = None,
    ) -> Page[AuditRecord]:
        self._require("actor")
        window = Window.build(since, until, limit, page)
        if service is None:
            found = self._scan("actor_id = ?", (actor_id,), window)
        else:
            found = self._scan("actor_id = ? AND service = ?", (actor_id, service), window)
        return paginate((r for r in found if not r.is_departure), window)

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        self._require("transaction")
        rows = self._query(
            f"{_SELECT} WHERE transaction_id = ? ORDER BY sequence, event_id",
            (str(transaction_id),),
        )
        found = (_from_tuple(values) for values in rows)
        return [record for record in found if not record.is_departure]

    def _scan_ordered(
        self, where: str, params: tuple[Any, ...], window: OrderedWindow
    ) -> Iterator[AuditRecord]:
        """Records in commit order (or its reverse) inside the window, by keyset in chunks."""
        clauses = [where]
        bounds: list[Any] = list(params)
        if window.low_us is not None:
            clauses.append("event_time_us >= ?")
            bounds.append(window.low_us)
        if window.high_us is not None:
            clauses.append("event_time_us <= ?")
            bounds.append(window.high_us)
        direction = "DESC" if window.newest_first else "ASC"
        past = "<" if window.newest_first else ">"
        position: tuple[int, int, str] | None = None
        if window.cursor is not None:
            cursor = window.cursor
            position = (cursor.micros, cursor.sequence, str(cursor.event_id))
        chunk = min(window.limit + 1, _MAX_CHUNK)
        while True:
            sql_clauses = list(clauses)
            sql_params = list(bounds)
            if position is not None:
                sql_clauses.append(f"(event_time_us, sequence, event_id) {past} (?, ?, ?)")
                sql_params += list(position)
            sql = (
                f"{_SELECT} WHERE {' AND '.join(sql_clauses)} ORDER BY event_time_us "
                f"{direction}, sequence {direction}, event_id {direction} LIMIT {chunk}"
            )
            rows = self._query(sql, tuple(sql_params))
            for values in rows:
                yield _from_tuple(values)
            if len(rows) < chunk:
                return
            last = _from_tuple(rows[-1])
            position = (to_micros(last.event_time), last.sequence, str(last.event_id))
            chunk = min(chunk * 2, _MAX_CHUNK)

    def by_request(
        self, request_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("request")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        if not request_id:
            return Page([], None)
        return paginate_ordered(self._scan_ordered("request_id = ?", (request_id,), window), window)

    def by_trace(
        self, trace_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("trace")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        if not trace_id or len(trace_id) > MAX_IDENTIFIER_CHARS:
            return Page([], None)  # the trace view indexes no such id
        return paginate_ordered(
            self._scan_ordered(f"{_TRACE_EXPR} = ?", (trace_id,), window), window
        )

    def by_table(
        self,
        service: str,
        table: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        newest_first: bool = True,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        self._require("table")
        window = OrderedWindow.build(since, until, limit, page, newest_first=newest_first)
        return paginate_ordered(
            self._scan_ordered("service = ? AND table_name = ?", (service, table), window), window
        )

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


__all__ = ["LAYOUT_VERSION", "SCHEMA", "SQLiteStore"]
