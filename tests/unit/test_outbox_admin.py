"""Operator commands on SQLite: outbox status/requeue, relay --once, consume --until-empty,
and the CLI's common options and help."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws

from consumer.cli import build_parser, iter_commands, main
from consumer.testing import make_event
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table

EventFactory = Callable[..., ChangeEvent]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A SQLite application database with the outbox table."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(url)
    create_outbox_table(engine)
    engine.dispose()
    return url


def _write(url: str, count: int) -> list[ChangeEvent]:
    events = [
        make_event(operation=Operation.INSERT, record_id=str(i), actor="alice")
        for i in range(count)
    ]
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        OutboxWriter(layout=1).write(connection, events)  # one row per event
    engine.dispose()
    return events


def _park(url: str, row_id: int, error: str, when: dt.datetime) -> None:
    engine = sa.create_engine(url)
    table = outbox_table()
    with engine.begin() as connection:
        connection.execute(
            sa.update(table).where(table.c.id == row_id).values(failed_at=when, last_error=error)
        )
    engine.dispose()


def _counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    try:
        return outbox_counts(engine)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- outbox status


def test_status_json_lists_parked_rows_with_their_error(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """status --json: counts, and per parked row its ids, table, record, time and error."""
    events = _write(db_url, 3)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    _park(db_url, 2, "SNSRejectedError: InvalidParameter: too big", when)
    assert main(["outbox", "status", "--db", db_url, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["pending"] == 2
    assert document["parked"] == 1
    (row,) = document["parked_rows"]
    assert row["id"] == 2
    assert row["event_id"] == str(events[1].event_id)
    assert row["table"] == events[1].table
    assert row["record_id"] == "1"
    assert row["parked_at"] == "2026-01-02T03:04:05Z"
    assert row["last_error"] == "SNSRejectedError: InvalidParameter: too big"


def test_status_counts_events_of_transaction_rows(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """status counts events, not rows: a 3-event transaction row is 3 pending events."""
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        OutboxWriter().write(connection, [make_event(record_id=str(i)) for i in range(3)])
    engine.dispose()
    _write(db_url, 1)
    _park(db_url, 2, "refused", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert main(["outbox", "status", "--db", db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["pending 3 (in 1 row)", "parked 1"]
    assert main(["outbox", "status", "--db", db_url, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["pending"], document["parked"]) == (3, 1)
    assert (document["pending_row_count"], document["parked_row_count"]) == (1, 1)
    assert document["parked_rows"][0]["event_count"] == 1


def test_status_text_shows_each_parked_row(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The text status ends with one line per parked row, with its last error."""
    _write(db_url, 2)
    _park(db_url, 1, "refused", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert main(["outbox", "status", "--db", db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["pending 1", "parked 1"]
    assert lines[2].startswith("  #1 ")
    assert lines[2].endswith("parked 2026-01-01T00:00:00Z: refused")


@pytest.mark.parametrize("action", ["status", "requeue"])
def test_read_commands_do_not_create_a_database(
    tmp_path: Path, action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """status and requeue on a SQLite file that does not exist: exit 2, no file left."""
    missing = tmp_path / "typo.db"
    assert main(["outbox", action, "--db", f"sqlite:///{missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_consume_does_not_create_the_outbox_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """consume --source outbox on a missing SQLite file: exit 2, no file left."""
    missing = tmp_path / "typo.db"
    argv = ["consume", "--source", "outbox", "--db", f"sqlite:///{missing}"]
    argv += ["--store", "sqlite", "--store-url", str(tmp_path / "audit.db"), "--until-empty"]
    assert main([*argv, "--metrics-port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


# --------------------------------------------------------------------------- outbox requeue


def _parked_fixture(url: str) -> None:
    _write(url, 5)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    new = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    _park(url, 1, "SNSRejectedError: InvalidParameter", old)
    _park(url, 2, "undecodable payload: not JSON", old)
    _park(url, 3, "SNSRejectedError: KMS.Disabled", new)
    _park(url, 4, "SNSRejectedError: InvalidParameter", new)


def _parked_ids(url: str) -> list[int]:
    engine = sa.create_engine(url)
    table = outbox_table()
    with engine.connect() as connection:
        ids = connection.execute(
            sa.select(table.c.id).where(table.c.failed_at.is_not(None)).order_by(table.c.id)
        ).scalars()
        result = list(ids)
    engine.dispose()
    return result


@pytest.mark.parametrize(
    ("filters", "requeued"),
    [
        (["--id-from", "2", "--id-to", "3"], [2, 3]),
        (["--error", "invalidparameter"], [1, 4]),
        (["--older-than", "1d"], [1, 2]),
        (["--error", "SNSRejected", "--older-than", "1h"], [1]),
        ([], [1, 2, 3, 4]),
    ],
)
def test_requeue_filters(
    db_url: str, filters: list[str], requeued: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    """requeue acts only on the parked rows every filter chooses, and prints each one."""
    _parked_fixture(db_url)
    assert main(["outbox", "requeue", "--db", db_url, *filters]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"requeued {len(requeued)} parked row(s):"
    assert [int(m) for m in re.findall(r"#(\d+) ", out)] == requeued
    assert _parked_ids(db_url) == [i for i in (1, 2, 3, 4) if i not in requeued]


def test_requeue_dry_run_changes_nothing(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run lists the rows it would requeue and leaves them parked."""
    _parked_fixture(db_url)
    assert main(["outbox", "requeue", "--db", db_url, "--error", "kms", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "would requeue 1 parked row(s):"
    assert _parked_ids(db_url) == [1, 2, 3, 4]


def test_requeue_without_a_match_exits_1(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No parked row matches: exit 1 (nothing found), nothing changes."""
    _parked_fixture(db_url)
    assert main(["outbox", "requeue", "--db", db_url, "--error", "no such text"]) == 1
    assert "no parked row matched" in capsys.readouterr().err
    assert _parked_ids(db_url) == [1, 2, 3, 4]


# --------------------------------------------------------------------------- relay --once


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An SNS topic in an in-process AWS mock."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "SQLA_AUDIT_DB_URL", "SQLA_AUDIT_TOPIC_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("sns", region_name="us-east-1").create_topic(Name="audit")["TopicArn"]


def test_relay_once_exits_4_and_explains_parked_rows(
    topic: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row the relay parks: exit 4, one line per parked row with the reason, no traceback."""
    _write(db_url, 2)
    engine = sa.create_engine(db_url)
    table = outbox_table()
    with engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.id == 2).values(payload="{not json"))
    engine.dispose()
    assert main(["relay", "--db", db_url, "--topic-arn", topic, "--once"]) == 4
    captured = capsys.readouterr()
    assert captured.out.strip() == "published 1, parked 1, left 0"
    lines = captured.err.strip().splitlines()
    assert any(line.startswith("sqla-audit: parked outbox row 2: undecodable") for line in lines)
    assert lines[-1].startswith("sqla-audit: 1 row(s) parked; fix the cause")
    assert "Traceback" not in captured.err
    assert _counts(db_url) == (0, 1)


# --------------------------------------------------------------------------- consume --until-empty


def test_consume_until_empty_drains_and_summarises(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--until-empty stores every pending row, exits 0 and prints a summary."""
    _write(db_url, 7)
    store = tmp_path / "audit.db"
    argv = ["consume", "--source", "outbox", "--db", db_url, "--store", "sqlite"]
    argv += ["--store-url", str(store), "--until-empty", "--metrics-port", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("drained the outbox: received 7 message(s): stored 7 change(s)")
    assert _counts(db_url) == (0, 0)
    with contextlib.closing(sqlite3.connect(store)) as connection:
        (stored,) = connection.execute("SELECT count(*) FROM audit_records").fetchone()
    assert stored == 7


# --------------------------------------------------------------------------- common options, help


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the program and its version."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.match(r"^sqla-audit \S+$", capsys.readouterr().out.strip())


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "WARNING", "--log-format", "json", "schema", "cql"],
        ["schema", "cql", "--log-level", "WARNING", "--log-format", "json"],
        ["schema", "--log-level", "warning", "cql", "--log-format", "json"],
    ],
)
def test_log_options_before_or_after_the_command(argv: list[str]) -> None:
    """--log-level and --log-format are accepted before and after the sub-command."""
    args = build_parser().parse_args(argv)
    assert args.log_level == "WARNING"
    assert args.log_format == "json"


_MARKUP = re.compile(r"``|:(mod|class|func|meth|data|attr):`")


@pytest.mark.parametrize("command", [" ".join(p) for p, _ in iter_commands(build_parser())])
def test_help_is_plain_text_with_environment_names(command: str) -> None:
    """Every command's --help has no reST markup and offers the logging options."""
    parsers = dict(iter_commands(build_parser()))
    text = parsers[tuple(command.split())].format_help()
    assert not _MARKUP.search(text), text
    assert "[SQLA_AUDIT_LOG_LEVEL]" in text
    assert "--debug" in text


def test_relay_logs_json_lines(topic: str, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """relay --log-format json: the parked-row warning is a JSON object with its fields."""
    _write(db_url, 1)
    engine = sa.create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(sa.update(outbox_table()).values(payload="{not json"))
    engine.dispose()
    argv = ["relay", "--db", db_url, "--topic-arn", topic, "--once", "--log-format", "json"]
    assert main(argv) == 4
    err = capsys.readouterr().err.splitlines()
    logged = [json.loads(line) for line in err if line.startswith("{")]
    (warning,) = [entry for entry in logged if entry["level"] == "WARNING"]
    assert warning["outbox_id"] == 1
    assert warning["reason"].startswith("undecodable payload")
    assert "exception" not in warning
