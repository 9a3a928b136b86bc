"""P5 relay: events per second one relay process moves from the outbox to SNS, with latency.

An outbox table on PostgreSQL is filled with N synthetic change events (``bench.eventgen``,
about 1.4 KB each), either as one-event rows (what one-row transactions write) or as rows of
100 events (layout 2: what 100-row transactions write), and one :class:`OutboxRelay`
drains it (``drain()``, the loop of ``sqla-audit relay --once``); the time until the outbox
is empty gives events relayed per second. Between the relay and the endpoint sits the
latency proxy of P5 (its own process), adding 0 or 20 ms to every request, in front of the
minimal loopback ``PublishBatch`` responder (its own process), so the relay is the only
bottleneck.

Configurations, side by side in one run: ``one pass at a time`` is the relay as it was --
one ``PublishBatch`` in flight (``max_concurrency=1``, the sender's default before the relay
set one), 100 rows per pass, the next pass selected only after the previous one committed;
``default`` is ``sqla-audit relay``'s defaults now (16 calls in flight, up to 500 rows and
about 1,000 events per pass, passes overlapped: the next one selected, the previous one
committed, while one is sent); ``100 rows per pass`` the same with ``--batch-size 100``.
``no SNS`` replaces the sender by one that accepts everything at once: the relay's own
database and parsing work, its ceiling. ``relay CPU per event`` is the relay process's CPU
time (all its threads) over the events it relayed, a figure a busy machine inflates less than
the wall clock; ``CPU ceiling`` is what one idle core would allow at that cost.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bench.common import (
    BenchError,
    fmt_seconds,
    markdown_table,
    postgres_url,
    progress,
    run_part,
)
from bench.loopback import ProxyProcess
from bench.p1_commit import _create_pg_database, _drop_pg_database
from bench.sns_responder import Responder

TOPIC = "arn:aws:sns:us-east-1:123456789012:sqla_audit_p5_relay"
EVENTS = 10_000
#: events for the configuration that sends one batch at a time (slow at +20 ms)
SEQUENTIAL_EVENTS = 2_000
DELAYS_MS = (0.0, 20.0)
SHAPES = {"one event per row": 1, "100 events per row": 100}
CONFIGS: dict[str, dict[str, Any]] = {
    "one pass at a time": {"max_concurrency": 1, "batch_size": 100, "overlap": False},
    "default": {"max_concurrency": 16, "batch_size": 500, "overlap": None},
    "100 rows per pass": {"max_concurrency": 16, "batch_size": 100, "overlap": None},
}


class _AcceptAll:
    """A sender that takes every message at once: the relay's own cost, without SNS."""

    def send(self, messages: Sequence[Any], *, sleep: Any = None) -> Any:
        from sqla_audit.publishers.sns import SendOutcome  # noqa: PLC0415

        return SendOutcome(accepted=list(messages))


def _fill(engine: sa.Engine, table: sa.Table, events: int, per_row: int) -> None:
    from bench.eventgen import event_stream  # noqa: PLC0415
    from sqla_audit.outbox import OutboxWriter  # noqa: PLC0415

    stream = event_stream(events, seed=per_row)
    with engine.begin() as connection:
        connection.execute(table.delete())
        if per_row == 1:
            OutboxWriter(table, layout=1).write(connection, stream)
            return
        writer = OutboxWriter(table)
        for start in range(0, events, per_row):
            writer.write(connection, stream[start : start + per_row])


def _drain(
    engine: sa.Engine, table: sa.Table, sender: Any, config: dict[str, Any]
) -> tuple[float, float]:
    """Events per second, and CPU seconds of this process (every thread) per event."""
    from sqla_audit.outbox.relay import OutboxRelay  # noqa: PLC0415

    relay = OutboxRelay(
        engine,
        sender,
        table=table,
        batch_size=config["batch_size"],
        overlap=config["overlap"],
    )
    started, cpu = time.perf_counter(), time.process_time()
    result = relay.drain()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.deferred or result.parked:
        raise BenchError(f"the relay left events behind: {result}")
    return result.published / elapsed, cpu / max(1, result.published)


def measure(scale: float = 1.0) -> dict[str, Any]:
    from sqla_audit.outbox import outbox_table, outbox_tally  # noqa: PLC0415
    from sqla_audit.publishers.sns import SNSSender  # noqa: PLC0415

    started = time.perf_counter()
    base_url = postgres_url()
    name, url = _create_pg_database(base_url)
    engine = sa.create_engine(url)
    table = outbox_table(sa.MetaData(), name="bench_relay_outbox")
    table.create(engine)
    rows: list[dict[str, Any]] = []
    try:
        with Responder() as responder:
            upstream = ("127.0.0.1", responder.port)
            for shape, per_row in SHAPES.items():
                events = max(1000, int(EVENTS * scale))
                _fill(engine, table, events, per_row)
                rate, cpu = _drain(engine, table, _AcceptAll(), CONFIGS["default"])
                progress(f"P5 relay, {shape}, no SNS: {rate:,.0f} events/s")
                rows.append(
                    {"shape": shape, "config": "no SNS", "delay_ms": None, "events": events}
                    | {"events_per_s": rate, "cpu_s_per_event": cpu}
                )
                for delay in DELAYS_MS:
                    with ProxyProcess(upstream, delay / 1000) as proxy:
                        for config_name, config in CONFIGS.items():
                            count = events
                            if config["max_concurrency"] == 1:
                                count = max(500, int(SEQUENTIAL_EVENTS * scale))
                            _fill(engine, table, count, per_row)
                            sender = SNSSender(
                                TOPIC,
                                endpoint_url=proxy.url,
                                max_concurrency=config["max_concurrency"],
                            )
                            rate, cpu = _drain(engine, table, sender, config)
                            if outbox_tally(engine, table).pending:
                                raise BenchError("the outbox was not emptied")
                            progress(
                                f"P5 relay, {shape}, +{delay:.0f} ms, {config_name}: "
                                f"{count:,} events, {rate:,.0f} events/s"
                            )
                            rows.append(
                                {
                                    "shape": shape,
                                    "config": config_name,
                                    "delay_ms": delay,
                                    "events": count,
                                    "events_per_s": rate,
                                    "cpu_s_per_event": cpu,
                                }
                            )
    finally:
        engine.dispose()
        _drop_pg_database(base_url, name)
    return {"rows": rows, "elapsed_s": time.perf_counter() - started}


def render(result: dict[str, Any]) -> str:
    return markdown_table(
        [
            "rows in the outbox",
            "relay",
            "added latency",
            "events",
            "events/s",
            "relay CPU per event",
            "CPU ceiling (1 core)",
        ],
        [
            [
                r["shape"],
                r["config"],
                "-" if r["delay_ms"] is None else f"{r['delay_ms']:.0f} ms",
                f"{r['events']:,}",
                f"{r['events_per_s']:,.0f}",
                fmt_seconds(r.get("cpu_s_per_event")),
                f"{1 / r['cpu_s_per_event']:,.0f} events/s" if r.get("cpu_s_per_event") else "-",
            ]
            for r in result["rows"]
        ],
    )


def main(scale: float = 1.0) -> dict[str, Any]:
    return run_part(
        "p5_relay",
        "P5 relay — outbox to SNS with network latency",
        lambda: measure(scale=scale),
        render,
    )


if __name__ == "__main__":
    from bench.common import load_services_env

    parser = argparse.ArgumentParser(prog="python -m bench.p5_relay", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    load_services_env()
    main(scale=args.scale)


__all__ = ["main", "measure", "render"]
