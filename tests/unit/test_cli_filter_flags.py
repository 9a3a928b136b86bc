"""The outbox flags are the same on consume, relay and outbox: --db, --table (alias
--outbox-table) and --schema (alias --outbox-schema), with the same environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from consumer.cli import build_parser, iter_commands, main
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_event
from sqla_audit.events import Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table

OUTBOX_COMMANDS = [("consume",), ("relay",), ("outbox", "status"), ("outbox", "requeue")]


@pytest.mark.parametrize("command", OUTBOX_COMMANDS, ids=" ".join)
def test_the_same_outbox_flags_everywhere(command: tuple[str, ...]) -> None:
    """Every command reading an outbox takes --db, --table and --schema (and the long forms)."""
    parser = dict(iter_commands(build_parser()))[command]
    options = parser._option_string_actions
    for flag in ("--db", "--table", "--outbox-table", "--schema", "--outbox-schema"):
        assert flag in options, flag
    assert options["--table"] is options["--outbox-table"]
    assert options["--schema"] is options["--outbox-schema"]
    text = " ".join(parser.format_help().split())
    assert "[SQLA_AUDIT_OUTBOX_TABLE]" in text
    assert "[SQLA_AUDIT_OUTBOX_SCHEMA]" in text


def test_consume_table_selects_the_outbox_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """consume --source outbox --table NAME drains that table, as relay --table would."""
    for name in ("SQLA_AUDIT_SOURCE", "SQLA_AUDIT_QUEUE_URL", "SQLA_AUDIT_OUTBOX_TABLE"):
        monkeypatch.delenv(name, raising=False)
    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(db_url)
    table = outbox_table(sa.MetaData(), name="jobs_outbox")
    create_outbox_table(engine, table)
    events = [make_event(operation=Operation.INSERT, record_id=str(i)) for i in range(3)]
    with engine.begin() as connection:
        OutboxWriter(table).write(connection, events)
    store_path = tmp_path / "audit.db"
    source = ["--source", "outbox", "--db", db_url, "--table", "jobs_outbox"]
    store = ["--store", "sqlite", "--store-url", str(store_path)]
    code = main(["consume", *source, *store, "--metrics-port", "0", "--until-empty"])
    assert code == 0, capsys.readouterr().err
    assert outbox_counts(engine, table) == (0, 0)
    engine.dispose()
    audit = SQLiteStore.open_read_only(store_path)
    try:
        found = [len(audit.history("billing", "accounts", str(i)).items) for i in range(3)]
    finally:
        audit.close()
    assert found == [1, 1, 1]
