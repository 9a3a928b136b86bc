"""P2: consumer throughput into the real Cassandra, against the limit and a naive consumer.

Three contenders write the same kind of rows -- the tables of the store with every view
enabled (the default: history in ``changes_by_service_record`` and ``record_services``, then
by transaction, by actor, by request and the table timeline; the generated events carry no
trace id) with the store's own prepared statements -- through one driver session (same
driver, same settings):

* ``raw limit`` -- exactly the requests the store sends for each record (the
  ``event_digests`` read, the inserts of every table, the ``event_digests`` write), bound by
  the store's own code before the clock starts; the clock runs only while they are sent with
  ``execute_async`` and at most 64 requests in flight (the store's ``max_in_flight``
  default). This is what Cassandra and the driver can take from one Python process.
* ``consumer`` -- the real :class:`consumer.worker.Worker` (4 pollers, batches of 10
  messages as from SQS) with the real :class:`consumer.sinks.cassandra.CassandraStore`
  (``max_in_flight`` 64), fed from an in-memory source holding the JSON bodies: decoding,
  diffing, record building, the digest read and conflict check, binding, writing and
  acknowledging are all on the clock.
* ``naive`` -- the obvious implementation: one thread, ``DeepDiff`` on every event, and
  one synchronous ``session.execute`` per row (no digests).
* ``ceiling`` (for information, not a target) -- the same worker writing to the in-memory
  store: how many events per second the consumer's own code (decode, diff, records,
  acknowledgements) handles when the store costs nothing. When the raw limit is far below
  it, Cassandra is the bottleneck, not the consumer.

Besides the rate, each run records the CPU time this Python process used per event (every
thread: pollers, the driver's event loop), the CPU time the Cassandra server used per event
(when it runs on this machine: found by the port it listens on) and how busy the machine's
CPUs were: when Cassandra runs on the same cores, every microsecond of client CPU is taken
from it.

Each round gives every contender a fresh stream (new event ids, same generator, same
shape), so no contender overwrites another's cells; rounds are interleaved and the rate is
events per second. The in-memory source used here is a minimal deque (the test double
``consumer.sources.memory.MemorySource`` copies its whole table on every receive, which
would bill its own cost to the consumer).

Scaling out (:mod:`bench.p2_scaling`, same run, same keyspace): one consumer process against
two on the same queue -- the event stream split between separate processes, each with its
own worker, store and driver connection, started together -- with the client and Cassandra
CPU per event, to show where adding processes stops paying on this machine.

The cost of the views (``--views``) is measured apart, in the same run: the store's
``write`` (digest read, rows, digests: the whole write path, decoding and diffing done
before the clock) of the same records into one keyspace holding every table, by stores
that keep history only, history and one view, and every view; 4 threads write batches of
10 records, as the worker's pollers do. These events carry a request id (one per
transaction) and an OpenTelemetry trace id, so the request and trace views really write.
``python -m bench.p2_consumer views`` runs only this part.
"""

from __future__ import annotations

import collections
import statistics
import sys
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
    load_services_env,
    markdown_table,
    progress,
    ratio,
    run_part,
    summarize,
    unique_name,
)
from bench.cpu import Meter
from bench.eventgen import event_stream
from bench.keyspace import Keyspace
from bench.p2_scaling import measure_scaling, render_scaling
from bench.p2_views import main_views, measure_views, paired, render_views

#: Store and worker settings shared by the contenders (the defaults of the consume command).
MAX_IN_FLIGHT = 64
POLLERS = 4
BATCH = 10

#: Events per contender and round (scaled by ``--scale``), chosen so that each run lasts a
#: few seconds here; the rate does not depend on them once a run is long enough.
SIZES = {"raw": 1500, "consumer": 1500, "naive": 300, "ceiling": 3000}
ROUNDS = 6

#: Targets of the issue.
TARGET_OF_LIMIT = 0.80
TARGET_OVER_NAIVE = 10.0


class PreloadedSource:
    """A minimal thread-safe :class:`~consumer.sources.base.MessageSource` over a deque."""

    def __init__(self, bodies: Sequence[str]) -> None:
        from consumer.sources.base import Message  # noqa: PLC0415

        self._queue = collections.deque(
            Message(message_id=str(k), body=body, handle=k) for k, body in enumerate(bodies)
        )
        self._lock = threading.Lock()
        self.total = len(bodies)
        self.acked = 0
        self.problems = 0
        self.done = threading.Event()

    def receive(self, max_messages: int, wait: float) -> list[Any]:
        with self._lock:
            out = [self._queue.popleft() for _ in range(min(max_messages, len(self._queue)))]
        if not out:
            self.done.wait(min(wait, 0.05))
        return out

    def ack(self, messages: Sequence[Any]) -> None:
        with self._lock:
            self.acked += len(messages)
            if self.acked >= self.total:
                self.done.set()

    def release(self, messages: Sequence[Any], visibility: int = 0) -> None:
        with self._lock:
            self.problems += len(messages)
            self._queue.extend(messages)

    def reject(self, messages: Sequence[Any], reason: str) -> None:
        with self._lock:
            self.problems += len(messages)
            self.acked += len(messages)
            if self.acked >= self.total:
                self.done.set()

    def extend(self, messages: Sequence[Any], seconds: int) -> None:
        return None

    def close(self) -> None:
        self.done.set()


def raw_requests(store: Any, records: Sequence[Any]) -> list[Any]:
    """The bound statements :meth:`CassandraStore.write` sends for new ``records``, in the
    order it sends them per record: the digest read, the rows, the digest write."""
    from consumer.sinks.digest import content_digest  # noqa: PLC0415

    bound: list[Any] = []
    for record in records:
        memo: list[Any] = []
        requests = [
            (store._digest, (record.event_id,)),
            *store._statements_for(record),
            (store._insert_digest, (record.event_id, content_digest(record))),
        ]
        bound.extend(store._bind(record, statement, params, memo) for statement, params in requests)
    return bound


class Bench(Keyspace):
    def __init__(self, keyspace: str) -> None:
        from consumer.sinks.cassandra import CassandraStore  # noqa: PLC0415

        super().__init__(keyspace, MAX_IN_FLIGHT)
        self.store = CassandraStore(self.session, self.config.schema, max_in_flight=MAX_IN_FLIGHT)
        self.seed = 0

    def _stream(self, count: int) -> list[Any]:
        self.seed += 1
        return event_stream(count, seed=self.seed, table=f"accounts_{self.seed}")

    # -- contenders ----------------------------------------------------------------------

    def raw(self, count: int) -> dict[str, float]:
        from consumer.differ import record_for_event  # noqa: PLC0415

        records = [r for r in map(record_for_event, self._stream(count)) if r is not None]
        # Exactly the requests the store sends for these records, bound by the store's own
        # code before the clock starts; only sending them is timed, by the store's own
        # sending loop (its in-flight window, one thread).
        bound = raw_requests(self.store, records)
        requests = [(records[0], statement, None) for statement in bound]
        meter = Meter(self.server)
        self.store._run(requests)
        measured = meter.stop(len(records))
        measured["requests_per_event"] = len(bound) / len(records)
        return measured

    def consumer(self, count: int, store: Any = None) -> dict[str, float]:
        return self.consume([event.to_json() for event in self._stream(count)], store)

    def consume(
        self, bodies: list[str], store: Any = None, decoder: Any = None
    ) -> dict[str, float]:
        """The consumer's worker on ``bodies`` (a preloaded source) into ``store`` (this
        keyspace's by default), metered from its start until every body is acknowledged."""
        from consumer.worker import Worker  # noqa: PLC0415

        count = len(bodies)
        source = PreloadedSource(bodies)
        worker = Worker(
            source,
            self.store if store is None else store,
            decoder=decoder,
            concurrency=POLLERS,
            batch_size=BATCH,
            wait_seconds=1,
            shutdown_timeout=30,
        )
        meter = Meter(self.server)
        worker.start()
        finished = source.done.wait(600)
        measured = meter.stop(count)
        worker.stop()
        worker.join(30)
        if not finished or source.problems:
            raise BenchError(
                f"the consumer did not finish cleanly: acked {source.acked}/{source.total}, "
                f"{source.problems} released or rejected"
            )
        return measured

    def ceiling(self, count: int) -> dict[str, float]:
        from consumer.sinks.memory import MemoryStore  # noqa: PLC0415

        return self.consumer(count, store=MemoryStore())

    def naive(self, count: int) -> dict[str, float]:
        from deepdiff import DeepDiff  # noqa: PLC0415

        from consumer.records import AuditRecord, FieldChange  # noqa: PLC0415
        from sqla_audit.events import ChangeEvent  # noqa: PLC0415

        bodies = [event.to_json() for event in self._stream(count)]
        meter = Meter(self.server)
        for body in bodies:
            event = ChangeEvent.from_json(body)
            before, after = event.before or {}, event.after or {}
            diff = DeepDiff(before, after, view="tree")
            columns: set[str] = set()
            for kind in diff:
                for item in diff[kind]:
                    path = item.path(output_format="list")
                    # An empty side is reported as one change of the whole row.
                    columns.update([str(path[0])] if path else {*before, *after})
            changes = {
                name: FieldChange(before.get(name), after.get(name)) for name in sorted(columns)
            }
            actor = event.actor
            record = AuditRecord(
                table=event.table,
                record_id=event.record_id,
                event_id=event.event_id,
                event_time=event.committed_at,
                occurred_at=event.occurred_at,
                operation=event.operation,
                service=event.service,
                transaction_id=event.transaction_id,
                sequence=event.sequence,
                changes=changes,
                before=event.before,
                after=event.after,
                actor_id=None if actor is None else actor.id,
                actor_attributes={} if actor is None else actor.attributes,
                request_id=event.request_id,
                metadata=event.metadata,
            )
            for statement, params in self.store._statements_for(record):
                self.session.execute(statement, params, timeout=30)
        return meter.stop(count)


def measure(scale: float = 1.0, rounds: int = ROUNDS) -> dict[str, Any]:
    started = time.perf_counter()
    bench = Bench(unique_name("sqla_audit_bench"))
    names = ("raw", "consumer", "naive", "ceiling")

    def run(name: str, turn: int) -> dict[str, float]:
        count = max(50, round(SIZES[name] * scale))
        measured: dict[str, float] = getattr(bench, name)(count)
        progress(
            f"P2 round {turn + 1}: {name} {measured['rate']:,.0f} events/s "
            f"({count} events, {measured['cpu_per_event'] * 1e6:,.0f} µs CPU/event, "
            f"machine {measured['machine_busy']:.0%} busy)"
        )
        return measured

    try:
        # Warm-up: prepared statements, connection pools, code paths.
        bench.raw(200)
        bench.consumer(200)
        bench.naive(20)
        bench.ceiling(200)
        runs = interleaved(names, rounds, run)
        scaling = measure_scaling(bench.keyspace, bench.server, scale=scale)
    finally:
        bench.close()

    def series(key: str) -> dict[str, list[float]]:
        return {name: [measured[key] for measured in runs[name]] for name in names}

    rates, cpu, busy, server = (
        series(key) for key in ("rate", "cpu_per_event", "machine_busy", "server_cpu_per_event")
    )
    views = measure_views(scale=scale)
    return {
        "scale": scale,
        "views": views,
        "scaling": scaling,
        "server_cpu_per_event": {
            name: statistics.median(values) for name, values in server.items()
        },
        "rates": rates,
        "stats": {name: summarize(values) for name, values in rates.items()},
        "cpu_per_event": {name: statistics.median(values) for name, values in cpu.items()},
        "machine_busy": {name: statistics.median(values) for name, values in busy.items()},
        "sizes": {name: max(50, round(SIZES[name] * scale)) for name in SIZES},
        "settings": {"max_in_flight": MAX_IN_FLIGHT, "pollers": POLLERS, "batch": BATCH},
        "elapsed_s": time.perf_counter() - started,
    }


def _cpus(result: dict[str, Any]) -> int:
    """The machine's CPU count as recorded with the result."""
    try:
        return int(result.get("machine", {}).get("cpus (nproc)", 0)) or 1
    except ValueError:
        return 1


def render(result: dict[str, Any]) -> str:
    stats = result["stats"]
    raw = stats["raw"]["median"]
    naive = stats["naive"]["median"]
    labels = {
        "raw": "raw limit (the store's requests bound before the clock, its sending loop)",
        "consumer": "consumer (Worker + CassandraStore, 4 pollers x 10)",
        "naive": "naive (DeepDiff + one synchronous execute per row)",
        "ceiling": "for information: consumer into the in-memory store (no Cassandra)",
    }
    rows = []
    for name in ("raw", "consumer", "naive", "ceiling"):
        s = stats[name]
        rows.append(
            [
                labels[name],
                str(result["sizes"][name]),
                fmt_rate(s["median"]),
                f"{fmt_rate(s['min'])} - {fmt_rate(s['max'])}",
                fmt_ratio(ratio(s["median"], raw)),
                fmt_ratio(ratio(s["median"], naive)),
                fmt_seconds(result.get("cpu_per_event", {}).get(name)),
                fmt_seconds(result.get("server_cpu_per_event", {}).get(name)),
                f"{result.get('machine_busy', {}).get(name, 0):.0%}",
            ]
        )
    table = markdown_table(
        [
            "contender",
            "events/round",
            "median rate",
            "range",
            "vs raw limit",
            "vs naive",
            "client CPU per event",
            "Cassandra CPU per event",
            "machine CPU busy",
        ],
        rows,
    )
    rates = result["rates"]
    of_limit = paired(rates["consumer"], rates["raw"])
    over_naive = paired(rates["consumer"], rates["naive"])
    lines = [
        table,
        "",
        "Per-round ratios (each round runs every contender once, back to back; the median of "
        "the rounds is less sensitive to Cassandra's slow phases than the ratio of medians):",
        "",
        f"- consumer / raw limit: {of_limit:.0%} (target ≥ {TARGET_OF_LIMIT:.0%}) — "
        + ("met" if of_limit >= TARGET_OF_LIMIT else "MISSED"),
        f"- consumer / naive: {over_naive:.1f}x (target ≥ {TARGET_OVER_NAIVE:.0f}x) — "
        + ("met" if over_naive >= TARGET_OVER_NAIVE else "MISSED"),
        f"- raw limit / naive: {paired(rates['raw'], rates['naive']):.1f}x — the most any "
        "consumer could reach against the naive one on this Cassandra",
    ]
    if "scaling" in result:
        lines += [
            "",
            "### P2 scaling — two consumer processes on one queue",
            "",
            render_scaling(result["scaling"], _cpus(result)),
        ]
    if "views" in result:
        views = {
            "finished_at": result.get("finished_at"),
            "machine": result.get("machine", {}),
            **result["views"],
        }
        lines += ["", "### P2 views — the write cost of each view", "", render_views(views)]
    return "\n".join(lines)


def main(scale: float = 1.0) -> dict[str, Any]:
    return run_part("p2", "P2 — consumer throughput", lambda: measure(scale=scale), render)


def _cli(argv: Sequence[str]) -> int:
    """``python -m bench.p2_consumer views [--scale S]``: the views measurement alone."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m bench.p2_consumer")
    parser.add_argument("what", choices=("views",))
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    load_services_env()
    main_views(scale=args.scale)
    return 0


__all__ = [
    "PreloadedSource",
    "main",
    "main_views",
    "measure",
    "measure_views",
    "render",
    "render_views",
]


if __name__ == "__main__":
    raise SystemExit(_cli(sys.argv[1:]))
