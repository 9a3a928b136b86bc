"""P2 scaling: one consumer process against two on the same queue, and where it stops.

Each consumer process runs the real :class:`consumer.worker.Worker` (4 pollers, batches of
10) with its own :class:`consumer.sinks.cassandra.CassandraStore` (own driver connection,
``max_in_flight`` 64) into one keyspace. The queue is the same stream of events split
between the processes, as SQS hands each message to one receiver: each process holds its
share of the JSON bodies in an in-memory source, every process is connected and warmed up
before the clock starts, and all start together. The rate is all events over the time from
the first start to the last finish. Beside it: the CPU every consumer process used per event
(summed), the Cassandra server's CPU per event (when it runs on this machine) and how busy
the machine's CPUs were -- the figures that say which side ran out.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import Any

from bench.common import (
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    load_services_env,
    markdown_table,
    progress,
    ratio,
    summarize,
)
from bench.cpu import machine_ticks, process_cpu

#: Events per round (split between the processes) and rounds, scaled by ``--scale``.
SCALING_EVENTS = 2000
SCALING_ROUNDS = 3
#: The process counts compared.
PROCESSES = (1, 2)


def _child(keyspace: str, count: int, seed: int, ready: Any, start: Any, out: Any) -> None:
    """One consumer process: connect, warm up, wait for the start, consume its share."""
    load_services_env()
    from bench.common import cassandra_contact  # noqa: PLC0415
    from bench.eventgen import event_stream  # noqa: PLC0415
    from bench.p2_consumer import BATCH, MAX_IN_FLIGHT, POLLERS, PreloadedSource  # noqa: PLC0415
    from consumer.config import CassandraConfig, CassandraSchemaConfig  # noqa: PLC0415
    from consumer.sinks.cassandra import CassandraStore  # noqa: PLC0415
    from consumer.worker import Worker  # noqa: PLC0415

    host, port = cassandra_contact()
    config = CassandraConfig(
        hosts=(host,),
        port=port,
        max_in_flight=MAX_IN_FLIGHT,
        schema=CassandraSchemaConfig(keyspace=keyspace),
    )
    store = CassandraStore.connect(config)

    def consume(bodies: list[str]) -> tuple[float, float, float]:
        source = PreloadedSource(bodies)
        worker = Worker(source, store, concurrency=POLLERS, batch_size=BATCH, wait_seconds=1)
        began, cpu = time.time(), time.process_time()
        worker.start()
        source.done.wait(600)
        ended, used = time.time(), time.process_time() - cpu
        worker.stop()
        worker.join(30)
        if source.acked < source.total or source.problems:
            raise RuntimeError(f"consumer child: {source.acked}/{source.total} acked")
        return began, ended, used

    try:
        consume([e.to_json() for e in event_stream(200, seed=seed + 500_000, table="warm")])
        bodies = [e.to_json() for e in event_stream(count, seed=seed, table=f"scale_{seed}")]
        ready.put("ready")
        start.wait(600)
        out.put(consume(bodies))
    except BaseException as exc:  # the parent reports it
        ready.put(f"failed: {type(exc).__name__}: {exc}")
        out.put(None)
        raise
    finally:
        store.close()


def _get(queue: Any, children: list[Any], timeout: float) -> Any:
    """The next answer of a child; RuntimeError if every child is gone or time runs out."""
    import queue as queues  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=1)
        except queues.Empty:
            if not any(child.is_alive() for child in children):
                raise RuntimeError("the consumer processes exited without an answer") from None
    raise RuntimeError("the consumer processes did not answer in time")


def run_round(
    keyspace: str, processes: int, events: int, seed: int, server: int | None
) -> dict[str, float]:
    """One timed run of ``processes`` consumer processes sharing ``events`` events."""
    context = multiprocessing.get_context("spawn")
    ready, out, start = context.Queue(), context.Queue(), context.Event()
    share = events // processes
    children = [
        context.Process(
            target=_child, args=(keyspace, share, seed + k, ready, start, out), daemon=True
        )
        for k in range(processes)
    ]
    for child in children:
        child.start()
    try:
        for _ in children:
            answer = _get(ready, children, 300)
            if answer != "ready":
                raise RuntimeError(answer)
        server_cpu = process_cpu(server)
        busy, total = machine_ticks()
        start.set()
        finished = [_get(out, children, 600) for _ in children]
        server_used = process_cpu(server) - server_cpu
        busy_now, total_now = machine_ticks()
    finally:
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()
    if any(item is None for item in finished):
        raise RuntimeError("a consumer process failed")
    began = min(item[0] for item in finished)
    ended = max(item[1] for item in finished)
    count = share * processes
    return {
        "rate": count / (ended - began),
        "cpu_per_event": sum(item[2] for item in finished) / count,
        "server_cpu_per_event": server_used / count,
        "machine_busy": (busy_now - busy) / (total_now - total) if total_now > total else 0.0,
    }


def measure_scaling(keyspace: str, server: int | None, scale: float = 1.0) -> dict[str, Any]:
    """Rates of one and two consumer processes, interleaved round-robin in one run."""
    from bench.common import interleaved  # noqa: PLC0415

    started = time.perf_counter()
    events = max(200, round(SCALING_EVENTS * scale))
    names = [str(n) for n in PROCESSES]
    seed = 7_000_000

    def run(name: str, turn: int) -> dict[str, float]:
        nonlocal seed
        seed += 10
        measured = run_round(keyspace, int(name), events, seed, server)
        progress(
            f"P2 scaling round {turn + 1}: {name} process(es) {measured['rate']:,.0f} events/s "
            f"(client {measured['cpu_per_event'] * 1e6:,.0f} µs, Cassandra "
            f"{measured['server_cpu_per_event'] * 1e6:,.0f} µs CPU/event, machine "
            f"{measured['machine_busy']:.0%} busy)"
        )
        return measured

    runs = interleaved(names, SCALING_ROUNDS, run)
    return {
        "events": events,
        "rounds": SCALING_ROUNDS,
        "runs": runs,
        "stats": {name: summarize([r["rate"] for r in runs[name]]) for name in names},
        "elapsed_s": time.perf_counter() - started,
    }


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def render_scaling(scaling: dict[str, Any], cpus: int) -> str:
    """The scaling table and what it says."""
    runs, stats = scaling["runs"], scaling["stats"]
    base = stats["1"]["median"]
    rows = []
    for name in (str(n) for n in PROCESSES):
        s = stats[name]
        client = _median(runs[name], "cpu_per_event")
        server = _median(runs[name], "server_cpu_per_event")
        rows.append(
            [
                f"{name} consumer process{'es' if name != '1' else ''}",
                fmt_rate(s["median"]),
                f"{fmt_rate(s['min'])} - {fmt_rate(s['max'])}",
                fmt_ratio(ratio(s["median"], base)),
                fmt_seconds(client),
                fmt_seconds(server),
                f"{(client + server) * s['median'] / cpus:.0%}",
                f"{_median(runs[name], 'machine_busy'):.0%}",
            ]
        )
    table = markdown_table(
        [
            "consumers",
            "median events/s",
            "range",
            "vs one process",
            "client CPU per event (all processes)",
            "Cassandra CPU per event",
            "share of the machine (client + Cassandra)",
            "machine CPU busy",
        ],
        rows,
    )
    paired = statistics.median(
        two["rate"] / one["rate"] for one, two in zip(runs["1"], runs["2"], strict=False)
    )
    one_client = _median(runs["1"], "cpu_per_event")
    one_server = _median(runs["1"], "server_cpu_per_event")
    lines = [
        f"{scaling['events']} events per run, split between the processes; "
        f"{scaling['rounds']} rounds, interleaved. Two processes against one (per-round "
        f"median): {paired:.2f}x.",
        "",
        table,
        "",
        f"One process spends {fmt_seconds(one_client)} of its own CPU per event and makes "
        f"Cassandra spend {fmt_seconds(one_server)}: each event costs "
        f"{fmt_seconds(one_client + one_server)} of CPU on this {cpus}-core machine, so "
        f"the machine as a whole cannot pass about "
        f"{cpus / (one_client + one_server):,.0f} events/s whatever the number of "
        "consumer processes (less, with the other work it runs).",
    ]
    return "\n".join(lines)


__all__ = ["measure_scaling", "render_scaling", "run_round"]
