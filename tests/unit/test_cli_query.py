"""The query sub-commands: history, as-of, actor, transaction (tables, JSON, exit codes)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import sys
import uuid
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.commands import query as commands
from consumer.records import AuditRecord
from consumer.sinks.base import AuditStore
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_record
from sqla_audit.errors import StoreError

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
TXN = uuid.UUID("0192e4a1-7b2c-7d3e-8f40-123456789abc")


def _row(name: str, balance: str = "10.00") -> dict[str, object]:
    return {"id": "42", "name": name, "balance": {"$type": "decimal", "v": balance}}


def _records() -> list[AuditRecord]:
    at = [T0 + dt.timedelta(seconds=i) for i in range(4)]
    return [
        make_record(table="users", record_id="42", operation="insert", after=_row("a"),
                    committed_at=at[0], transaction_id=TXN, sequence=0),
        make_record(table="users", record_id="7", operation="insert", after=_row("z"),
                    committed_at=at[0], transaction_id=TXN, sequence=1, actor="bob"),
        make_record(table="users", record_id="42", before=_row("a"), after=_row("b", "12.50"),
                    committed_at=at[1], actor="bob"),
        make_record(table="users", record_id="42", operation="delete", before=_row("b", "12.50"),
                    committed_at=at[2]),
        make_record(table="users", record_id="42", operation="insert", after=_row("c"),
                    committed_at=at[3]),
    ]  # fmt: skip


@pytest.fixture
def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SQLA_AUDIT_STORE", "SQLA_AUDIT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    store.write(_records())
    store.close()
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqla-audit")
    commands.register(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The sqla-audit command line on ``argv``: exit status, stdout, stderr."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def sqlite(path: Path) -> list[str]:
    return ["--store", "sqlite", "--store-url", str(path)]


# --------------------------------------------------------------------------- history


def test_history_prints_a_table_newest_first(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """history prints time, operation, actor, transaction and old → new per column."""
    code, out, err = run(["history", "users", "42", *sqlite(store_file)], capsys)
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "EVENT TIME",
        "OP",
        "ACTOR",
        "REQUEST",
        "TRANSACTION",
        "CHANGES",
    ]
    ops = [line.split()[1] for line in lines[2:] if re.match(r"^\d{4}-", line)]
    assert ops == ["insert", "delete", "update", "insert"]
    assert "balance: 10.00 → 12.50" in out
    assert 'name: "a" → "b"' in out
    assert str(TXN) in out
    assert "2026-01-10T12:00:01.000000Z" in out


def test_history_json_lines(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """history --json prints one JSON object per change with wire-encoded values."""
    code, out, _ = run(["history", "users", "42", "--json", *sqlite(store_file)], capsys)
    assert code == 0
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["operation"] for o in objects] == ["insert", "delete", "update", "insert"]
    update = objects[2]
    assert update["changes"]["balance"] == {
        "old": {"$type": "decimal", "v": "10.00"},
        "new": {"$type": "decimal", "v": "12.50"},
    }
    assert update["actor"] == {"id": "bob", "attributes": {}}
    assert objects[3]["transaction_id"] == str(TXN)


def test_history_limit_and_page_token(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--limit cuts the output and names a --page token that continues exactly after it."""
    code, out, err = run(
        ["history", "users", "42", "--json", "--limit", "3", *sqlite(store_file)], capsys
    )
    assert code == 0
    assert len(out.splitlines()) == 3
    token = re.search(r"--page (\S+)", err)
    assert token is not None
    code, rest, err = run(
        ["history", "users", "42", "--json", "--page", token.group(1), *sqlite(store_file)], capsys
    )
    assert code == 0
    assert err == ""
    assert [json.loads(line)["operation"] for line in rest.splitlines()] == ["insert"]


def test_history_window_and_column(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since/--until bound the history; --column keeps the changes of one column."""
    code, out, _ = run(
        ["history", "users", "42", "--json", "--since", "2026-01-10T12:00:01Z",
         "--until", "2026-01-10T13:00:02+01:00", *sqlite(store_file)],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert [json.loads(line)["operation"] for line in out.splitlines()] == ["delete", "update"]
    code, out, _ = run(["history", "users", "42", "--column", "name", *sqlite(store_file)], capsys)
    assert code == 0
    assert 'name: "a" → "b"' in out


def test_history_nothing_found(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """history of an unknown record exits 1 with a message on stderr and nothing on stdout."""
    code, out, err = run(["history", "users", "404", *sqlite(store_file)], capsys)
    assert (code, out) == (1, "")
    assert "no changes recorded for users 404" in err
    code, _, err = run(
        ["history", "users", "42", "--until", "2025-01-01T00:00:00Z", *sqlite(store_file)], capsys
    )
    assert code == 1
    assert "until 2025-01-01T00:00:00.000000Z" in err


def test_history_since_after_until_is_bad_arguments(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A window whose since is after its until exits 2 and says why."""
    code, _, err = run(
        ["history", "users", "42", "--since", "2026-02-01T00:00:00Z",
         "--until", "2026-01-01T00:00:00Z", *sqlite(store_file)],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "is after until" in err


def test_bad_page_token_is_bad_arguments(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed --page token exits 2."""
    code, _, err = run(
        ["history", "users", "42", "--page", "garbage!", *sqlite(store_file)], capsys
    )
    assert code == 2
    assert "page token" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["history", "users", "42", "--since", "2026-01-01T00:00:00"], "has no timezone"),
        (["history", "users", "42", "--until", "2026-01-01"], "has no timezone"),
        (["history", "users", "42", "--since", "yesterday"], "not an ISO 8601 time"),
        (["history", "users", "42", "--limit", "0"], "from 1 to 10000"),
        (["history", "users", "42", "--limit", "many"], "from 1 to 10000"),
        (["history", "users"], "required: record_id"),
        (["history", "", "42"], "table must not be empty"),
        (["as-of", "users", "42"], "--at"),
        (["as-of", "users", "42", "--at", "2026-01-01 00:00"], "has no timezone"),
        (["transaction", "abc"], "is not a transaction id"),
        (["actor", "alice", "--since", "5 days"], "not an ISO 8601 time"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Naive or malformed times, bad limits, missing arguments and bad ids exit 2 with a reason."""
    assert message in usage_error(argv, capsys)


# --------------------------------------------------------------------------- as-of


def test_as_of_prints_the_record(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """as-of prints the last change and every column's value at that time."""
    code, out, _ = run(
        ["as-of", "users", "42", "--at", "2026-01-10T12:00:01.5Z", *sqlite(store_file)], capsys
    )
    assert code == 0
    assert out.startswith(
        "users 42 in billing as of 2026-01-10T12:00:01.500000Z: last change update at "
    )
    assert "by bob" in out
    assert re.search(r"^balance\s+12\.50$", out, re.MULTILINE)
    assert re.search(r'^name\s+"b"$', out, re.MULTILINE)


def test_as_of_deleted(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """as-of after a delete says the record did not exist and names the delete."""
    code, out, _ = run(
        ["as-of", "users", "42", "--at", "2026-01-10T13:00:02.5+01:00", *sqlite(store_file)], capsys
    )
    assert code == 0
    assert "did not exist (deleted: delete at 2026-01-10T12:00:02.000000Z" in out


def test_as_of_json(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """as-of --json prints one object with exists, wire values and the event."""
    code, out, _ = run(
        ["as-of", "users", "42", "--json", "--at", "2026-01-10T12:00:00Z", *sqlite(store_file)],
        capsys,
    )
    assert code == 0
    state = json.loads(out)
    assert state["exists"] is True
    assert state["values"] == _row("a")
    assert state["event"]["operation"] == "insert"
    assert state["at"] == "2026-01-10T12:00:00.000000Z"
    code, out, _ = run(
        ["as-of", "users", "42", "--json", "--at", "2026-01-10T12:00:02Z", *sqlite(store_file)],
        capsys,
    )
    deleted = json.loads(out)
    assert (deleted["exists"], deleted["values"], deleted["event"]["operation"]) == (
        False,
        None,
        "delete",
    )


def test_as_of_before_any_change(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """as-of before the first change exits 1; --json still prints the (empty) state."""
    argv = ["as-of", "users", "42", "--at", "2026-01-01T00:00:00Z", *sqlite(store_file)]
    code, out, err = run(argv, capsys)
    assert (code, out) == (1, "")
    assert "no change recorded for users 42 at or before 2026-01-01T00:00:00.000000Z" in err
    code, out, _ = run([*argv, "--json"], capsys)
    assert code == 1
    assert json.loads(out) == {
        "service": "billing",
        "table": "users",
        "record_id": "42",
        "at": "2026-01-01T00:00:00.000000Z",
        "exists": False,
        "values": None,
        "event": None,
    }


# --------------------------------------------------------------------------- actor, transaction


def test_actor_lists_changes_with_table_and_record(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """actor prints what one actor changed in the window, with service, table and record id."""
    code, out, _ = run(
        ["actor", "bob", "--since", "2026-01-10T00:00:00Z", "--until", "2026-01-11T00:00:00Z",
         *sqlite(store_file)],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert re.split(r"\s{2,}", out.splitlines()[0]) == [
        "EVENT TIME", "OP", "SERVICE", "TABLE", "RECORD", "ACTOR", "REQUEST", "TRANSACTION",
        "CHANGES",
    ]  # fmt: skip
    rows = [line.split()[:5] for line in out.splitlines()[2:] if re.match(r"^\d{4}-", line)]
    assert [row[1:] for row in rows] == [
        ["update", "billing", "users", "42"],
        ["insert", "billing", "users", "7"],
    ]


def test_actor_default_window_is_last_24_hours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """actor without --since looks back 24 hours; --since 3d reaches further."""
    now = dt.datetime.now(dt.UTC)
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    recent = make_record(committed_at=now - dt.timedelta(hours=1), actor="carol")
    old = make_record(committed_at=now - dt.timedelta(hours=30), actor="carol", record_id="2")
    store.write([recent, old])
    store.close()
    code, out, _ = run(["actor", "carol", "--json", *sqlite(path)], capsys)
    assert code == 0
    assert [json.loads(line)["event_id"] for line in out.splitlines()] == [str(recent.event_id)]
    code, out, _ = run(["actor", "carol", "--json", "--since", "3d", *sqlite(path)], capsys)
    assert len(out.splitlines()) == 2
    code, _, err = run(["actor", "dave", *sqlite(path)], capsys)
    assert code == 1
    assert "no changes recorded for actor dave since 20" in err


def test_transaction(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """transaction prints every change of one commit in sequence order; unknown exits 1."""
    code, out, _ = run(["transaction", str(TXN), "--json", *sqlite(store_file)], capsys)
    assert code == 0
    assert [json.loads(line)["record_id"] for line in out.splitlines()] == ["42", "7"]
    code, out, err = run(["transaction", str(uuid.uuid4()), *sqlite(store_file)], capsys)
    assert (code, out) == (1, "")
    assert "no changes recorded for transaction" in err


# --------------------------------------------------------------------------- store selection


def test_store_from_environment(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLA_AUDIT_STORE and SQLA_AUDIT_STORE_URL choose the store when flags are absent."""
    monkeypatch.setenv("SQLA_AUDIT_STORE", "sqlite")
    monkeypatch.setenv("SQLA_AUDIT_STORE_URL", str(store_file))
    code, out, _ = run(["transaction", str(TXN)], capsys)
    assert code == 0
    assert "users" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--store", "sqlite"], "needs --store-url"),
        (["--store", "sqlite", "--store-url", "/nonexistent/audit.db"], "does not exist"),
        (["--store", "mongodb"], "must be cassandra or sqlite"),
        (["--store", "cassandra", "--cassandra-port", "99999"], "--cassandra-port"),
        (["--store", "cassandra", "--keyspace", "bad-name"], "--keyspace"),
    ],
)
def test_bad_store_settings_exit_2(
    flags: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An incomplete or invalid store configuration exits 2 naming the flag to fix."""
    monkeypatch.delenv("SQLA_AUDIT_STORE", raising=False)
    monkeypatch.delenv("SQLA_AUDIT_STORE_URL", raising=False)
    code, out, err = run(["transaction", str(TXN), *flags], capsys)
    assert (code, out) == (2, "")
    assert message in err


class _BrokenStore(MemoryStore):
    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        raise StoreError("connection reset")


def test_store_failure_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store that fails while reading exits 3 with the reason, and is closed."""
    broken = _BrokenStore()

    def fake_open(args: argparse.Namespace, env: object) -> AuditStore:
        return broken

    monkeypatch.setattr(commands, "open_store", fake_open)
    code, _, err = run(["transaction", str(TXN)], capsys)
    assert code == 3
    assert err == (
        "sqla-audit: error: connection reset; check that it is running and reachable, "
        "then run the command again\n"
    )
    assert broken.closed


def test_store_unavailable_at_open_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store that cannot be opened exits 3 with one line saying what to do."""

    def fake_open(args: argparse.Namespace, env: object) -> AuditStore:
        raise StoreError("cannot connect to Cassandra: refused")

    monkeypatch.setattr(commands, "open_store", fake_open)
    code, _, err = run(["transaction", str(TXN)], capsys)
    assert code == 3
    assert err.count("\n") == 1
    assert err.startswith("sqla-audit: error: cannot connect")
    assert "check that it is running and reachable" in err


def test_ascii_terminal_gets_ascii_arrows(
    store_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal that cannot show →, the table uses -> instead of failing."""
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stream)
    args = _parser().parse_args(["history", "users", "42", *sqlite(store_file)])
    assert args.func(args) == 0
    stream.flush()
    assert "balance: 10.00 -> 12.50" in buffer.getvalue().decode("ascii")


def test_parse_since_duration() -> None:
    """--since accepts a duration back from now in s, m, h or d, or an ISO 8601 time."""
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert commands.parse_since("90m", now=lambda: now) == now - dt.timedelta(minutes=90)
    assert commands.parse_since("7d", now=lambda: now) == now - dt.timedelta(days=7)
    assert commands.parse_instant("2026-01-01T00:00:00z") == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert commands.parse_since("2026-01-01T00:00:00+02:00") == dt.datetime(
        2025, 12, 31, 22, tzinfo=dt.UTC
    )


def test_registered_in_the_sqla_audit_cli(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sqla-audit entry point knows the query commands and returns their exit code."""
    assert main(["history", "users", "42", *sqlite(store_file)]) == 0
    assert "balance: 10.00 → 12.50" in capsys.readouterr().out
    assert main(["as-of", "users", "404", "--at", "2026-01-01T00:00:00Z", *sqlite(store_file)]) == 1


def test_column_history_pages_through_matching_changes_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """history --column with --limit cuts after the last match shown; its --page token
    continues with the next change of that column, skipping the other columns' changes."""
    rows = [_row("a", "1.00"), _row("b", "1.00"), _row("b", "2.00"), _row("c", "2.00")]
    records = [
        make_record(
            table="users", record_id="42", operation="insert", after=rows[0], committed_at=T0
        )
    ]
    records += [
        make_record(table="users", record_id="42", before=rows[i - 1], after=rows[i],
                    committed_at=T0 + dt.timedelta(seconds=i))
        for i in range(1, 4)
    ]  # fmt: skip
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    store.write(records)
    store.close()
    argv = ["history", "users", "42", "--column", "name", "--json", "--limit", "1", *sqlite(path)]
    shown: list[str] = []
    page: list[str] = []
    for _ in range(4):
        code, out, err = run([*argv, *page], capsys)
        assert code == 0
        shown += [json.loads(line)["event_id"] for line in out.splitlines()]
        token = re.search(r"--page (\S+)", err)
        if token is None:
            break
        page = ["--page", token.group(1)]
    assert shown == [str(records[i].event_id) for i in (3, 1, 0)]


@pytest.mark.parametrize("output", ["table", "csv"])
def test_history_column_shows_only_that_column_of_inserts_and_deletes(
    output: str, store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--column C shows C alone for every change, inserts and deletes included."""
    code, out, _ = run(
        ["history", "users", "42", "--column", "name", "--format", output, *sqlite(store_file)],
        capsys,
    )
    assert code == 0
    assert "name" in out
    assert "balance" not in out
    assert '"a"' in out
    if output == "table":
        assert 'name: "b" → (deleted)' in out
        assert 'name: "c"' in out
