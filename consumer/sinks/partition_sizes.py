"""Partition-size estimates for a Cassandra schema, from expected rates and row sizes.

Cassandra warns about partitions over 100 MB (``partition_size_warn_threshold``,
formerly ``compaction_large_partition_warning_threshold``); larger ones slow compaction,
repair, streaming and reads. The audit tables are partitioned by record, actor, request,
trace and table time bucket, so how large the largest partition gets depends on the busiest
one of each and on the bucket and shard settings:

    largest partition = rate x span / shards x bytes per row

where *rate* is the changes per second of the busiest record / actor / table / request id,
*span* the time one partition covers (its bucket; without a bucket the retention, i.e. the
TTL, or without a TTL forever) and *bytes per row* the measured serialized size of one
row of that view (:data:`ROW_BYTES`, from ``python -m bench row_sizes``).

:func:`estimate_partitions` computes it for every view given a rate; :func:`warnings_for`
gives a line for each over the guideline, naming the setting that would bring it under
(``schema cql`` and ``schema apply`` print them; docs/cql.md, "Partition sizes").
Only arithmetic: nothing here talks to Cassandra.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from consumer.config import CassandraSchemaConfig
from consumer.sinks.cassandra.buckets import BUCKET_SECONDS, ActorBucketing
from consumer.sinks.views import check_views

#: The guideline: Cassandra's large-partition warning threshold (100 MiB).
GUIDELINE_BYTES: Final = 100 * 2**20

#: The views whose partitions can grow with a rate: history ("record") and four views.
ESTIMATED_VIEWS: Final = ("actor", "record", "table", "request", "trace")

#: The table holding each estimated view.
_TABLES: Final = {
    "record": "changes_by_service_record",
    "table": "changes_by_table",
    "request": "changes_by_request",
    "trace": "changes_by_trace",
}

#: Mean serialized bytes of one row per view (values plus Cassandra's cell and row
#: framing), measured with ``python -m bench row_sizes`` on the benchmark's event mix
#: (docs/cql.md, "Partition sizes", has the figures and the command).
ROW_BYTES: Final = {
    "actor": 1_752,
    "record": 1_738,
    "table": 1_744,
    "request": 1_751,
    "trace": 1_761,
}

#: Seconds per rate unit.
_UNITS: Final = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "min": 60,
    "minute": 60,
    "h": 3_600,
    "hour": 3_600,
    "d": 86_400,
    "day": 86_400,
}
_RATE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+)\s*)?$")
_TIME_BUCKET_SECONDS: Final = {
    "year": 366 * 86_400,
    "month": 31 * 86_400,
    "day": 86_400,
    "hour": 3_600,
}
_TIMELINE_SECONDS: Final = {"minute": 60, "hour": 3_600, "day": 86_400}
#: How long an unbounded partition is shown growing for.
_HORIZON_SECONDS: Final = 365 * 86_400


def parse_rate(text: str) -> float:
    """Changes per second of ``text``: ``1000000/day``, ``50/s``, ``3600/hour`` or a bare
    number (per second); :class:`ValueError` for anything else."""
    match = _RATE.match(text.lower())
    unit = (match.group(2) or "s") if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"a rate is a count per s, min, hour or day (like 1000000/day), got {text!r}"
        )
    return float(match.group(1)) / _UNITS[unit]


def _pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        view, sep, value = item.partition("=")
        view = view.strip().lower()
        if not sep or view not in ESTIMATED_VIEWS:
            raise ValueError(
                f"{what} takes view=value pairs for the views {', '.join(ESTIMATED_VIEWS)}; "
                f"got {item.strip()!r}"
            )
        out[view] = value.strip()
    return out


def parse_expectations(text: str) -> dict[str, float]:
    """``actor=1000000/day,record=10000/day`` -> changes per second per view."""
    return {view: parse_rate(value) for view, value in _pairs(text, "--expect").items()}


def parse_row_bytes(text: str) -> dict[str, int]:
    """``actor=1200,record=900`` -> bytes per row per view (the others: :data:`ROW_BYTES`)."""
    sizes = dict(ROW_BYTES)
    for view, value in _pairs(text, "--row-bytes").items():
        if not value.isdigit() or not 0 < int(value) <= 10_000_000:
            raise ValueError(f"--row-bytes: bytes per row must be 1 to 10000000, got {value!r}")
        sizes[view] = int(value)
    return sizes


@dataclass(frozen=True, slots=True)
class PartitionEstimate:
    """The largest partition of one view at one rate."""

    view: str
    table: str
    #: changes per second to the busiest partition key (actor, record, table, request id)
    rate: float
    row_bytes: int
    #: what one partition covers, for messages (``hour buckets x 4 shards``)
    span: str
    rows: float
    bytes: float
    #: no bucket and no TTL: the partition grows for ever (rows, bytes: after a year)
    unbounded: bool
    #: the setting that brings it under the guideline (``--actor-bucket hour``)
    fix: str

    @property
    def over(self) -> bool:
        return self.unbounded or self.bytes > GUIDELINE_BYTES


def _size(value: float) -> str:
    if value >= 2**30:
        return f"{value / 2**30:,.1f} GB"
    if value >= 2**20:
        return f"{value / 2**20:,.0f} MB"
    return f"{value / 2**10:,.0f} kB"


def _fits(rate: float, seconds: float, row_bytes: int, shards: int = 1) -> bool:
    return rate * seconds * row_bytes / shards <= GUIDELINE_BYTES


def _shards_for(rate: float, seconds: float, row_bytes: int) -> int:
    return max(1, math.ceil(rate * seconds * row_bytes / GUIDELINE_BYTES))


def _span_seconds(bucket_seconds: float | None, ttl: int) -> float | None:
    """What one partition covers: its bucket, or the TTL if shorter; None: for ever."""
    spans = [value for value in (bucket_seconds, ttl or None) if value]
    return min(spans) if spans else None


def _actor_fix(rate: float, row_bytes: int) -> str:
    for bucket in ("month", "week", "day", "hour"):
        seconds = BUCKET_SECONDS[bucket]
        if _fits(rate, seconds, row_bytes):
            return f"use --actor-bucket {bucket} (~{_size(rate * seconds * row_bytes)})"
    hour = BUCKET_SECONDS["hour"]
    shards = _shards_for(rate, hour, row_bytes)
    if shards > 256:
        return "even --actor-bucket hour --actor-shards 256 is not enough: leave the view out"
    size = _size(rate * hour * row_bytes / shards)
    return f"use --actor-bucket hour --actor-shards {shards} (~{size})"


def _record_fix(rate: float, row_bytes: int) -> str:
    for bucket in ("year", "month", "day", "hour"):
        seconds = _TIME_BUCKET_SECONDS[bucket]
        if _fits(rate, seconds, row_bytes):
            return f"use --time-bucket {bucket} (~{_size(rate * seconds * row_bytes)})"
    return "even --time-bucket hour is too large: lower the record's rate or set a short --ttl"


def _timeline_fix(rate: float, row_bytes: int, bucket: str) -> str:
    for name in ("day", "hour", "minute"):
        seconds = _TIMELINE_SECONDS[name]
        if seconds > _TIMELINE_SECONDS[bucket] and name != bucket:
            continue  # never a coarser bucket than the one chosen
        shards = _shards_for(rate, seconds, row_bytes)
        if shards <= 256:
            size = _size(rate * seconds * row_bytes / shards)
            flag = "" if name == bucket else f"--timeline-bucket {name} "
            return f"use {flag}--timeline-shards {shards} (~{size})"
    return "the table timeline cannot hold this rate: leave the view out"


def _unbucketed_fix(view: str, rate: float, row_bytes: int) -> str:
    days = GUIDELINE_BYTES / (rate * row_bytes * 86_400) if rate else math.inf
    return (
        f"the {view} view has no bucket: set --ttl to at most {days:,.1f} days, leave the "
        f"view out (--views without {view}), or give long jobs an id per chunk"
    )


def estimate_partitions(
    config: CassandraSchemaConfig,
    rates: Mapping[str, float],
    row_bytes: Mapping[str, int] = ROW_BYTES,
) -> list[PartitionEstimate]:
    """The largest partition of every view the schema keeps that has a rate in ``rates``
    (changes per second), in :data:`ESTIMATED_VIEWS` order."""
    views = {"record", *check_views(config.views)}
    ttl = config.ttl_seconds
    out = []
    for view in ESTIMATED_VIEWS:
        if view not in rates or view not in views:
            continue
        rate, size = rates[view], row_bytes.get(view, ROW_BYTES[view])
        shards = 1
        if view == "actor":
            actor = ActorBucketing.of(config)
            table, span, shards = actor.table, actor.describe(), actor.shards
            seconds = _span_seconds(BUCKET_SECONDS[actor.bucket], ttl)
            fix = _actor_fix(rate, size)
        elif view == "record":
            bucket = config.time_bucket
            table, span = _TABLES[view], f"{bucket} buckets" if bucket != "none" else "no bucket"
            seconds = _span_seconds(_TIME_BUCKET_SECONDS.get(bucket), ttl)
            fix = _record_fix(rate, size)
        elif view == "table":
            shards = config.timeline_shards
            table = _TABLES[view]
            span = f"{config.timeline_bucket} buckets" + (
                f" x {shards} shards" if shards > 1 else ""
            )
            seconds = _span_seconds(_TIMELINE_SECONDS[config.timeline_bucket], ttl)
            fix = _timeline_fix(rate, size, config.timeline_bucket)
        else:
            table, span = _TABLES[view], "no bucket"
            seconds = _span_seconds(None, ttl)
            fix = _unbucketed_fix(view, rate, size)
        if seconds is not None and seconds == ttl and span != "no bucket":
            span += f" (TTL {ttl:,} s)"
        elif seconds is not None and span == "no bucket":
            span = f"no bucket, TTL {ttl:,} s"
        unbounded = seconds is None and rate > 0
        rows = rate * (seconds if seconds is not None else _HORIZON_SECONDS) / shards
        out.append(
            PartitionEstimate(view, table, rate, size, span, rows, rows * size, unbounded, fix)
        )
    return out


def describe(estimate: PartitionEstimate) -> str:
    """One line: the estimate, and for one over the guideline a warning with its fix."""
    per_day = f"{estimate.rate * 86_400:,.0f} changes/day"
    basis = f"{per_day} x {estimate.row_bytes:,} B/row, {estimate.span}"
    if estimate.unbounded:
        return (
            f"warning: {estimate.table}: partitions grow without bound ({basis}): "
            f"~{_size(estimate.bytes)} after a year (guideline 100 MB); {estimate.fix}"
        )
    size = f"~{_size(estimate.bytes)} per partition ({estimate.rows:,.0f} rows)"
    if estimate.over:
        return (
            f"warning: {estimate.table}: {size} ({basis}), over the 100 MB guideline; "
            f"{estimate.fix}"
        )
    return f"partition estimate: {estimate.table}: {size} ({basis}), under 100 MB"


def warnings_for(
    config: CassandraSchemaConfig,
    rates: Mapping[str, float],
    row_bytes: Mapping[str, int] = ROW_BYTES,
) -> list[str]:
    """The warning line of every view whose largest partition exceeds the guideline."""
    return [
        describe(estimate)
        for estimate in estimate_partitions(config, rates, row_bytes)
        if estimate.over
    ]


__all__ = [
    "ESTIMATED_VIEWS",
    "GUIDELINE_BYTES",
    "ROW_BYTES",
    "PartitionEstimate",
    "describe",
    "estimate_partitions",
    "parse_expectations",
    "parse_rate",
    "parse_row_bytes",
    "warnings_for",
]
