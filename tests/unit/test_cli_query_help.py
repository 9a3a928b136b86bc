"""Help of the query commands: only what a reader needs (no keyspace-creation or write
flags), each option's default, choices or environment variable, plain terminal text."""

from __future__ import annotations

import pytest

from consumer.cli import build_parser, iter_commands

READ_COMMANDS = ("history", "as-of", "actor", "transaction", "request", "changes")
WRITE_SIDE = (
    "--replication-class",
    "--replication-factor",
    "--datacenters",
    "--ttl",
    "--time-bucket",
    "--views",
    "--timeline-bucket",
    "--timeline-shards",
    "--max-in-flight",
)


def _help(command: str) -> str:
    parsers = dict(iter_commands(build_parser()))
    return parsers[(command,)].format_help()


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_read_commands_hide_write_side_flags(command: str) -> None:
    """A read command neither shows nor accepts the flags that create or write a keyspace."""
    text = _help(command)
    for flag in WRITE_SIDE:
        assert flag not in text, flag
    parser = dict(iter_commands(build_parser()))[(command,)]
    for flag in WRITE_SIDE:
        assert flag not in parser._option_string_actions, flag


@pytest.mark.parametrize("command", READ_COMMANDS)
def test_read_command_help_shows_defaults_choices_and_environment(command: str) -> None:
    """Store options name their environment variables and defaults; times their forms."""
    text = " ".join(_help(command).split())
    for expected in (
        "cassandra (default) or sqlite [SQLA_AUDIT_STORE]",
        "[SQLA_AUDIT_STORE_URL]",
        "(default: 127.0.0.1) [SQLA_AUDIT_CASSANDRA_HOSTS]",
        "(default: LOCAL_QUORUM) [SQLA_AUDIT_CONSISTENCY]",
        "(default: sqla_audit) [SQLA_AUDIT_KEYSPACE]",
        "a duration back from now (90m, 12h, 7d) or now",
        "never created or changed",
    ):
        assert expected in text, expected
    assert "``" not in text
    assert ":mod:" not in text
    assert ":class:" not in text


def test_write_commands_keep_the_keyspace_flags() -> None:
    """schema apply and consume still offer replication, views and timeline settings."""
    for command in (("schema", "apply"), ("consume",)):
        text = dict(iter_commands(build_parser()))[command].format_help()
        for flag in ("--replication-factor", "--views", "--timeline-shards", "--time-bucket"):
            assert flag in text, (command, flag)
