"""The first-hour transcript in docs/operations.md stays honest: every sqla-audit command it
shows is a valid sub-command with valid flags, and it shows the steps it promises."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from consumer.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SECTION = "## A first hour, transcribed"


def _commands() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line[2:]) for line in text.splitlines() if line.startswith("$ sqla-audit ")]


def test_transcript_covers_the_first_hour() -> None:
    """Demo, consume, the queries, and a parked outbox row found and requeued."""
    text = DOC.read_text(encoding="utf-8").split(SECTION, 1)[1]
    assert "$ scripts/demo" in text
    shown = {tuple(argv[1:3]) if argv[1] == "outbox" else (argv[1],) for argv in _commands()}
    for step in [("consume",), ("history",), ("as-of",), ("actor",), ("request",), ("changes",),
                 ("relay",), ("outbox", "status"), ("outbox", "requeue")]:  # fmt: skip
        assert step in shown, step
    assert "--format csv" in text
    assert "/tmp/" not in text
    assert "/home/" not in text


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv[1:3]))
def test_transcript_commands_parse(argv: list[str]) -> None:
    """Each command of the transcript is accepted by the sqla-audit parser as written."""
    args = build_parser().parse_args(argv[1:])
    assert callable(args.func)
