"""Terminal tables fit the terminal: long cells wrap (never cut), REQUEST shows where records
carry request ids, --wide and pipes get everything unwrapped."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.query import RecordState
from consumer.render import render_records, render_state, render_table
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_record

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
LONG = "x" * 150 + "END"


def _long_update(**overrides: object) -> object:
    return make_record(
        before={"id": "1", "note": "short"},
        after={"id": "1", "note": LONG},
        committed_at=T0,
        actor="alice",
        **overrides,
    )


def _unwrapped(text: str, header: str = "CHANGES") -> str:
    """The text of one column of a rendered table, its wrapped lines joined."""
    lines = text.splitlines()
    heading = next(i for i, line in enumerate(lines) if header in line.split())
    start = lines[heading].index(header)
    return "".join(line[start:].strip() for line in lines[heading + 2 :])


@pytest.mark.parametrize("width", [60, 80, 120])
def test_long_values_wrap_to_the_width_and_are_kept_whole(width: int) -> None:
    """At a fixed width every line fits and the whole value is still there, not cut."""
    text = render_records([_long_update()], width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    assert LONG in _unwrapped(text)


def test_without_width_nothing_wraps() -> None:
    """Without a width (--wide, or a pipe) each value is on one line, whole."""
    text = render_records([_long_update()])
    assert f'note: "short" → "{LONG}"' in text


def test_render_table_wraps_the_widest_column_first() -> None:
    """Narrow columns keep their width; the long one wraps."""
    text = render_table(["ID", "TEXT"], [[["1"], ["a" * 50]]], width=30)
    lines = text.splitlines()
    assert lines[0].startswith("ID  TEXT")
    assert max(len(line) for line in lines) <= 30
    assert "".join(line[4:] for line in lines[2:]) == "a" * 50


def test_request_column_where_records_have_request_ids() -> None:
    """REQUEST appears when a record has a request id, and not when none has."""
    with_request = render_records([_long_update()])
    assert "REQUEST" in with_request.splitlines()[0]
    assert "req-1" in with_request
    without = render_records([_long_update(request_id=None)])
    assert "REQUEST" not in without.splitlines()[0]


def test_state_wraps_too() -> None:
    """as-of's column/value table wraps to the width as well."""
    record = make_record(operation="insert", after={"id": "1", "note": LONG}, committed_at=T0)
    state = RecordState("t", "1", T0, True, {"id": "1", "note": LONG}, record.after, record)
    text = render_state(state, width=70)
    assert max(len(line) for line in text.splitlines()) <= 70
    assert LONG in _unwrapped(text, "VALUE")


@pytest.fixture
def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SQLA_AUDIT_STORE", "SQLA_AUDIT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    store.write([_long_update()])  # type: ignore[list-item]
    store.close()
    return path


def _history(path: Path, *flags: str) -> list[str]:
    return ["history", "accounts", "1", "--store", "sqlite", "--store-url", str(path), *flags]


def test_terminal_width_from_columns(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal the table fits COLUMNS; --wide turns wrapping off."""
    monkeypatch.setenv("COLUMNS", "72")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(_history(store_file)) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 72
    assert LONG in _unwrapped(out)
    assert main(_history(store_file, "--wide")) == 0
    assert f'"{LONG}"' in capsys.readouterr().out


def test_piped_output_is_not_wrapped(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When stdout is not a terminal the table is not wrapped, whatever COLUMNS says."""
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert main(_history(store_file)) == 0
    assert f'"{LONG}"' in capsys.readouterr().out
