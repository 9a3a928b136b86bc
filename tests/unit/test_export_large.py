"""A CSV export of 200,000 records streams in flat memory and parses back to the stored values."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.export import CSV_COLUMNS
from consumer.records import AuditRecord
from consumer.sinks.sqlite import SQLiteStore
from consumer.testing import make_record
from sqla_audit.events import format_timestamp

pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LARGE = 200_000
SMALL = 20_000
BATCH = 2_000
ACTOR = "auditor"
SERVICE = "billing"
TABLE = "ledger"

#: Runs the CLI in a fresh interpreter and reports that process's peak RSS on stderr. The
#: peak is ``VmHWM`` of ``/proc/self/status``, which starts afresh at ``exec``; ``ru_maxrss``
#: does not (it would include the pytest process this one was forked from, holding the
#: 200,000 expected records), so it is only the fallback where ``/proc`` is missing.
RUNNER = """
import re, resource, sys
from consumer.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
try:
    with open("/proc/self/status") as status:
        peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"peak_rss_kb={peak}", file=sys.stderr)
sys.exit(code)
"""


def _record(index: int) -> AuditRecord:
    """Record ``index``: one millisecond after the previous; values that need CSV quoting."""
    return make_record(
        service=SERVICE,
        table=TABLE,
        record_id=str(index),
        actor=ACTOR if index % 3 else None,
        request_id=f"req-{index // 10}",
        committed_at=T0 + dt.timedelta(milliseconds=index),
        before={"id": str(index), "amount": {"$type": "decimal", "v": f"{index}.10"},
                "note": f'line, "{index}"\nnext'},
        after={"id": str(index), "amount": {"$type": "decimal", "v": f"{index}.20"},
               "note": None},
    )  # fmt: skip


Stored = tuple[Path, dict[str, AuditRecord]]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    """A SQLite store of :data:`LARGE` records written in batches, and the records by event id."""
    path = tmp_path_factory.mktemp("export") / "audit.db"
    records: dict[str, AuditRecord] = {}
    store = SQLiteStore(path)
    for start in range(0, LARGE, BATCH):
        batch = [_record(index) for index in range(start, min(start + BATCH, LARGE))]
        store.write(batch)
        records.update((str(record.event_id), record) for record in batch)
    store.close()
    return path, records


def _export(store_file: Path, out: Path, count: int) -> int:
    """Export the newest ``count`` records as CSV to ``out``; the exporting process's peak RSS."""
    since = format_timestamp(T0 + dt.timedelta(milliseconds=LARGE - count))
    until = format_timestamp(T0 + dt.timedelta(milliseconds=LARGE))
    argv = ["changes", SERVICE, TABLE, "--since", since, "--until", until, "--format", "csv",
            "--store", "sqlite", "--store-url", str(store_file)]  # fmt: skip
    with out.open("wb") as sink:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, *argv],
            stdout=sink,
            stderr=subprocess.PIPE,
            check=False,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    peak = [line for line in stderr.splitlines() if line.startswith("peak_rss_kb=")]
    return int(peak[0].removeprefix("peak_rss_kb="))


def test_csv_export_of_200000_records_streams_and_round_trips(
    stored: Stored, tmp_path: Path
) -> None:
    """Peak memory of a 200,000-record export stays at that of a 20,000 one; the CSV parses
    back to every stored record's fields and values."""
    store_file, expected = stored
    small_peak = _export(store_file, tmp_path / "small.csv", SMALL)
    large_peak = _export(store_file, tmp_path / "large.csv", LARGE)
    print(
        f"\npeak RSS of the exporting process: {SMALL:,} records {small_peak / 1024:.1f} MiB, "
        f"{LARGE:,} records {large_peak / 1024:.1f} MiB "
        f"(csv {(tmp_path / 'large.csv').stat().st_size / 2**20:.1f} MiB)"
    )
    # holding the records would cost hundreds of MiB at this size; streaming costs nothing more
    assert large_peak - small_peak < 16 * 1024, (small_peak, large_peak)

    seen: set[str] = set()
    previous = None
    rows = 0
    with (tmp_path / "large.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        assert next(reader) == list(CSV_COLUMNS)
        for row in reader:
            rows += 1
            cell = dict(zip(CSV_COLUMNS, row, strict=True))
            record = expected[cell["event_id"]]
            assert cell["event_time"] == format_timestamp(record.event_time)
            assert (previous is None) or cell["event_time"] <= previous  # newest first
            previous = cell["event_time"]
            assert (cell["service"], cell["table"], cell["record_id"]) == (
                record.service,
                record.table,
                record.record_id,
            )
            assert (cell["operation"], cell["actor_id"], cell["request_id"]) == (
                record.operation.value,
                record.actor_id or "",
                record.request_id,
            )
            assert cell["transaction_id"] == str(record.transaction_id)
            assert int(cell["sequence"]) == record.sequence
            change = record.changes[cell["column"]]
            assert json.loads(cell["old"]) == change.old
            assert json.loads(cell["new"]) == change.new
            seen.add(cell["event_id"])
    assert seen == set(expected)
    assert rows == sum(len(record.changes) for record in expected.values())
