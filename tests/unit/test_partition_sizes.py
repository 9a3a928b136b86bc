"""Partition-size estimates at schema time: rates, row sizes, the 100 MB guideline, the fixes."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path

import pytest

from consumer.cli import main
from consumer.config import CassandraSchemaConfig
from consumer.sinks.cassandra.schema import bucket_of
from consumer.sinks.partition_sizes import (
    GUIDELINE_BYTES,
    ROW_BYTES,
    estimate_partitions,
    parse_expectations,
    parse_rate,
    warnings_for,
)

_ROWS = {"actor": 1000, "record": 1000, "table": 1000, "request": 1000, "trace": 1000}


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("86400/day", 1.0),
        ("1000000/day", 1_000_000 / 86_400),
        ("3600/h", 1.0),
        ("60/minute", 1.0),
        ("2.5/s", 2.5),
        ("7", 7.0),
    ],
)
def test_rates_are_counts_per_unit(text: str, per_second: float) -> None:
    """A rate is a count per second, minute, hour or day (bare: per second)."""
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "fast", "-1/day", "10/fortnight", "1/0"])
def test_a_bad_rate_is_refused(text: str) -> None:
    """Anything but a non-negative count per known unit is a ValueError."""
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_expectations_are_view_rate_pairs() -> None:
    """--expect takes view=rate pairs; an unknown view names the known ones."""
    rates = parse_expectations("actor=1000000/day, record=10000/day")
    assert rates == pytest.approx({"actor": 1_000_000 / 86_400, "record": 10_000 / 86_400})
    with pytest.raises(ValueError, match="actor, record, table, request, trace"):
        parse_expectations("bogus=1/s")


def test_a_measured_row_size_exists_for_every_view() -> None:
    """The default row sizes are the measured figures (bench/row_sizes.py), one per view."""
    assert set(ROW_BYTES) == set(_ROWS)
    assert all(300 < size < 10_000 for size in ROW_BYTES.values())


def test_row_sizes_are_the_measured_ones() -> None:
    """ROW_BYTES is what bench/row_sizes.py measures on the store's own rows (within 10 %)."""
    from bench.row_sizes import measure  # noqa: PLC0415 - the measurement itself

    measured = measure(600)
    for view, size in ROW_BYTES.items():
        assert measured[view]["mean"] == pytest.approx(size, rel=0.10)


def test_service_account_at_a_million_a_day_overflows_day_buckets() -> None:
    """1M changes/day by one actor in day buckets of 1 kB rows is ~1 GB: warned, and the fix
    is hour buckets (~42 MB)."""
    rates = parse_expectations("actor=1000000/day")
    (estimate,) = estimate_partitions(CassandraSchemaConfig(), rates, _ROWS)
    assert estimate.table == "changes_by_actor"
    assert estimate.rows == pytest.approx(1_000_000)
    assert estimate.bytes > GUIDELINE_BYTES
    (line,) = warnings_for(CassandraSchemaConfig(), rates, _ROWS)
    assert line.startswith("warning: changes_by_actor")
    assert "--actor-bucket hour" in line
    assert "--actor-shards" not in line


def test_hour_buckets_hold_a_million_a_day_and_shards_hold_ten() -> None:
    """Hour buckets keep 1M/day under the guideline; 10M/day needs shards too."""
    hourly = CassandraSchemaConfig(actor_bucket="hour")
    assert warnings_for(hourly, parse_expectations("actor=1000000/day"), _ROWS) == []
    (line,) = warnings_for(hourly, parse_expectations("actor=10000000/day"), _ROWS)
    assert "--actor-bucket hour --actor-shards 4" in line
    sharded = CassandraSchemaConfig(actor_bucket="hour", actor_shards=4)
    assert warnings_for(sharded, parse_expectations("actor=10000000/day"), _ROWS) == []


def test_an_unbucketed_hot_record_grows_without_bound() -> None:
    """A record changed 10k times/day without a time bucket (and no TTL) is unbounded; the
    fix is the coarsest bucket that holds it (a 31-day month is 310 MB: day)."""
    rates = parse_expectations("record=10000/day")
    (estimate,) = estimate_partitions(CassandraSchemaConfig(), rates, _ROWS)
    assert estimate.unbounded
    (line,) = warnings_for(CassandraSchemaConfig(), rates, _ROWS)
    assert "changes_by_service_record" in line
    assert "without bound" in line
    assert "--time-bucket day" in line
    daily = CassandraSchemaConfig(time_bucket="day")
    assert warnings_for(daily, rates, _ROWS) == []


def test_a_ttl_bounds_a_partition() -> None:
    """With a TTL the largest partition is the TTL's worth of rows (30 days of 100/day)."""
    config = CassandraSchemaConfig(ttl_seconds=30 * 86_400)
    (estimate,) = estimate_partitions(config, parse_expectations("record=100/day"), _ROWS)
    assert not estimate.unbounded
    assert estimate.rows == pytest.approx(3_000)
    assert warnings_for(config, parse_expectations("record=100/day"), _ROWS) == []


def test_a_reused_request_id_has_no_bucket_to_fix_it() -> None:
    """A request id reused by a batch job grows its partition: the warning names the TTL or
    leaving the view out, since the request view has no bucket."""
    (line,) = warnings_for(CassandraSchemaConfig(), parse_expectations("request=50000/day"), _ROWS)
    assert "changes_by_request" in line
    assert "--views" in line
    assert "--ttl" in line


def test_the_table_timeline_is_fixed_with_shards() -> None:
    """A table changed 100/s fills hour buckets with 360 MB: 4 shards fix it."""
    (line,) = warnings_for(CassandraSchemaConfig(), parse_expectations("table=100/s"), _ROWS)
    assert "changes_by_table" in line
    assert "--timeline-shards 4" in line


def test_a_disabled_view_is_not_estimated() -> None:
    """A view the keyspace does not keep has no partitions to warn about."""
    config = CassandraSchemaConfig(views=frozenset({"table"}))
    assert warnings_for(config, parse_expectations("actor=1000000/day"), _ROWS) == []


def test_schema_cql_prints_the_estimate_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    """`schema cql --expect` writes a warning per oversized view on stderr; the CQL is the
    same as without it."""
    assert main(["schema", "cql"]) == 0
    plain = capsys.readouterr().out
    code = main(
        [
            "schema",
            "cql",
            "--expect",
            "actor=1000000/day,record=10000/day",
            "--row-bytes",
            "actor=1000,record=1000",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out == plain
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2
    assert "--actor-bucket hour" in err
    assert "--time-bucket day" in err
    assert (
        main(
            [
                "schema",
                "cql",
                "--actor-bucket",
                "hour",
                "--time-bucket",
                "day",
                "--expect",
                "actor=1000000/day,record=10000/day",
                "--row-bytes",
                "actor=1000,record=1000",
            ]
        )
        == 0
    )
    assert "warning:" not in capsys.readouterr().err


def test_the_worked_example_in_the_docs_is_what_the_command_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/cql.md's worked example shows exactly the lines `schema cql --expect` prints."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cql.md").read_text(encoding="utf-8")
    block = doc.split("## Partition sizes", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    commands = block.split("$ sqla-audit ")[1:]
    assert len(commands) == 2
    for shown in commands:
        command, *printed = shown.strip().splitlines()
        argv = shlex.split(command.split(" > ", 1)[0])
        assert main(argv) == 0
        assert capsys.readouterr().err.splitlines() == printed


def test_a_record_changed_200k_times_a_day_needs_hour_buckets() -> None:
    """200k changes/day of one record at 1 kB rows is 191 MB a day: the fix is hour buckets
    of history, which the schema accepts and keys by yyyymmddhh."""
    rates = parse_expectations("record=200000/day")
    (line,) = warnings_for(CassandraSchemaConfig(time_bucket="day"), rates, _ROWS)
    assert "--time-bucket hour" in line
    assert warnings_for(CassandraSchemaConfig(time_bucket="hour"), rates, _ROWS) == []
    at = dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.UTC)
    assert bucket_of(at, "hour") == 2026013123
    assert bucket_of(at, "hour") < 2**31 - 1
    assert main(["schema", "cql", "--time-bucket", "hour"]) == 0
