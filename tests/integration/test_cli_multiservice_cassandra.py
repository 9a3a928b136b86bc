"""The query CLI on a real Cassandra node: --service, the request view, the table timeline and
CSV/NDJSON export, over records of two services with the same table and record ids."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cassandra_support import cassandra_config

from consumer.cli import main
from consumer.config import CassandraConfig
from consumer.export import CSV_COLUMNS
from consumer.records import AuditRecord
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.testing import make_record

if TYPE_CHECKING:
    from cassandra.cluster import Session as CassandraSession

T0 = dt.datetime(2026, 3, 1, 9, 58, tzinfo=dt.UTC)
REQUEST = "req-cli-7"


def _records() -> list[AuditRecord]:
    """users 1 in billing and crm (interleaved); one request through both; orders over hours."""
    out = []
    for minute in range(6):  # users 1: billing and crm alternate, one change a minute
        service = ("billing", "crm")[minute % 2]
        before = None if minute < 2 else {"id": "1", "n": minute - 2}
        out.append(
            make_record(service=service, table="users", record_id="1",
                        operation="insert" if before is None else "update",
                        before=before, after={"id": "1", "n": minute},
                        committed_at=T0 + dt.timedelta(minutes=minute),
                        request_id=REQUEST if minute in (4, 5) else f"req-{minute}")
        )  # fmt: skip
    for index in range(7):  # orders in shop every 25 minutes: the window spans hour buckets
        out.append(
            make_record(service="shop", table="orders", record_id=str(index), operation="insert",
                        after={"id": str(index), "total": {"$type": "decimal", "v": f"{index}.50"}},
                        committed_at=T0 + dt.timedelta(minutes=25 * index, seconds=30),
                        request_id=REQUEST if index == 0 else f"req-o{index}")
        )  # fmt: skip
    return out


RECORDS = _records()


@pytest.fixture(scope="module")
def config(
    cassandra_contact: str, cassandra_session: CassandraSession
) -> Iterator[CassandraConfig]:
    """A fresh keyspace holding :data:`RECORDS`."""
    keyspace = f"sqla_audit_cli_{uuid.uuid4().hex[:8]}"
    settings = cassandra_config(cassandra_contact, keyspace)
    apply_schema(settings)
    store = CassandraStore.connect(settings)
    try:
        store.write(RECORDS)
    finally:
        store.close()
    try:
        yield settings
    finally:
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


def cli(
    argv: list[str], config: CassandraConfig, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    capsys.readouterr()
    flags = ["--store", "cassandra", "--cassandra-hosts", config.hosts[0],
             "--cassandra-port", str(config.port), "--local-dc", config.local_dc,
             "--consistency", "LOCAL_ONE", "--protocol-version", "5",
             "--keyspace", config.schema.keyspace]  # fmt: skip
    code = main([*argv, *flags])
    out, err = capsys.readouterr()
    return code, out, err


def _ids(out: str) -> list[str]:
    return [json.loads(line)["event_id"] for line in out.splitlines()]


def test_history_needs_service_only_when_ambiguous(
    config: CassandraConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """users 1 of two services: exit 2 naming them; --service shows one service's changes."""
    code, out, err = cli(["history", "users", "1"], config, capsys)
    assert (code, out) == (2, "")
    assert "users 1 was written by 2 services (billing, crm): pass --service" in err
    code, out, _ = cli(["history", "users", "1", "--service", "crm", "--json"], config, capsys)
    assert code == 0
    assert _ids(out) == [str(RECORDS[i].event_id) for i in (5, 3, 1)]
    code, out, _ = cli(["history", "orders", "3", "--json"], config, capsys)
    assert (code, _ids(out)) == (0, [str(RECORDS[9].event_id)])


def test_request_view_across_services(
    config: CassandraConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """request lists the changes of one request id in both services, in commit order."""
    code, out, _ = cli(["request", REQUEST, "--format", "ndjson"], config, capsys)
    assert code == 0
    assert _ids(out) == [str(RECORDS[i].event_id) for i in (6, 4, 5)]
    assert [json.loads(line)["service"] for line in out.splitlines()] == [
        "shop",
        "billing",
        "crm",
    ]


def test_changes_exported_as_csv_across_buckets_and_pages(
    config: CassandraConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """changes over three hour buckets, oldest first, two per page: the CSV rows of exactly the
    window's records, in order, and plain values."""
    window = ["--since", "2026-03-01T10:00:00Z", "--until", "2026-03-01T12:00:00Z"]
    argv = ["changes", "shop", "orders", *window, "--oldest-first", "--format", "csv",
            "--values", "plain", "--limit", "2"]  # fmt: skip
    rows: list[dict[str, str]] = []
    page: list[str] = []
    for _ in range(10):
        code, out, err = cli([*argv, *page], config, capsys)
        assert code == 0, err
        parsed = list(csv.DictReader(io.StringIO(out, newline="")))
        assert list(parsed[0]) == list(CSV_COLUMNS)
        rows += parsed
        token = re.search(r"--page (\S+)", err)
        if token is None:
            break
        page = ["--page", token.group(1)]
    inside = [r for r in RECORDS[6:] if "10:00" <= r.event_time.strftime("%H:%M") < "12:00"]
    assert [r.record_id for r in inside] == ["1", "2", "3", "4"]
    totals = [(row["record_id"], row["new"]) for row in rows if row["column"] == "total"]
    assert totals == [(r.record_id, f"{r.record_id}.50") for r in inside]
    assert {row["event_id"] for row in rows} == {str(r.event_id) for r in inside}
