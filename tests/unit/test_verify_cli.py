"""``sqla-audit verify`` on a SQLite store: output and exit statuses."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest
from test_verify import KEY, T0, _records, signed_transaction

from consumer.cli import main
from consumer.differ import records_for_event
from consumer.failures import EXIT_NOTHING, EXIT_OK, EXIT_USAGE, EXIT_VERIFY_FAILED
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_event


@pytest.fixture
def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit.db"
    monkeypatch.setenv("SQLA_AUDIT_STORE", "sqlite")
    monkeypatch.setenv("SQLA_AUDIT_STORE_URL", str(path))
    monkeypatch.setenv("SQLA_AUDIT_SIGNING_KEYS", f"k1={base64.b64encode(KEY).decode()}")
    return path


def _write(path: Path, records: list) -> None:  # type: ignore[type-arg]
    store = SQLiteStore(path)
    store.write(records)
    store.close()


def test_verify_passes_then_fails_after_an_edit(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An untouched store verifies (exit 0); after a direct edit the record is named and
    the exit status is 5."""
    events = signed_transaction(3)
    _write(store_file, _records(events))
    txn = str(events[0].transaction_id)
    assert main(["verify", "transaction", txn]) == EXIT_OK
    assert "3 verified, 0 finding(s)" in capsys.readouterr().out
    conn = sqlite3.connect(store_file)
    with conn:
        conn.execute(
            "UPDATE audit_records SET actor_id = 'mallory' WHERE event_id = ?",
            (str(events[2].event_id),),
        )
    conn.close()
    assert main(["verify", "transaction", txn]) == EXIT_VERIFY_FAILED
    out = capsys.readouterr().out
    assert f"modified: billing accounts 2 event {events[2].event_id}" in out
    assert main(["verify", "record", "accounts", "2", "--json"]) == EXIT_VERIFY_FAILED
    report = json.loads(capsys.readouterr().out)
    assert [f["kind"] for f in report["findings"]] == ["modified"]


def test_verify_reports_unsigned_records_unless_allowed(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unsigned records fail verification unless --allow-unsigned, which still lists them."""
    _write(store_file, records_for_event(make_event(table="plain", committed_at=T0)))
    since = (T0 - dt.timedelta(days=1)).isoformat()
    assert main(["verify", "table", "billing", "plain", "--since", since]) == EXIT_VERIFY_FAILED
    args = ["verify", "table", "billing", "plain", "--since", since, "--allow-unsigned"]
    assert main(args) == EXIT_OK
    assert "unsigned: billing plain 1" in capsys.readouterr().out


def test_verify_nothing_found_and_missing_keys(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No records: exit 1. No verifying keys: one line naming the setting, exit 2."""
    _write(store_file, [])
    assert main(["verify", "record", "accounts", "404", "--service", "billing"]) == EXIT_NOTHING
    assert "nothing to verify" in capsys.readouterr().err
    monkeypatch.delenv("SQLA_AUDIT_SIGNING_KEYS")
    assert main(["verify", "record", "accounts", "404"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "SQLA_AUDIT_SIGNING_KEYS" in err
    assert len(err.strip().splitlines()) == 1
