"""The query commands only read: they open the SQLite audit store read-only, never create
or alter a file, and say in one line (exit 2) when a file holds no audit store."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_record
from sqla_audit.errors import StoreError

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)

#: Every query command, with the arguments it needs besides the store.
QUERY_COMMANDS = [
    ["history", "users", "42"],
    ["as-of", "users", "42", "--at", "now"],
    ["actor", "alice"],
    ["transaction", "0192e4a1-7b2c-7d3e-8f40-123456789abc"],
    ["request", "req-1"],
    ["changes", "shop", "users", "--since", "7d"],
]


@pytest.fixture(autouse=True)
def _no_store_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SQLA_AUDIT_STORE", "SQLA_AUDIT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)


def _application_database(path: Path) -> Path:
    """An application's SQLite database (rollback journal, one table, one row)."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO users (name) VALUES ('alice')")
    connection.close()
    return path


def _journal_mode(path: Path) -> str:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _sqlite(path: Path) -> list[str]:
    return ["--store", "sqlite", "--store-url", str(path)]


@pytest.mark.parametrize("argv", QUERY_COMMANDS, ids=lambda argv: argv[0])
def test_application_database_is_left_byte_identical(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A query pointed at an application database exits 2 with one line and changes nothing."""
    app = _application_database(tmp_path / "app.db")
    before = _files(tmp_path)
    code = main([*argv, *_sqlite(app)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert "app.db holds no audit store (no audit_records table)" in err
    assert "is --store-url the audit store, not the application database?" in err
    assert _files(tmp_path) == before  # no table, no WAL or journal file, same bytes
    assert _journal_mode(app) == "delete"


@pytest.mark.parametrize("argv", QUERY_COMMANDS, ids=lambda argv: argv[0])
def test_missing_store_file_is_not_created(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store file that does not exist: exit 2, one line naming it, and no file created."""
    code = main([*argv, *_sqlite(tmp_path / "audit.db")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "audit.db" in err
    assert "does not exist" in err
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_sqlite_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a SQLite database: exit 2, one line, the file untouched."""
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 200)
    before = _files(tmp_path)
    code = main(["history", "users", "42", *_sqlite(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "notes.txt is not a SQLite database" in err
    assert _files(tmp_path) == before


def _layout_1_store(path: Path) -> None:
    """A store as the previous layout left it: user_version 0, no settings table, no
    service-first or view indexes."""
    store = SQLiteStore(path)
    store.write(
        [
            make_record(table="users", record_id="42", operation="insert", committed_at=T0,
                        after={"id": "42", "name": "a"}, service="shop"),
            make_record(table="users", record_id="42", committed_at=T0 + dt.timedelta(seconds=1),
                        before={"id": "42", "name": "a"}, after={"id": "42", "name": "b"},
                        service="shop", actor="alice"),
        ]
    )  # fmt: skip
    store.close()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=DELETE")
    for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND name != 'audit_records_by_record'"
    ).fetchall():
        connection.execute(f"DROP INDEX {name}")
    connection.execute("DROP TABLE audit_settings")
    connection.execute("PRAGMA user_version = 0")
    connection.commit()
    connection.execute("VACUUM")
    connection.close()


def test_layout_1_store_is_read_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A layout-1 store file is queried without being upgraded or otherwise written."""
    path = tmp_path / "audit.db"
    _layout_1_store(path)
    before = _files(tmp_path)
    assert main(["history", "users", "42", *_sqlite(path)]) == 0
    assert 'name: "a" → "b"' in capsys.readouterr().out
    assert main(["actor", "alice", "--since", "3650d", *_sqlite(path)]) == 0
    assert _files(tmp_path) == before


def test_a_store_in_use_by_the_consumer_is_read_without_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A WAL-mode store open for writing is queried read-only; its main file is unchanged."""
    path = tmp_path / "audit.db"
    writer = SQLiteStore(path)
    writer.write([make_record(table="users", record_id="1", operation="insert",
                              after={"id": "1"}, committed_at=T0)])  # fmt: skip
    try:
        before = path.read_bytes()
        assert main(["history", "users", "1", *_sqlite(path)]) == 0
        assert "users" not in capsys.readouterr().err
        assert path.read_bytes() == before
    finally:
        writer.close()


def test_sqlite_store_open_read_only_refuses_writes(tmp_path: Path) -> None:
    """A store opened read-only cannot write, even when asked to."""
    path = tmp_path / "audit.db"
    SQLiteStore(path).close()
    before = path.read_bytes()
    store = SQLiteStore.open_read_only(path)
    try:
        with pytest.raises(StoreError, match="readonly"):
            store.write([make_record(operation="insert", after={"id": "1"})])
    finally:
        store.close()
    assert path.read_bytes() == before
