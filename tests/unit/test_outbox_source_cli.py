"""``sqla-audit consume --source outbox``: configuration, and the command end to end on SQLite."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from consumer.arguments import add_consumer_arguments
from consumer.settings import load_consumer_config
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_event
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_consumer_arguments(parser)
    return parser.parse_args(argv)


def test_outbox_source_needs_no_queue() -> None:
    """--source outbox with --db is a complete source configuration (no queue URL)."""
    config = load_consumer_config(parse("--source", "outbox", "--db", "sqlite:///app.db"), {})
    assert config.source == "outbox"
    assert config.outbox is not None
    assert config.outbox.db_url == "sqlite:///app.db"
    assert config.outbox.table == "sqla_audit_outbox"
    assert config.outbox.schema is None
    assert config.sqs.queue_url == ""


def test_outbox_source_reads_the_environment() -> None:
    """SQLA_AUDIT_SOURCE/DB_URL/OUTBOX_TABLE/OUTBOX_SCHEMA configure the outbox source."""
    env = {
        "SQLA_AUDIT_SOURCE": "outbox",
        "SQLA_AUDIT_DB_URL": "postgresql://app@127.0.0.1/app",
        "SQLA_AUDIT_OUTBOX_TABLE": "events_outbox",
        "SQLA_AUDIT_OUTBOX_SCHEMA": "audit",
    }
    config = load_consumer_config(parse(), env)
    assert config.outbox is not None
    assert (config.outbox.db_url, config.outbox.table, config.outbox.schema) == (
        "postgresql://app@127.0.0.1/app",
        "events_outbox",
        "audit",
    )
    assert "postgresql" not in repr(config.outbox)


def test_outbox_source_without_database_is_refused() -> None:
    """--source outbox without --db names the flag and the variable to set."""
    with pytest.raises(ConfigurationError, match="needs --db / SQLA_AUDIT_DB_URL"):
        load_consumer_config(parse("--source", "outbox"), {})


def test_sqs_source_has_no_outbox_settings() -> None:
    """The default SQS source still needs its queue and carries no outbox settings."""
    with pytest.raises(ConfigurationError, match="needs --queue-url"):
        load_consumer_config(parse("--db", "sqlite:///app.db"), {})
    config = load_consumer_config(parse("--queue-url", "http://127.0.0.1:1/q"), {})
    assert config.outbox is None


def test_missing_outbox_table_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """consume --source outbox on a database without the outbox table fails with exit code 2."""
    from consumer.cli import main  # noqa: PLC0415

    sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}").connect().close()  # a database
    code = main(
        [
            "consume",
            "--source",
            "outbox",
            "--db",
            f"sqlite:///{tmp_path / 'empty.db'}",
            "--store",
            "sqlite",
            "--store-url",
            str(tmp_path / "audit.db"),
            "--metrics-port",
            "0",
        ]
    )
    assert code == 2
    assert "outbox create-table" in capsys.readouterr().err


def test_consume_command_drains_the_outbox_into_the_sqlite_store(tmp_path: Path) -> None:
    """``python -m consumer`` stores and deletes every outbox row, then exits 0 on SIGTERM."""
    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(db_url)
    create_outbox_table(engine)
    events = [
        make_event(operation=Operation.INSERT, record_id=str(i), actor=f"user-{i % 3}")
        for i in range(25)
    ]
    with engine.begin() as connection:
        OutboxWriter().write(connection, events)
    store_path = tmp_path / "audit.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumer",
            "--source",
            "outbox",
            "--db",
            db_url,
            "--store",
            "sqlite",
            "--store-url",
            str(store_path),
            "--metrics-port",
            "0",
            "--concurrency",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SQLA_AUDIT_SOURCE": "", "SQLA_AUDIT_QUEUE_URL": ""},
    )
    try:
        deadline = time.monotonic() + 60
        while sum(outbox_counts(engine)) and process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail("the outbox was not drained in time")
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        engine.dispose()
    assert process.returncode == 0, output
    assert "consuming the outbox into sqlite" in output
    store = SQLiteStore(store_path)
    try:
        found = {
            record_id: [r.actor_id for r in store.history("billing", "accounts", record_id).items]
            for record_id in ("0", "1", "24")
        }
    finally:
        store.close()
    assert found == {"0": ["user-0"], "1": ["user-1"], "24": ["user-0"]}
