"""The query commands over several services: --service, request, changes, and export formats."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.export import CSV_COLUMNS
from consumer.records import AuditRecord
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_record

T0 = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=dt.UTC)
TXN = uuid.UUID("0192e4a1-7b2c-7d3e-8f40-123456789abc")


def _at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _records() -> list[AuditRecord]:
    """users 1 in two services, interleaved; one request (req-9) through both; orders in shop."""
    price = {"$type": "decimal", "v": "9.50"}
    return [
        make_record(service="billing", table="users", record_id="1", operation="insert",
                    after={"id": "1", "plan": "free"}, committed_at=_at(0), request_id="req-1"),
        make_record(service="crm", table="users", record_id="1", operation="insert",
                    after={"id": "1", "name": "Ada"}, committed_at=_at(1), request_id="req-2"),
        make_record(service="billing", table="users", record_id="1",
                    before={"id": "1", "plan": "free"}, after={"id": "1", "plan": "gold"},
                    committed_at=_at(2), request_id="req-9", actor="bob", transaction_id=TXN),
        make_record(service="crm", table="users", record_id="1",
                    before={"id": "1", "name": "Ada"}, after={"id": "1", "name": "Ada L."},
                    committed_at=_at(3), request_id="req-9", actor="bob",
                    metadata={"otel.trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}),
        make_record(service="shop", table="orders", record_id="7", operation="insert",
                    after={"id": "7", "total": price}, committed_at=_at(4), request_id="req-9",
                    actor="bob"),
        make_record(service="shop", table="orders", record_id="8", operation="insert",
                    after={"id": "8", "total": price}, committed_at=_at(5), request_id="req-3"),
        make_record(service="shop", table="orders", record_id="9", operation="insert",
                    after={"id": "9", "total": price}, committed_at=_at(6), request_id="req-3"),
    ]  # fmt: skip


#: The stored records (event ids are made once, so tests can name them).
RECORDS: list[AuditRecord] = _records()


@pytest.fixture
def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SQLA_AUDIT_STORE", "SQLA_AUDIT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    store.write(RECORDS)
    store.close()
    return path


def run(argv: list[str], path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([*argv, "--store", "sqlite", "--store-url", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def _ids(out: str) -> list[str]:
    return [json.loads(line)["event_id"] for line in out.splitlines()]


# --------------------------------------------------------------------------- --service


def test_history_of_a_record_written_by_one_service_needs_no_service(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """history without --service works when exactly one service wrote the record."""
    code, out, err = run(["history", "orders", "7", "--json"], store_file, capsys)
    assert (code, err) == (0, "")
    assert [json.loads(line)["service"] for line in out.splitlines()] == ["shop"]


def test_history_of_a_record_of_several_services_asks_for_service(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several services wrote the record: exit 2, one line naming them and asking for --service."""
    for argv in (
        ["history", "users", "1"],
        ["as-of", "users", "1", "--at", "2026-02-01T00:00:00Z"],
    ):
        code, out, err = run(argv, store_file, capsys)
        assert (code, out) == (2, "")
        assert err.count("\n") == 1
        assert "users 1 was written by 2 services (billing, crm): pass --service" in err


def test_history_and_as_of_with_service_show_only_that_service(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--service keeps one service's changes apart from another's with the same table and id."""
    records = RECORDS
    code, out, _ = run(["history", "users", "1", "--service", "crm", "--json"], store_file, capsys)
    assert code == 0
    assert _ids(out) == [str(records[3].event_id), str(records[1].event_id)]
    code, out, _ = run(
        ["as-of", "users", "1", "--service", "billing", "--at", "2026-02-01T00:00:00Z", "--json"],
        store_file,
        capsys,
    )
    state = json.loads(out)
    assert (code, state["service"], state["values"]) == (0, "billing", {"id": "1", "plan": "gold"})
    code, out, _ = run(
        ["as-of", "users", "1", "--service", "crm", "--at", "2026-02-01T00:00:00Z"],
        store_file,
        capsys,
    )
    assert out.startswith("users 1 in crm as of ")
    code, _, err = run(["history", "users", "1", "--service", "shop"], store_file, capsys)
    assert code == 1
    assert "no changes recorded for users 1 in service shop" in err


# --------------------------------------------------------------------------- request


def test_request_view_across_services_in_commit_order(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """request REQ_ID lists every service's changes of that request, oldest first."""
    records = RECORDS
    code, out, _ = run(["request", "req-9"], store_file, capsys)
    assert code == 0
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "EVENT TIME", "OP", "SERVICE", "TABLE", "RECORD", "ACTOR", "TRANSACTION", "CHANGES",
    ]  # fmt: skip
    rows = [line.split()[1:5] for line in lines[2:] if re.match(r"^\d{4}-", line)]
    assert rows == [
        ["update", "billing", "users", "1"],
        ["update", "crm", "users", "1"],
        ["insert", "shop", "orders", "7"],
    ]
    code, out, _ = run(["request", "req-9", "--format", "ndjson"], store_file, capsys)
    assert _ids(out) == [str(records[i].event_id) for i in (2, 3, 4)]


def test_request_by_trace_id(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """request --trace-id finds the changes by OpenTelemetry trace id."""
    code, out, _ = run(
        ["request", "--trace-id", "4bf92f3577b34da6a3ce929d0e0e4736", "--json"], store_file, capsys
    )
    assert (code, _ids(out)) == (0, [str(RECORDS[3].event_id)])


@pytest.mark.parametrize("argv", [["request"], ["request", "req-9", "--trace-id", "abc"]])
def test_request_needs_exactly_one_id(
    argv: list[str], store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """request without an id, or with both a request id and a trace id, exits 2 with one line."""
    code, out, err = run(argv, store_file, capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "request id or --trace-id" in err


def test_request_unknown_exits_1(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown request id exits 1 saying what was looked for."""
    code, out, err = run(["request", "req-404"], store_file, capsys)
    assert (code, out) == (1, "")
    assert "no changes recorded for request req-404" in err


# --------------------------------------------------------------------------- changes


def test_changes_in_a_table_window_both_orders_and_paging(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """changes SERVICE TABLE lists the window newest first or oldest first, paged by --page."""
    records = RECORDS
    window = ["--since", "2026-01-10T12:00:04Z", "--until", "2026-01-10T12:00:05.5Z"]
    code, out, _ = run(["changes", "shop", "orders", *window, "--json"], store_file, capsys)
    assert (code, _ids(out)) == (0, [str(records[5].event_id), str(records[4].event_id)])
    since = ["--since", "2026-01-10T12:00:00Z"]
    argv = ["changes", "shop", "orders", *since, "--oldest-first", "--json", "--limit", "2"]
    code, out, err = run(argv, store_file, capsys)
    assert _ids(out) == [str(records[4].event_id), str(records[5].event_id)]
    token = re.search(r"--page (\S+)", err)
    assert token is not None
    code, out, err = run([*argv, "--page", token.group(1)], store_file, capsys)
    assert (code, err, _ids(out)) == (0, "", [str(records[6].event_id)])
    code, _, err = run(["changes", "crm", "orders", *since], store_file, capsys)
    assert code == 1
    assert "no changes recorded in orders of service crm since" in err


def test_changes_needs_since(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """changes without --since is a usage error."""
    with pytest.raises(SystemExit) as info:
        run(["changes", "shop", "orders"], store_file, capsys)
    assert info.value.code == 2
    assert "--since" in capsys.readouterr().err


# --------------------------------------------------------------------------- export formats

LISTINGS = [
    pytest.param(["history", "orders", "7"], [4], id="history"),
    pytest.param(["actor", "bob", "--since", "2026-01-10T00:00:00Z",
                  "--until", "2026-01-11T00:00:00Z"], [4, 3, 2], id="actor"),
    pytest.param(["transaction", str(TXN)], [2], id="transaction"),
    pytest.param(["request", "req-9"], [2, 3, 4], id="request"),
    pytest.param(["changes", "shop", "orders", "--since", "2026-01-10T00:00:00Z",
                  "--until", "2026-01-11T00:00:00Z"], [6, 5, 4], id="changes"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), LISTINGS)
def test_every_listing_exports_csv(
    argv: list[str], expected: list[int], store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format csv: a header, then one row per changed column of each record, in order."""
    records = RECORDS
    code, out, err = run([*argv, "--format", "csv"], store_file, capsys)
    assert (code, err) == (0, "")
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    assert list(rows[0]) == list(CSV_COLUMNS)
    wanted = [
        (str(records[i].event_id), name, records[i].service)
        for i in expected
        for name in records[i].changes
    ]
    assert [(r["event_id"], r["column"], r["service"]) for r in rows] == wanted


@pytest.mark.parametrize(("argv", "expected"), LISTINGS)
@pytest.mark.parametrize("form", ["ndjson", "json"])
def test_every_listing_exports_ndjson(
    argv: list[str],
    expected: list[int],
    form: str,
    store_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--format ndjson (and json) print one JSON object per record, in order."""
    code, out, _ = run([*argv, "--format", form], store_file, capsys)
    assert (code, _ids(out)) == (0, [str(RECORDS[i].event_id) for i in expected])


def test_values_plain_in_csv_and_ndjson(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--values plain renders a decimal as its exact text instead of a tagged object."""
    code, out, _ = run(["history", "orders", "7", "--format", "csv", "--values", "plain"],
                       store_file, capsys)  # fmt: skip
    total = [r for r in csv.DictReader(io.StringIO(out, newline="")) if r["column"] == "total"]
    assert (code, total[0]["old"], total[0]["new"]) == (0, "", "9.50")
    _, out, _ = run(["history", "orders", "7", "--format", "csv"], store_file, capsys)
    total = [r for r in csv.DictReader(io.StringIO(out, newline="")) if r["column"] == "total"]
    assert json.loads(total[0]["new"]) == {"$type": "decimal", "v": "9.50"}
    _, out, _ = run(["history", "orders", "7", "--format", "ndjson", "--values", "plain"],
                    store_file, capsys)  # fmt: skip
    assert json.loads(out)["after"] == {"id": "7", "total": "9.50"}


def test_export_formats_export_everything_unless_limited(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ndjson and csv follow every page by default; --limit still cuts and prints a token."""
    since = ["--since", "2026-01-10T00:00:00Z"]
    code, out, err = run(
        ["changes", "shop", "orders", *since, "--format", "ndjson"], store_file, capsys
    )
    assert (code, len(out.splitlines()), err) == (0, 3, "")
    code, out, err = run(
        ["changes", "shop", "orders", *since, "--format", "ndjson", "--limit", "1"],
        store_file,
        capsys,
    )
    assert len(out.splitlines()) == 1
    assert "--page " in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--all"], "--all needs --format json, ndjson or csv"),
        (["--all", "--format", "csv", "--limit", "3"], "--all and --limit exclude each other"),
    ],
)
def test_bad_output_options_exit_2(
    flags: list[str], message: str, store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--all with a table, or with --limit, exits 2 with one line."""
    code, out, err = run(["history", "orders", "7", *flags], store_file, capsys)
    assert (code, out) == (2, "")
    assert message in err


def test_bad_format_is_a_usage_error(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --format or --values is refused by the parser (exit 2)."""
    for flags in (["--format", "xml"], ["--values", "raw"]):
        with pytest.raises(SystemExit) as info:
            run(["history", "orders", "7", *flags], store_file, capsys)
        assert info.value.code == 2
        capsys.readouterr()
