"""Extreme but well-formed input to the query commands: exit 2 with one line, never a traceback."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.cli import main
from consumer.records import AuditRecord
from consumer.sinks.base import Cursor, encode_page_token
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_record

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
TXN = uuid.UUID("0192e4a1-7b2c-7d3e-8f40-123456789abc")
EVENT = "0192e4a1-7b2c-7d3e-8f40-123456789abd"


def _records() -> list[AuditRecord]:
    return [
        make_record(
            table="users",
            record_id="42",
            operation="insert" if i == 0 else "update",
            before=None if i == 0 else {"id": "42", "name": str(i - 1)},
            after={"id": "42", "name": str(i)},
            committed_at=T0 + dt.timedelta(seconds=i),
            transaction_id=TXN if i == 0 else uuid.uuid4(),
            actor="bob",
        )
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("extreme") / "audit.db"
    store = SQLiteStore(path)
    store.write(_records())
    store.close()
    return path


@pytest.fixture(autouse=True)
def _no_store_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SQLA_AUDIT_STORE", "SQLA_AUDIT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)


def cli(argv: list[str], store: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the ``sqla-audit`` entry point; its exit code (argparse's included) and stderr."""
    capsys.readouterr()
    try:
        code = main([*argv, "--store", "sqlite", "--store-url", str(store)])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def token_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


def token(value: object) -> str:
    return token_of(json.dumps(value, separators=(",", ":")))


BAD_TOKENS = {
    "huge millis": token([10**30, EVENT]),
    "millis past int64": token([2**63, EVENT]),
    "millis past the datetime range": token([253402300800000, EVENT]),
    "millis before the datetime range": token([-62135596800001, EVENT]),
    "deep nesting": token_of("[" * 100_000 + "]" * 100_000),
    "deep nesting inside the pair": token_of("[1," + "[" * 50_000 + "]" * 50_000 + "]"),
    "float millis": token([1.5, EVENT]),
    "boolean millis": token([True, EVENT]),
    "millis as text": token(["1", EVENT]),
    "three items": token([1, EVENT, 3]),
    "an object": token({"millis": 1, "event_id": EVENT}),
    "uuid without hyphens": token([1, EVENT.replace("-", "")]),
    "uuid in braces": token([1, "{" + EVENT + "}"]),
    "not a uuid": token([1, "x" * 36]),
    "a huge number alone": token_of("9" * 5000),
    "not base64": "garbage!",
    "empty": "",
    "non-ascii": "é",
}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("page", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
@pytest.mark.parametrize(
    "command",
    [
        ["history", "users", "42"],
        ["history", "users", "42", "--column", "name"],
        ["actor", "bob"],
        ["request", "req-1"],
        ["changes", "billing", "users", "--since", "2026-01-01T00:00:00Z"],
        ["changes", "billing", "users", "--since", "2026-01-01T00:00:00Z", "--oldest-first"],
    ],
    ids=["history", "column-history", "actor", "request", "changes", "changes-oldest-first"],
)
def test_bad_page_token_exits_2_with_one_line(
    command: list[str], page: str, store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A page token that is not exactly [millis in range, uuid] exits 2 with one line."""
    code, err = cli([*command, f"--page={page}"], store_file, capsys)
    assert code == 2
    assert "page token" in _one_line(err)


def test_bad_page_token_message_stays_short(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message for a long bad token quotes only its beginning."""
    code, err = cli(
        ["history", "users", "42", "--page", BAD_TOKENS["deep nesting"]], store_file, capsys
    )
    assert code == 2
    assert len(_one_line(err)) < 200


@pytest.mark.parametrize(
    "argv",
    [
        ["as-of", "users", "42", "--at", "9999-12-31T23:00:00-05:00"],
        ["as-of", "users", "42", "--at", "0001-01-01T00:30:00+01:00"],
        ["history", "users", "42", "--since", "0001-01-01T00:00:00+01:00"],
        ["history", "users", "42", "--until", "9999-12-31T23:59:59-00:01"],
        ["history", "users", "42", "--since", "999999d"],
        ["history", "users", "42", "--since", "740000d"],
        ["actor", "bob", "--since", "999999d"],
        ["actor", "bob", "--since", "0001-01-01T00:00:00+14:00"],
        ["actor", "bob", "--until", "9999-12-31T23:00:00-05:00"],
        ["changes", "billing", "users", "--since", "999999d"],
        ["changes", "billing", "users", "--since", "0001-01-01T00:00:00+14:00"],
    ],
    ids=lambda argv: " ".join(argv[-2:]),
)
def test_time_outside_the_datetime_range_exits_2(
    argv: list[str], store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A time or duration that reaches outside years 1-9999 UTC exits 2 with one line."""
    code, err = cli(argv, store_file, capsys)
    assert code == 2
    assert "range" in _one_line(err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["as-of", "users", "42", "--at", "9999-12-31T23:59:59.999999Z"], 0),
        (["as-of", "users", "42", "--at", "0001-01-01T00:00:00Z"], 1),
        (["history", "users", "42", "--since", "0001-01-01T00:00:00Z"], 0),
        (["history", "users", "42", "--until", "9999-12-31T23:59:59.999999+00:00"], 0),
        (["actor", "bob", "--until", "0001-01-01T00:00:00Z"], 1),
        (["actor", "bob", "--since", "0001-01-01T00:00:00Z"], 0),
        (["history", "users", "42", "--page", encode_page_token(Cursor(-62135596800000, TXN))], 1),
        (["history", "users", "42", "--page", encode_page_token(Cursor(253402300799999, TXN))], 0),
    ],
    ids=lambda value: " ".join(value[-2:]) if isinstance(value, list) else str(value),
)
def test_the_edges_of_the_range_are_answered(
    argv: list[str], expected: int, store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first and last instants of the datetime range are valid queries, not errors."""
    code, err = cli(argv, store_file, capsys)
    assert code == expected, err
    assert "Traceback" not in err


TIME_OPTIONS = [
    ["history", "users", "42", "--since"],
    ["history", "users", "42", "--until"],
    ["history", "users", "42", "--page"],
    ["history", "users", "42", "--limit"],
    ["as-of", "users", "42", "--at"],
    ["actor", "bob", "--since"],
    ["actor", "bob", "--until"],
    ["actor", "bob", "--page"],
    ["request", "req-1", "--page"],
    ["request", "req-1", "--limit"],
    ["changes", "billing", "users", "--since"],
    ["changes", "billing", "users", "--since=1d", "--until"],
    ["changes", "billing", "users", "--since=1d", "--page"],
]

_TEXT = st.one_of(
    st.text(),
    st.from_regex(r"\A[0-9]{1,12}[smhdx]?\Z"),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?[+-][0-9]{2}:[0-9]{2}\Z"
    ),
    st.builds(
        lambda millis, event: token([millis, event]),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.one_of(st.uuids().map(str), st.text(max_size=40)),
    ),
    st.binary(max_size=80).map(lambda raw: base64.urlsafe_b64encode(raw).decode("ascii")),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(option=st.sampled_from(TIME_OPTIONS), text=_TEXT)
def test_arbitrary_text_never_crashes(
    option: list[str], text: str, store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any text for a time option, --limit or --page gives exit 0, 1 or 2, never a traceback."""
    *command, flag = option
    code, err = cli([*command, f"{flag}={text}"], store_file, capsys)
    assert code in (0, 1, 2), err
    assert "Traceback" not in err
    if code == 2:
        _one_line(err)
