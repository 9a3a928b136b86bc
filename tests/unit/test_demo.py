"""``sqla-audit demo`` on embedded defaults: the histories, the actors, the rolled-back request."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from demo_support import EXPECTED, SHARED_RECORDS, SHARED_REQUEST, History, stored, stored_request

from consumer.cli import main
from consumer.demo.runner import DemoConfig, run_demo
from consumer.differ import records_for_event
from consumer.records import AuditRecord
from consumer.sinks.sqlite import SQLiteStore
from sqla_audit.events import ChangeEvent, Operation

ENV_SETTINGS = ("SQLA_AUDIT_TOPIC_ARN", "SQLA_AUDIT_QUEUE_URL", "SQLA_AUDIT_CASSANDRA_HOSTS")


@pytest.fixture(autouse=True)
def embedded_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SNS/SQS or Cassandra settings leak in from the environment."""
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def stored_history(store_path: Path) -> History:
    store = SQLiteStore(store_path)
    try:
        return stored(store)
    finally:
        store.close()


def test_demo_command_prints_each_history_with_its_actors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sqla-audit demo` exits 0, stores the scenario's history with the right actors, shows it."""
    code = main(["demo", "--workdir", str(tmp_path)])
    output = capsys.readouterr().out
    assert code == 0, output
    assert stored_history(tmp_path / "audit.db") == EXPECTED
    assert "customers 1: 3 changes" in output
    assert "products MN-03: 3 changes" in output
    assert "customers 3: no changes recorded" in output
    assert "orders 2: no changes recorded" in output
    assert "[ROLLED BACK]" in output
    assert "Mallory" not in output.split("The history of each record")[1]
    assert "Check passed" in output
    assert 'tier: "standard" → "gold"' in output
    assert "price: 189.00 → 198.45" in output


def test_demo_shows_two_services_and_the_request_view(tmp_path: Path) -> None:
    """The demo writes through two services (two databases) and shows the request view of the
    order request: its changes in both services, in commit order, with a SERVICE column."""
    out = io.StringIO()
    assert run_demo(DemoConfig(workdir=tmp_path), out) == 0
    text = out.getvalue()
    assert (tmp_path / "app.db").exists()
    assert (tmp_path / "billing.db").exists()
    assert "billing invoices 1: 1 change" in text
    store = SQLiteStore(tmp_path / "audit.db")
    try:
        view = stored_request(store)
    finally:
        store.close()
    # billing commits first: the shop's transaction commits after its call to billing returns
    assert view[0] == ("billing", "invoices", "1", "insert")
    assert sorted(key[:3] for key in view) == sorted(SHARED_RECORDS)
    block = text.split(f"The request view of {SHARED_REQUEST}:", 1)[1].split("\n\n", 1)[0]
    lines = block.splitlines()
    assert lines[1].split()[:6] == ["EVENT", "TIME", "OP", "SERVICE", "TABLE", "RECORD"]
    rows = [line.split()[1:5] for line in lines[3:] if line[:1].isdigit()]
    assert rows == [[op, service, table, rid] for service, table, rid, op in view]
    assert f"sqla-audit request {SHARED_REQUEST} --store sqlite" in text


def test_demo_table_rows_carry_time_operation_actor_and_changes(tmp_path: Path) -> None:
    """Each history row shows the event time, the operation, the actor and old → new values."""
    out = io.StringIO()
    assert run_demo(DemoConfig(workdir=tmp_path), out) == 0
    text = out.getvalue()
    block = text.split("products MN-03: 3 changes\n", 1)[1].split("\n\n", 1)[0]
    lines = block.splitlines()
    assert lines[0].split() == ["EVENT", "TIME", "OP", "ACTOR", "CHANGES"]
    update_rows = [line.split() for line in lines if " update " in line]
    assert [(row[1], row[2], row[3]) for row in update_rows] == [
        ("update", "bob", "stock:"),
        ("update", "carol", "price:"),
    ]
    assert all(row[0].endswith("Z") for row in update_rows)


def test_demo_in_a_temporary_directory_cleans_up_and_prints_no_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --workdir the demo's temporary directory is removed, and no path of it is
    printed; the output says how to keep the files."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["demo"]) == 0
    output = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert str(tmp_path) not in output
    assert "sqla-audit-demo-" not in output
    assert "temporary directory, removed at the end" in output
    assert "--workdir DIR" in output
    assert "Explore further" not in output


def test_demo_runs_again_in_the_same_workdir(tmp_path: Path) -> None:
    """A second run in the same --workdir shows only its own changes and passes its check."""
    assert run_demo(DemoConfig(workdir=tmp_path), io.StringIO()) == 0
    out = io.StringIO()
    assert run_demo(DemoConfig(workdir=tmp_path), out) == 0
    assert "customers 1: 3 changes" in out.getvalue()
    assert "sqla-audit history products MN-03 --store sqlite" in out.getvalue()


def test_demo_default_path_imports_no_optional_dependency(tmp_path: Path) -> None:
    """The embedded demo imports neither boto3, cassandra-driver, deepdiff nor prometheus."""
    script = (
        "import sys\n"
        "from consumer.cli import main\n"
        f"code = main(['demo', '--workdir', {str(tmp_path)!r}])\n"
        "heavy = ('boto3', 'botocore', 'cassandra', 'deepdiff', 'prometheus_client')\n"
        "print('LOADED', sorted(m for m in heavy if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LOADED []" in done.stdout


def test_demo_reports_a_history_that_does_not_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a record's stored actor differs from the scenario, the check fails with exit 1."""

    def wrong_actor(event: ChangeEvent) -> list[AuditRecord]:
        return [
            dataclasses.replace(record, actor_id="mallory")
            if record.operation is Operation.DELETE
            else record
            for record in records_for_event(event)
        ]

    monkeypatch.setattr("consumer.demo.runner.records_for_event", wrong_actor)
    out = io.StringIO()
    assert run_demo(DemoConfig(workdir=tmp_path), out) == 1
    text = out.getvalue()
    assert "Check FAILED" in text
    assert (
        "shop customers 1: expected insert by alice, update by bob, delete by alice; "
        "found insert by alice, update by bob, delete by mallory"
    ) in text


def test_demo_output_falls_back_to_ascii_arrows(tmp_path: Path) -> None:
    """On an output that cannot encode →, the tables use -> instead."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    assert run_demo(DemoConfig(workdir=tmp_path), out) == 0
    out.flush()
    text = raw.getvalue().decode("ascii")
    assert 'tier: "standard" -> "gold"' in text


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--topic-arn", "arn:aws:sns:us-east-1:1:t"], {}, "needs both a topic and the queue"),
        ([], {"SQLA_AUDIT_QUEUE_URL": "http://127.0.0.1:1/q"}, "needs both a topic"),
        (
            ["--topic-arn", "topic", "--queue-url", "http://127.0.0.1:1/q"],
            {},
            "must be an SNS topic ARN",
        ),
        (
            ["--topic-arn", "arn:aws:sns:us-east-1:1:t", "--queue-url", "sqs://q"],
            {},
            "--queue-url must be an http",
        ),
        (["--timeout", "0"], {}, "--timeout must be"),
        (["--cassandra-hosts", "127.0.0.1", "--keyspace", "1bad"], {}, "--keyspace must be"),
    ],
)
def test_bad_settings_exit_2_with_a_message(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Inconsistent or malformed SNS/SQS/Cassandra settings are refused before anything runs."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err


def test_workdir_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--workdir pointing at a file exits 2 and says why."""
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["demo", "--workdir", str(path)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_missing_package_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """If the demo's modules cannot be imported, the command names the problem and exits 2."""
    monkeypatch.setitem(sys.modules, "consumer.demo.runner", None)
    assert main(["demo"]) == 2
    assert "a package it needs is missing" in capsys.readouterr().err


def test_demo_help_states_the_exit_policy() -> None:
    """The demo's help gives the CLI's exit statuses: 2 configuration, 3 unreachable service."""
    from consumer.cli import build_parser, iter_commands  # noqa: PLC0415

    text = " ".join(dict(iter_commands(build_parser()))[("demo",)].format_help().split())
    assert "2 for bad configuration, 3 for an unreachable service" in text
    assert "2 for bad configuration or an unreachable service" not in text
