"""Capacity model: what 1,000, 10,000 and 100,000 events per second need.

Every input is a :class:`Figure` -- a value with the place it comes from: a benchmark of this
repository (read from ``bench/results/*.json``, so a rerun of the benchmarks changes the
tables), a published limit (the AWS or Apache Cassandra / DataStax page it is documented on)
or a stated assumption the reader can change on the command line. Every derived number is
a :class:`Row` whose source names the inputs and the arithmetic.

``python -m bench.capacity`` prints the tables; ``--write`` replaces the generated part of
``docs/capacity.md`` (between the ``capacity:begin`` and ``capacity:end`` markers).
``python -m bench.capacity storage`` measures the bytes each stored event takes on disk per
table (``bench/results/capacity.json``, see :mod:`bench.capacity_storage`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.capacity_limits import LIMITS, Figure
from bench.common import load_results, markdown_table

#: The rates the model is computed for (events per second).
RATES = (1_000, 10_000, 100_000)
#: Seconds in the month the monthly counts use (30 days).
MONTH_SECONDS = 30 * 86_400
DAY_SECONDS = 86_400
#: Retention periods of the storage table (days).
RETENTIONS = (30, 90, 365)
#: The date the published limits below were read.
DOC = Path(__file__).resolve().parent.parent / "docs" / "capacity.md"
BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"


@dataclass(frozen=True)
class Row:
    """One derived number: what it is, its value, how it follows from the inputs."""

    label: str
    value: float
    unit: str
    source: str


@dataclass(frozen=True)
class Assumptions:
    """What the reader decides; every field is a command-line option."""

    rf: int = 3
    consumer_utilization: float = 0.6
    node_cores: int = 8
    node_write_share: float = 0.5
    node_disk_tb: float = 2.0
    offload_share: float = 0.001
    pollers: int = 4
    event_bytes: float | None = None  # None: the measured benchmark event

    def figures(self) -> dict[str, Figure]:
        a = "assumption"
        return {
            "rf": Figure(self.rf, "replicas (RF)", "assumption: NetworkTopologyStrategy, RF 3", a),
            "consumer_utilization": Figure(
                self.consumer_utilization,
                "of a consumer core busy at the planned rate",
                "assumption: 40 % headroom for bursts and catching up after an outage",
                a,
            ),
            "node_cores": Figure(self.node_cores, "cores per Cassandra node", "assumption", a),
            "node_write_share": Figure(
                self.node_write_share,
                "of a node's cores for the write path",
                "assumption: the rest for compaction, GC, reads, repair",
                a,
            ),
            "node_disk_tb": Figure(self.node_disk_tb, "TB data disk per node", "assumption", a),
            "offload_share": Figure(
                self.offload_share,
                "of events above 252 KiB, offloaded to S3",
                "assumption (sqla_audit.limits: 256 KiB less 4 KiB headroom)",
                a,
            ),
            "pollers": Figure(self.pollers, "pollers per consumer process", "consume default", a),
        }


def _median_over(rows: Mapping[str, Mapping[str, float]], key: str) -> tuple[str, float]:
    name = max(rows, key=lambda n: rows[n][key])
    return name, rows[name][key]


def inputs(results: Mapping[str, Mapping[str, Any]], assumptions: Assumptions) -> dict[str, Figure]:
    """Every input of the model: measured figures, limits and assumptions."""
    out: dict[str, Figure] = dict(LIMITS)
    out.update(assumptions.figures())
    bd = results.get("breakdown", {}).get("rows", {})
    if bd:
        extra = {n: {"v": r["total"] - r["plain"], "json": r["to_json"]} for n, r in bd.items()}
        name, capture = _median_over(extra, "v")
        out["capture_s"] = Figure(
            capture,
            "s producer CPU per row: capture + envelopes (audited - no audit)",
            f"bench P1 breakdown, '{name}' (the costliest of {len(bd)} workloads)",
        )
        out["json_s"] = Figure(
            extra[name]["json"], "s per event: to_json", f"bench P1 breakdown, '{name}'"
        )
    p5 = [r for r in results.get("p5", {}).get("rows", []) if "cpu_us_per_event" in r]
    lean = [r for r in p5 if r.get("transport") == "lean" and r.get("delay_ms") == 20.0]
    pick = (lean or p5)[:1]
    if pick:
        r = pick[0]
        out["publish_s"] = Figure(
            r["cpu_us_per_event"] * 1e-6,
            "s producer CPU per event: JSON + PublishBatch share",
            f"bench P5, {r['topic']}, +{r['delay_ms']:.0f} ms, {r.get('transport', 'boto3')} "
            f"transport, max_concurrency {r['max_concurrency']}",
        )
    elif "json_s" in out:
        out["publish_s"] = Figure(
            300e-6 + out["json_s"].value,
            "s producer CPU per event: JSON + PublishBatch share",
            "bench P5 reading in docs/benchmarks.md, run of 2026-12-03 (cProfile of the boto3 "
            "path: ~300 µs per event) + P1 breakdown "
            "to_json; rerun `python -m bench p5` for the measured column",
        )
    p3 = results.get("p3", {}).get("kinds", {}).get("scalar", {})
    if assumptions.event_bytes is not None:
        out["event_bytes"] = Figure(
            assumptions.event_bytes, "bytes per event", "assumption", "assumption"
        )
    elif "bytes" in p3:
        out["event_bytes"] = Figure(
            p3["bytes"], "bytes per event on the wire", "bench P3, scalar update event (12 columns)"
        )
    p2 = results.get("p2", {})
    views = p2.get("views", {})
    older = str(p2.get("finished_at", "")) < str(views.get("finished_at", ""))
    if "cpu_per_event" in p2 and older and "all" in views.get("cpu_per_record", {}):
        # The full P2 run predates the views measurement (and the default of every view):
        # the consumer's own work (ceiling: no store) plus the store's CPU per record with
        # every view, both measured.
        out["consumer_s"] = Figure(
            p2["cpu_per_event"]["ceiling"] + views["cpu_per_record"]["all"],
            "s consumer CPU per event (decode, diff, records, driver), default views",
            "bench P2: ceiling contender (the consumer into the in-memory store) + P2 views, "
            "client CPU per record with all views",
        )
    elif "cpu_per_event" in p2:
        out["consumer_s"] = Figure(
            p2["cpu_per_event"]["consumer"],
            "s consumer CPU per event (decode, diff, records, driver)",
            "bench P2, consumer contender (Worker + CassandraStore, 4 pollers x 10)",
        )
    server = p2.get("server_cpu_per_event", {}).get("consumer")
    write = results.get("capacity", {}).get("storage", {}).get("write", {})
    if not server and write.get("server_cpu_per_event"):
        out["cassandra_s"] = Figure(
            write["server_cpu_per_event"],
            "s Cassandra CPU per event (one node, RF 1, coordinator + replica, default views)",
            "bench capacity storage: the node's CPU while the store wrote the events, less its "
            "CPU over an idle window just before (a shared node)",
        )
    if server:
        out["cassandra_s"] = Figure(
            server,
            "s Cassandra CPU per event (one node, RF 1, coordinator + replica)",
            "bench P2, consumer contender, Cassandra process CPU",
        )
    scaling = p2.get("scaling", {}).get("stats", {}).get("1")
    if scaling:
        out["one_process_rate"] = Figure(
            scaling["median"],
            "events/s one consumer process reached on the benchmark machine",
            "bench P2 scaling (Cassandra on the same 2 cores)",
        )
    storage = results.get("capacity", {}).get("storage")
    if storage:
        out["stored_bytes"] = Figure(
            storage["bytes_per_event"],
            "bytes on disk per event, one replica, all tables (compressed)",
            f"bench capacity storage: {storage['events']:,} events, default views, "
            f"{storage['compressor']}",
        )
        out["compression"] = Figure(
            storage["compression_ratio"],
            "compressed / uncompressed (Data.db)",
            "bench capacity storage, CompressionInfo.db of every SSTable",
        )
        out["raw_bytes"] = Figure(
            sum(t.get("uncompressed_per_event", 0.0) for t in storage["tables"].values()),
            "bytes per event, one replica, all tables, before compression",
            "bench capacity storage, CompressionInfo.db of every SSTable",
        )
        out["actor_row_bytes"] = Figure(
            storage["tables"].get("changes_by_actor", {}).get("uncompressed_per_event", 0.0),
            "bytes per changes_by_actor row, uncompressed",
            "bench capacity storage",
        )
    return {k: replace(fig, source=fig.source + _when(results, fig)) for k, fig in out.items()}


#: The tables of the optional views (``--views``); the rest is the always-on history.
_VIEW_TABLES = frozenset(
    f"changes_by_{view}" for view in ("actor", "transaction", "request", "trace", "table")
)

#: Which result file a measured figure's source names.
_PARTS = (
    ("bench P1 breakdown", ("breakdown",)),
    ("bench P5,", ("p5",)),
    ("bench P3", ("p3",)),
    ("bench P2", ("p2",)),
    ("bench capacity storage", ("capacity", "storage")),
)


def _when(results: Mapping[str, Mapping[str, Any]], fig: Figure) -> str:
    """'; measured DATE, code REV' for a measured figure (empty when unknown)."""
    if fig.kind != "measured":
        return ""
    for prefix, path in _PARTS:
        if fig.source.startswith(prefix):
            node: Mapping[str, Any] = results.get(path[0], {})
            for key in path[1:]:
                node = node.get(key, {})
            date = str(node.get("finished_at", ""))[:10]
            code = str(node.get("machine", {}).get("code measured", "")).split(" ")[0]
            return f"; measured {date}, code {code}" if date else ""
    return ""


def derive(rate: float, f: Mapping[str, Figure]) -> list[Row]:
    """The rows of one rate. Missing inputs give rows that say what to run."""
    rows: list[Row] = []

    def add(label: str, value: float, unit: str, source: str) -> None:
        rows.append(Row(label, value, unit, source))

    def v(key: str) -> float:
        return f[key].value

    if "capture_s" in f and "publish_s" in f:
        per = v("capture_s") + v("publish_s")
        add(
            "producer CPU",
            rate * per,
            "cores (all application processes)",
            "rate x (capture_s + publish_s)",
        )
    if "event_bytes" in f:
        entries = max(1, min(v("sns_batch_entries"), v("sns_batch_bytes") // v("event_bytes")))
        calls = rate / entries
        add(
            "SNS PublishBatch calls",
            calls,
            "per s",
            f"rate / {entries:.0f} entries (sns_batch_entries, sns_batch_bytes / event_bytes)",
        )
        add("SNS PublishBatch calls", calls * MONTH_SECONDS, "per month", "per s x 30 days")
        add(
            "SNS payload published",
            rate * v("event_bytes") * MONTH_SECONDS / 1e12,
            "TB per month",
            "rate x event_bytes x 30 days",
        )
    add(
        "SNS to SQS deliveries",
        rate * MONTH_SECONDS,
        "per month",
        "one per event and subscribed queue, 30 days",
    )
    receives = rate / v("sqs_receive_batch")
    deletes = rate / v("sqs_delete_batch")
    add("SQS ReceiveMessage (full batches)", receives, "per s", "rate / sqs_receive_batch")
    add("SQS DeleteMessageBatch", deletes, "per s", "rate / sqs_delete_batch")
    add(
        "SQS requests (receive + delete)",
        (receives + deletes) * MONTH_SECONDS,
        "per month",
        "per s x 30 days; idle pollers add at most pollers / sqs_long_poll per process and s",
    )
    offloaded = rate * v("offload_share")
    add(
        "S3 PutObject + GetObject (offloaded events)",
        2 * offloaded * MONTH_SECONDS,
        "per month",
        "2 x rate x offload_share x 30 days (the producer puts, the consumer gets)",
    )
    processes = 0
    if "consumer_s" in f:
        per_process = v("consumer_utilization") / v("consumer_s")
        processes = math.ceil(rate / per_process)
        add(
            "consumer events/s per process",
            per_process,
            "events/s",
            "consumer_utilization / consumer_s (one process: one GIL, one core)",
        )
        add("consumer processes", processes, "processes (1 core each)", "ceil(rate / per process)")
        add(
            "SQS in-flight messages",
            processes * v("pollers") * v("sqs_receive_batch"),
            "messages",
            "processes x pollers x sqs_receive_batch (check: sqs_inflight_standard)",
        )
    if "cassandra_s" in f:
        cluster = rate * v("cassandra_s") * v("rf")
        per_node = v("node_cores") * v("node_write_share")
        add(
            "Cassandra CPU, whole cluster",
            cluster,
            "cores",
            "rate x cassandra_s x rf (every replica pays the measured cost: conservative)",
        )
        add(
            "Cassandra nodes for the writes",
            max(v("rf"), math.ceil(cluster / per_node)),
            "nodes",
            "max(rf, ceil(cluster cores / (node_cores x node_write_share)))",
        )
    if "stored_bytes" in f:
        day = rate * DAY_SECONDS * v("stored_bytes") * v("rf")
        add("storage per day", day / 1e12, "TB (RF copies)", "rate x 86,400 x stored_bytes x rf")
        if "raw_bytes" in f:
            add(
                "storage per day if nothing compressed",
                rate * DAY_SECONDS * v("raw_bytes") * v("rf") / 1e12,
                "TB (RF copies)",
                "rate x 86,400 x raw_bytes x rf (upper bound for data that does not compress)",
            )
        usable = v("node_disk_tb") * 1e12 * v("cassandra_disk_fill")
        for days in RETENTIONS:
            add(f"storage, {days} days", day * days / 1e12, "TB", f"per day x {days}")
            add(
                f"Cassandra nodes for {days} days of data",
                max(v("rf"), math.ceil(day * days / usable)),
                "nodes",
                "max(rf, ceil(stored / (node_disk_tb x cassandra_disk_fill)))",
            )
    return rows


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _fmt_input(fig: Figure) -> str:
    if fig.unit.startswith("s ") and fig.value < 1:
        return f"{fig.value * 1e6:,.0f} µs"
    if fig.unit.startswith("of ") and fig.value <= 1:
        return f"{fig.value:.1%}".replace(".0%", "%")
    return _fmt(fig.value)


def render(results: Mapping[str, Mapping[str, Any]], assumptions: Assumptions | None = None) -> str:
    """The generated part of docs/capacity.md."""
    assumptions = assumptions or Assumptions()
    f = inputs(results, assumptions)
    out = [
        "### Inputs",
        "",
        markdown_table(
            ["input", "value", "unit", "kind", "source"],
            [
                [
                    k,
                    _fmt_input(fig),
                    fig.unit.removeprefix("s ").removeprefix("of "),
                    fig.kind,
                    fig.source,
                ]
                for k, fig in f.items()
            ],
        ),
    ]
    missing = [
        k
        for k in ("capture_s", "publish_s", "consumer_s", "cassandra_s", "stored_bytes")
        if k not in f
    ]
    if missing:
        out += [
            "",
            "Not in the current results (rows that need them are left out): "
            + ", ".join(missing)
            + ". Run `python -m bench p2` (consumer and Cassandra CPU), "
            "`python -m bench p5` and `python -m bench.capacity storage`.",
        ]
    per_rate = {rate: derive(rate, f) for rate in RATES}
    labels = [(r.label, r.unit, r.source) for r in per_rate[RATES[0]]]
    table = [
        [
            label,
            unit,
            *(
                _fmt(next(r.value for r in per_rate[rate] if (r.label, r.unit) == (label, unit)))
                for rate in RATES
            ),
            src,
        ]
        for label, unit, src in labels
    ]
    out += [
        "",
        "### What each rate needs",
        "",
        markdown_table(
            ["quantity", "unit", *(f"{rate:,} events/s" for rate in RATES), "how"], table
        ),
    ]
    storage = results.get("capacity", {}).get("storage", {})
    if storage.get("tables"):
        out += [
            "",
            "Bytes per event by table (one replica; `changes_by_service_record` is the "
            "always-on history, each `changes_by_<view>` one view of `--views`; bench capacity "
            "storage):",
            "",
            markdown_table(
                ["table", "on disk (all SSTable files)", "data before compression"],
                [
                    [name, _fmt(t["bytes_per_event"]), _fmt(t["uncompressed_per_event"])]
                    for name, t in storage["tables"].items()
                    if t["bytes_per_event"] >= 1
                ],
            ),
        ]
    tables = storage.get("tables", {})
    if tables and storage.get("bytes_per_event"):
        views = sum(t["bytes_per_event"] for n, t in tables.items() if n in _VIEW_TABLES)
        history = storage["bytes_per_event"] - views
        out += [
            "",
            f"History only (`--views history`): {_fmt(history)} bytes per event on disk, "
            f"{history / storage['bytes_per_event']:.0%} of the default; each view adds about "
            f"{_fmt(views / max(1, sum(1 for n in tables if n in _VIEW_TABLES)))} bytes. "
            "Storage rows and storage-driven node counts scale by the same ratio.",
        ]
    if "actor_row_bytes" in f and f["actor_row_bytes"].value:
        rows = f["cassandra_partition_mb"].value * 1e6 / f["actor_row_bytes"].value
        out += [
            "",
            f"Hot partitions: at {_fmt(f['actor_row_bytes'].value)} bytes per "
            f"`changes_by_actor` row (uncompressed), one actor's partition passes "
            f"cassandra_partition_mb after about {rows:,.0f} changes in one bucket, i.e. "
            f"{rows / DAY_SECONDS:,.2f} changes per second sustained for a day.",
        ]
    return "\n".join(out)


def sources_complete(results: Mapping[str, Mapping[str, Any]], assumptions: Assumptions) -> bool:
    """Every input has a non-empty source."""
    return all(fig.source.strip() for fig in inputs(results, assumptions).values())


def write_doc(text: str, path: Path = DOC) -> None:
    doc = path.read_text()
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n\n{text}\n\n{END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", nargs="?", choices=("model", "storage"), default="model")
    parser.add_argument(
        "--write", action="store_true", help="rewrite the section of docs/capacity.md"
    )
    parser.add_argument("--events", type=int, default=3000, help="storage: events to write")
    defaults = Assumptions()
    for name in ("rf", "node_cores", "pollers"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    for name in (
        "consumer_utilization",
        "node_write_share",
        "node_disk_tb",
        "offload_share",
        "event_bytes",
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    if args.what == "storage":
        from bench.capacity_storage import main as storage_main  # noqa: PLC0415

        return storage_main(args.events)
    assumptions = replace(defaults, **{k: getattr(args, k) for k in defaults.__dataclass_fields__})
    text = render(load_results(), assumptions)
    if args.write:
        write_doc(text)
    print(text)
    return 0


__all__ = ["LIMITS", "RATES", "Assumptions", "Figure", "Row", "derive", "inputs", "render"]

if __name__ == "__main__":
    sys.exit(main())
