"""Time expressions: every --since, --until, --at and --older-than of every command takes
the same forms (ISO 8601 with a zone, a duration back from now, now) through one parser."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from consumer.cli import build_parser, iter_commands
from consumer.times import parse_time

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TIME_OPTIONS = ("--since", "--until", "--at", "--older-than")


def _time_options() -> list[tuple[str, argparse.Action]]:
    found = []
    for path, parser in iter_commands(build_parser()):
        for action in parser._actions:
            for option in action.option_strings:
                if option in TIME_OPTIONS:
                    found.append((f"{' '.join(path)} {option}", action))
    return found


def test_time_options_exist_where_expected() -> None:
    """The query, dlq and outbox requeue commands have their time options."""
    names = {name for name, _ in _time_options()}
    for expected in (
        "history --since",
        "history --until",
        "as-of --at",
        "actor --since",
        "actor --until",
        "changes --since",
        "changes --until",
        "outbox requeue --older-than",
        "dlq list --older-than",
        "dlq redrive --older-than",
    ):
        assert expected in names


@pytest.mark.parametrize(("name", "action"), _time_options(), ids=str)
def test_every_time_option_uses_the_one_parser(name: str, action: argparse.Action) -> None:
    """Each time option parses with consumer.times.parse_time."""
    assert action.type is parse_time, name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("90m", NOW - dt.timedelta(minutes=90)),
        ("12h", NOW - dt.timedelta(hours=12)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("30s", NOW - dt.timedelta(seconds=30)),
        ("2026-01-01T00:00:00Z", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("2026-01-01T00:00:00z", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ("2026-01-01T01:00:00+01:00", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ],
)
def test_parse_time_forms(text: str, expected: dt.datetime) -> None:
    """ISO 8601 with a zone, a duration back from now and now all give aware UTC times."""
    assert parse_time(text, now=lambda: NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-01-01T00:00:00", "has no timezone"),
        ("yesterday", "not an ISO 8601 time, a duration or now"),
        ("5 days", "not an ISO 8601 time, a duration or now"),
        ("1w", "not an ISO 8601 time, a duration or now"),
        ("999999d", "outside the supported range"),
    ],
)
def test_parse_time_refusals_say_what_is_accepted(text: str, message: str) -> None:
    """A time that is none of the forms is refused with a message naming them."""
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_time(text, now=lambda: NOW)


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "users", "1", "--until", "now", "--since", "2h"],
        ["as-of", "users", "1", "--at", "1h"],
        ["actor", "alice", "--until", "now"],
        ["changes", "shop", "users", "--since", "7d", "--until", "now"],
        ["outbox", "requeue", "--older-than", "2026-01-01T00:00:00Z"],
        ["dlq", "list", "--older-than", "now"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_commands_accept_every_form(argv: list[str]) -> None:
    """The commands' parsers accept durations and now for --until and --at too."""
    args = build_parser().parse_args(argv)
    values = [getattr(args, name, None) for name in ("since", "until", "at", "older_than")]
    assert any(isinstance(value, dt.datetime) for value in values)
