"""The consumer's command-line entry points (no services needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from consumer.cli import main


def test_schema_cql_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`sqla-audit schema cql` prints idempotent CQL for the given options."""
    assert main(["schema", "cql", "--keyspace", "audit_x", "--ttl", "600"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CREATE KEYSPACE IF NOT EXISTS audit_x")
    assert "default_time_to_live = 600" in out


def test_schema_cql_reads_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema options fall back to their environment variables."""
    monkeypatch.setenv("SQLA_AUDIT_KEYSPACE", "from_env")
    monkeypatch.setenv("SQLA_AUDIT_TIME_BUCKET", "day")
    assert main(["schema", "cql"]) == 0
    out = capsys.readouterr().out
    assert "from_env.service_record_buckets" in out


def test_invalid_configuration_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad setting is reported once on stderr with exit code 2, before connecting."""
    monkeypatch.delenv("SQLA_AUDIT_QUEUE_URL", raising=False)
    assert main(["consume"]) == 2
    assert "needs --queue-url" in capsys.readouterr().err
    assert main(["schema", "cql", "--keyspace", "1bad"]) == 2
    assert "CQL identifier" in capsys.readouterr().err


def test_python_dash_m_consumer_is_consume() -> None:
    """`python -m consumer --help` shows the consume command's options."""
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--queue-url" in done.stdout
    assert "SQLA_AUDIT_QUEUE_URL" in done.stdout
