"""The read path: history and the views, by keyset in growing chunks; the seals."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final

from consumer.records import AuditRecord, to_micros
from consumer.seal import Seal
from consumer.sinks.base import (
    MAX_PAGE_SIZE,
    OrderedWindow,
    Page,
    ViewDisabled,
    Window,
    paginate,
    paginate_ordered,
)
from consumer.sinks.sqlite.schema import (
    COLUMNS,
    LOOKUP_CHUNK,
    SELECT,
    TRACE_EXPR,
    from_tuple,
)
from sqla_audit.errors import StoreError
from sqla_audit.wire_limits import MAX_IDENTIFIER_CHARS

#: Most rows fetched per round trip while scanning (the first chunk is ``limit + 1``).
_MAX_CHUNK: Final = MAX_PAGE_SIZE + 1
_EVENT_MS: Final = COLUMNS.index("event_ms")


class SQLiteReads:
    """The read half of :class:`~consumer.sinks.sqlite.SQLiteStore`."""

    _conn: sqlite3.Connection
    _lock: threading.Lock
    views: frozenset[str]

    def seals(self, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Seal]:
        """The seals of the signed records among ``event_ids`` (see :mod:`consumer.verify`);
        none from a file written before seals existed (no ``audit_seals`` table)."""
        unique = list(dict.fromkeys(str(event_id) for event_id in event_ids))
        found: dict[uuid.UUID, Seal] = {}
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
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
                f"{SELECT} WHERE {' AND '.join(sql_clauses)} "
                f"ORDER BY event_ms DESC, event_id DESC LIMIT {chunk}"
            )
            rows = self._query(sql, tuple(sql_params))
            for values in rows:
                yield from_tuple(values)
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
            f"{SELECT} WHERE transaction_id = ? ORDER BY sequence, event_id",
            (str(transaction_id),),
        )
        found = (from_tuple(values) for values in rows)
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
                f"{SELECT} WHERE {' AND '.join(sql_clauses)} ORDER BY event_time_us "
                f"{direction}, sequence {direction}, event_id {direction} LIMIT {chunk}"
            )
            rows = self._query(sql, tuple(sql_params))
            for values in rows:
                yield from_tuple(values)
            if len(rows) < chunk:
                return
            last = from_tuple(rows[-1])
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
            self._scan_ordered(f"{TRACE_EXPR} = ?", (trace_id,), window), window
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
