"""P2 views: the write cost of each view (``--views``) of the Cassandra store.

The store's ``write`` (digest read, rows, digests: the whole write path, decoding and
diffing done before the clock) of the same records into one keyspace holding every table,
by stores that keep history only, history and one view, and every view, interleaved
round-robin; 4 threads write batches of 10 records, as the worker's pollers do. The events
carry a request id (one per transaction) and an OpenTelemetry trace id, so the request and
trace views really write. ``python -m bench.p2_consumer views`` runs only this part.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from bench.common import (
    BenchError,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    interleaved,
    markdown_table,
    progress,
    ratio,
    summarize,
    unique_name,
    update_result,
)
from bench.cpu import Meter
from bench.eventgen import event_stream
from bench.keyspace import Keyspace

#: The views, in the order the measurement reports them (``consumer.sinks.views.VIEWS``).
VIEW_NAMES = ("actor", "transaction", "request", "trace", "table")

#: The view sets compared: history only, history and one view, every view.
VIEW_SETS: tuple[tuple[str, frozenset[str]], ...] = (
    ("history", frozenset()),
    *((f"+{view}", frozenset({view})) for view in VIEW_NAMES),
    ("all", frozenset(VIEW_NAMES)),
)

#: Records per view set and round (scaled by ``--scale``), and rounds.
VIEWS_SIZE = 1000
VIEWS_ROUNDS = 5

#: The command that runs only the views measurement.
VIEWS_COMMAND = ".venv/bin/python -m bench.p2_consumer views"


def traced_stream(count: int, *, seed: int, table: str) -> list[Any]:
    """:func:`bench.eventgen.event_stream` with one request id and one OpenTelemetry trace
    id per transaction (as one HTTP request committing once), so every view writes."""
    from sqla_audit.tracing import TRACE_ID_KEY  # noqa: PLC0415

    return [
        dataclasses.replace(
            event,
            request_id=f"req-{event.transaction_id.hex[:16]}",
            metadata={**event.metadata, TRACE_ID_KEY: event.transaction_id.hex},
        )
        for event in event_stream(count, seed=seed, table=table)
    ]


class ViewsBench(Keyspace):
    """One keyspace with every table; one store per view set (``layout`` tells each store
    which views it keeps, so only those are written)."""

    def __init__(self, keyspace: str) -> None:
        from bench.p2_consumer import MAX_IN_FLIGHT  # noqa: PLC0415
        from consumer.sinks.cassandra import (  # noqa: PLC0415
            LAYOUT_VERSION,
            CassandraStore,
            KeyspaceLayout,
        )

        super().__init__(keyspace, MAX_IN_FLIGHT)
        self.stores = {
            name: CassandraStore(
                self.session,
                self.config.schema,
                max_in_flight=MAX_IN_FLIGHT,
                layout=KeyspaceLayout(LAYOUT_VERSION, views),
            )
            for name, views in VIEW_SETS
        }
        self.seed = 1000

    def records(self, count: int) -> list[Any]:
        from consumer.differ import record_for_event  # noqa: PLC0415

        self.seed += 1
        events = traced_stream(count, seed=self.seed, table=f"accounts_{self.seed}")
        return [r for r in map(record_for_event, events) if r is not None]

    def requests_per_record(self, name: str, records: Sequence[Any]) -> float:
        """Cassandra requests one record costs: its inserts plus the digest read and write."""
        store = self.stores[name]
        inserts = sum(1 for r in records for _ in store._statements_for(r))
        return inserts / len(records) + 2

    def write(self, name: str, count: int) -> dict[str, float]:
        """Write ``count`` fresh records through the store of view set ``name``: POLLERS
        threads, batches of BATCH records, the clock on the writes only."""
        from bench.p2_consumer import BATCH, POLLERS  # noqa: PLC0415

        store = self.stores[name]
        records = self.records(count)
        batches = collections.deque(records[k : k + BATCH] for k in range(0, len(records), BATCH))
        lock = threading.Lock()
        failures: list[BaseException] = []

        def writer() -> None:
            while True:
                with lock:
                    if not batches or failures:
                        return
                    batch = batches.popleft()
                try:
                    store.write(batch)
                except Exception as exc:
                    with lock:
                        failures.append(exc)
                    return

        threads = [threading.Thread(target=writer) for _ in range(POLLERS)]
        meter = Meter(self.server)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        measured = meter.stop(len(records))
        if failures:
            raise BenchError(f"writing with views {name!r} failed: {failures[0]}")
        measured["requests_per_record"] = self.requests_per_record(name, records)
        return measured


def measure_views(scale: float = 1.0, rounds: int = VIEWS_ROUNDS) -> dict[str, Any]:
    """Records/s written with each view set, interleaved round-robin in one run."""
    from bench.p2_consumer import BATCH, MAX_IN_FLIGHT, POLLERS  # noqa: PLC0415

    started = time.perf_counter()
    bench = ViewsBench(unique_name("sqla_audit_bench_views"))
    names = [name for name, _ in VIEW_SETS]
    count = max(50, round(VIEWS_SIZE * scale))

    def run(name: str, turn: int) -> dict[str, float]:
        measured = bench.write(name, count)
        progress(
            f"P2 views round {turn + 1}: {name} {measured['rate']:,.0f} records/s "
            f"({measured['requests_per_record']:.1f} requests/record)"
        )
        return measured

    try:
        for name in names:  # warm-up: prepared statements, pools, code paths
            bench.write(name, 100)
        runs = interleaved(names, rounds, run)
    finally:
        bench.close()
    rates = {name: [measured["rate"] for measured in runs[name]] for name in names}
    cpu = {name: [measured["cpu_per_event"] for measured in runs[name]] for name in names}
    # requests per record: the figure of each view set's last round
    requests = {name: runs[name][-1]["requests_per_record"] for name in names if runs[name]}
    return {
        "size": count,
        "rounds": rounds,
        "rates": rates,
        "stats": {name: summarize(values) for name, values in rates.items()},
        "cpu_per_record": {name: statistics.median(values) for name, values in cpu.items()},
        "requests_per_record": requests,
        "settings": {"max_in_flight": MAX_IN_FLIGHT, "writers": POLLERS, "batch": BATCH},
        "elapsed_s": time.perf_counter() - started,
    }


def render_views(views: dict[str, Any]) -> str:
    """The views table, the command that reproduces it and what the numbers say."""
    stats = views["stats"]
    rates = views["rates"]
    base = stats["history"]["median"]
    rows = []
    for name, chosen in VIEW_SETS:
        s = stats[name]
        label = {"history": "history only", "all": "all views"}.get(name, f"history {name}")
        rows.append(
            [
                label,
                ",".join(sorted(chosen)) or "history",
                f"{views['requests_per_record'][name]:.1f}",
                fmt_rate(s["median"]),
                f"{fmt_rate(s['min'])} - {fmt_rate(s['max'])}",
                fmt_ratio(ratio(s["median"], base)),
                f"{paired(rates[name], rates['history']):.0%}",
                fmt_seconds(views["cpu_per_record"][name]),
            ]
        )
    table = markdown_table(
        [
            "views",
            "--views",
            "requests per record",
            "median records/s",
            "range",
            "vs history only",
            "per-round ratio",
            "client CPU per record",
        ],
        rows,
    )
    single = {name: paired(rates[name], rates["history"]) for name, _ in VIEW_SETS[1:-1]}
    cheapest = max(single, key=lambda name: single[name])
    dearest = min(single, key=lambda name: single[name])
    every = paired(rates["all"], rates["history"])
    req = views["requests_per_record"]
    cpu = views["cpu_per_record"]
    per_insert = (cpu["all"] - cpu["history"]) / max(req["all"] - req["history"], 1.0)
    measured = views.get("finished_at", "?")
    code = views.get("machine", {}).get("code measured", "?")
    lines = [
        f"Reproduce: `{VIEWS_COMMAND}` (also part of `.venv/bin/python -m bench p2`) — "
        f"measured {measured} in {views.get('elapsed_s', 0):.0f} s; code: {code}. "
        f"{views['size']} records per view set and round, {views['rounds']} rounds, "
        f"{views['settings']['writers']} threads writing batches of "
        f"{views['settings']['batch']} with at most {views['settings']['max_in_flight']} "
        "requests in flight; every record has an actor, a request id and a trace id.",
        "",
        table,
        "",
        f"History alone costs {req['history']:.1f} requests per record (the history row, "
        "`record_services`, the digest read and the digest write); each view adds one insert "
        "of the whole record. One view keeps "
        f"{single[cheapest]:.0%} ({cheapest.lstrip('+')}) to {single[dearest]:.0%} "
        f"({dearest.lstrip('+')}) of the history-only rate; all five keep {every:.0%} "
        f"({req['all']:.1f} requests per record, "
        f"{req['all'] / req['history']:.2f}x the requests of history only).",
        "",
        f"Client CPU per record grows from {fmt_seconds(cpu['history'])} (history only) to "
        f"{fmt_seconds(cpu['all'])} (all views), {fmt_seconds(per_insert)} per extra insert: "
        "with Cassandra on the same cores the write path is bound by the cost of each "
        "request, so the rate falls about in proportion to the requests (all views: "
        f"{req['history'] / req['all']:.0%} expected from the request count, {every:.0%} "
        "measured). No view costs much more than one insert -- the timeline's bucket and "
        "shard and the actor's day are computed, not read -- so which views to keep is a "
        "question of which questions are asked (docs/cql.md, Views), and a consumer that "
        "must write faster runs more processes on the queue.",
    ]
    return "\n".join(lines)


def main_views(scale: float = 1.0) -> dict[str, Any]:
    """Run only the views measurement and store it in the P2 results."""
    views = measure_views(scale=scale)
    stored = update_result("p2", "views", views)
    print("\n### P2 views — the write cost of each view\n")
    print(render_views(stored))
    return stored


def paired(values: Sequence[float], baseline: Sequence[float]) -> float:
    """The median of the per-round ratios of ``values`` to ``baseline``."""
    pairs = [a / b for a, b in zip(values, baseline, strict=False) if b > 0]
    return statistics.median(pairs) if pairs else 0.0


__all__ = [
    "VIEWS_COMMAND",
    "main_views",
    "measure_views",
    "paired",
    "render_views",
    "traced_stream",
]
