"""The SQLite store: the file opened (for writing, or read-only), its layout checked, and the
write and read paths over one connection behind a lock."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from consumer.sinks.base import check_views
from consumer.sinks.sqlite.layout import open_layout, read_layout
from consumer.sinks.sqlite.reads import SQLiteReads
from consumer.sinks.sqlite.writes import SQLiteWrites
from sqla_audit.errors import ConfigurationError, StoreError


class SQLiteStore(SQLiteWrites, SQLiteReads):
    """An :class:`~consumer.sinks.base.AuditStore` over one SQLite file (or ``:memory:``).

    The write path is :class:`~consumer.sinks.sqlite.writes.SQLiteWrites`, the read path
    :class:`~consumer.sinks.sqlite.reads.SQLiteReads`; this class opens the file and its
    layout (:mod:`~consumer.sinks.sqlite.layout`) and closes it.
    """

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
            self.views = open_layout(
                self._conn, target, None if views is None else check_views(views)
            )
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
            store.views = read_layout(store._conn, target, name)
        except BaseException:
            store._conn.close()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
