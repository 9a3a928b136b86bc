"""P5: delivery throughput of one producer process, with real-world network latency.

One ``SNSPublisher`` (direct mode) publishes N synthetic change events (about 1 KiB each,
``bench.eventgen``) and the time until ``flush()`` returns gives events delivered per second.
Between the publisher and a private moto server sits a loopback TCP proxy that holds every
HTTP request for a fixed delay before passing it on (0 ms and 20 ms, a typical SNS round trip
from an AWS region's own network), so the figure shows what the publisher does when each
``PublishBatch`` waits on the network rather than on the CPU.

The topic has **no subscription**: moto itself is slow once a queue is subscribed (it
delivers every message to the queue inside the ``PublishBatch`` call, tens of milliseconds
per call, slower as the queue fills), which would measure moto instead of the publisher. The
rows "moto with a subscribed queue" show that figure beside it, for reference. Rows with
``max_concurrency=1`` are the publisher sending one ``PublishBatch`` at a time, as before
concurrent sending (same code, same run).

Client: ``lean`` is the publisher's default ``PublishBatch`` path (request built, signed with
botocore's SigV4 and parsed by ``sqla_audit.publishers.sns_http``), ``boto3`` the boto3 client
(``transport="boto3"``), side by side in the same run. "Client CPU per event" is the CPU time
of the measuring process (the publisher's threads; responder and proxy are other processes)
divided by the events: on a busy machine it is steadier than events/s.

FIFO: a ``.fifo`` topic, events spread over 5,000 records (``MessageGroupId`` =
table:record id), at most one batch in flight per message group.

Outage: a steady load (500 events/s) runs while the proxy refuses connections for
5 s, with a spool; reported are the time from the endpoint's return to the first successful
send, and the rate at which the backlog drained (events delivered per second from the return
until the spool was empty, the continued load included) against the live rate.
"""

from __future__ import annotations

import inspect
import tempfile
import threading
import time
from typing import Any

from bench.common import (
    BenchError,
    PrivateMoto,
    fmt_seconds,
    markdown_table,
    progress,
    run_part,
    unique_name,
)
from bench.eventgen import event_stream
from bench.loopback import ProxyProcess
from bench.sns_responder import Responder

EVENTS = 10_000
#: Events of the moto rows (references: moto, not the publisher, is the bottleneck there).
MOTO_EVENTS = 2_000
QUEUE_EVENTS = 1_000
DELAYS_MS = (0.0, 20.0)
DRAIN_WAIT_S = 60.0
OUTAGE_LOAD = 500.0
RESPONDER = "loopback responder"
OUTAGE_S = 5.0


def _publisher(
    topic_arn: str, endpoint: str, concurrency: int | None, transport: str = "lean", **kwargs: Any
) -> Any:
    from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415

    if "transport" in inspect.signature(SNSPublisher).parameters:
        kwargs["transport"] = transport
    elif transport != "boto3":
        raise BenchError("this SNSPublisher has no lean transport")
    if concurrency is not None:
        if "max_concurrency" in inspect.signature(SNSPublisher).parameters:
            kwargs["max_concurrency"] = concurrency
        elif concurrency != 1:
            raise BenchError("this SNSPublisher has no max_concurrency option")
    return SNSPublisher(topic_arn, endpoint_url=endpoint, register_atexit=False, **kwargs)


def _throughput(
    topic_arn: str, endpoint: str, concurrency: int | None, events: int, transport: str = "lean"
) -> tuple[float, float]:
    """Events delivered per second (publish ``events`` at once, time until flush()) and the
    CPU time of this process per event meanwhile (the publisher's threads: the responder
    and the proxy run in other processes)."""
    stream = event_stream(events + 20, seed=5)
    publisher = _publisher(
        topic_arn, endpoint, concurrency, transport, max_queue_events=events + 100
    )
    try:
        publisher.publish(stream[:20])  # warm up: connections, credentials
        if not publisher.flush(60):
            raise BenchError("warm-up did not flush")
        before = publisher.stats().delivered
        started = time.perf_counter()
        cpu_started = time.process_time()
        for i in range(20, len(stream), 100):
            publisher.publish(stream[i : i + 100])
        if not publisher.flush(600):
            raise BenchError(f"{events} events not flushed within 600 s")
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        stats = publisher.stats()
    finally:
        publisher.close(5)
    delivered = stats.delivered - before
    if delivered != events or stats.dropped or stats.rejected:
        raise BenchError(f"delivered {delivered} of {events} ({stats})")
    return events / elapsed, cpu / events


def _outage(
    topic_arn: str,
    endpoint: tuple[str, int],
    concurrency: int | None,
    rate: float,
    down: float,
    transport: str = "lean",
) -> dict[str, float]:
    """Steady load, ``down`` seconds of refused connections; return-to-first-send and drain."""
    with ProxyProcess(endpoint, 0.02) as proxy:
        return _outage_through(proxy, topic_arn, concurrency, rate, down, transport)


def _outage_through(
    proxy: ProxyProcess,
    topic_arn: str,
    concurrency: int | None,
    rate: float,
    down: float,
    transport: str = "lean",
) -> dict[str, float]:
    stream = event_stream(int(rate * (down + 60)) + 100, seed=9)
    with tempfile.TemporaryDirectory() as spool:
        publisher = _publisher(topic_arn, proxy.url, concurrency, transport, spool=spool)
        stop = threading.Event()

        def load() -> None:
            position = 0
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            next_at = time.monotonic()
            while not stop.is_set() and position < len(stream):
                publisher.publish(stream[position : position + per_tick])
                position += per_tick
                next_at += tick
                time.sleep(max(0.0, next_at - time.monotonic()))

        loader = threading.Thread(target=load, daemon=True)
        try:
            loader.start()
            time.sleep(2)
            proxy.stop()
            time.sleep(down)
            backlog = publisher.stats().spooled
            delivered_at_return = publisher.stats().delivered
            returned = time.perf_counter()
            proxy.start()
            first: float | None = None
            drained: float | None = None
            delivered = 0
            deadline = returned + DRAIN_WAIT_S
            while time.perf_counter() < deadline:
                stats = publisher.stats()
                now = time.perf_counter()
                if first is None and stats.delivered > delivered_at_return:
                    first = now - returned
                if first is not None and stats.spool_bytes == 0 and stats.queued < rate:
                    drained = now - returned
                    delivered = stats.delivered - delivered_at_return
                    break
                time.sleep(0.01)
            stop.set()
            loader.join(5)
        finally:
            stop.set()
            publisher.close(10)
    return {
        "load_per_s": rate,
        "down_s": down,
        "spooled_during_outage": backlog,
        "first_send_s": first,
        "drain_s": drained,
        "drain_rate_per_s": delivered / drained if drained else None,
        "drain_rate_from_first_send_per_s": (
            delivered / (drained - first)
            if drained and first is not None and drained > first
            else None
        ),
    }


def measure(scale: float = 1.0) -> dict[str, Any]:
    started = time.perf_counter()
    events = max(500, int(EVENTS * scale))
    sequential_events = max(200, events // 4)
    queue_events = max(200, int(QUEUE_EVENTS * scale))
    moto_events = max(200, int(MOTO_EVENTS * scale))
    rows: list[dict[str, Any]] = []
    outage: list[dict[str, Any]] = []
    from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415

    lean = "transport" in inspect.signature(SNSPublisher).parameters
    # (transport, max_concurrency) per row: the boto3 client beside the lean path, in the
    # same run; max_concurrency None is the default (16).
    both: list[tuple[str, int | None]] = (
        [("boto3", None), ("lean", None)] if lean else [("boto3", None)]
    )
    newest: list[tuple[str, int | None]] = [both[-1]]
    with PrivateMoto() as moto, Responder() as responder:
        sns = moto.client("sns")
        standard = sns.create_topic(Name=unique_name("sqla_audit_p5"))["TopicArn"]
        fifo = sns.create_topic(
            Name=unique_name("sqla_audit_p5") + ".fifo",
            Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
        )["TopicArn"]
        subscribed = sns.create_topic(Name=unique_name("sqla_audit_p5q"))["TopicArn"]
        sqs = moto.client("sqs")
        queue_url = sqs.create_queue(QueueName=unique_name("sqla_audit_p5q"))["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=subscribed, Protocol="sqs", Endpoint=queue_arn)
        host, port = moto.endpoint.removeprefix("http://").split(":")
        at_moto = (host, int(port))
        at_responder = ("127.0.0.1", responder.port)
        topic_arn = "arn:aws:sns:us-east-1:123456789012:sqla_audit_p5"
        cases: list[tuple[str, tuple[str, int], str, float, int, list[tuple[str, int | None]]]]
        cases = [
            (f"{RESPONDER}, standard", at_responder, topic_arn, 0.0, events, both),
            (
                f"{RESPONDER}, standard",
                at_responder,
                topic_arn,
                20.0,
                events,
                [("boto3", 1), *both],
            ),
            (
                f"{RESPONDER}, FIFO, 5,000 groups",
                at_responder,
                topic_arn + ".fifo",
                20.0,
                events,
                both,
            ),
            ("moto, standard, no subscription", at_moto, standard, 20.0, moto_events, both),
            (
                "moto, FIFO, no subscription, 5,000 groups",
                at_moto,
                fifo,
                20.0,
                moto_events,
                newest,
            ),
            (
                "moto, standard, subscribed SQS queue",
                at_moto,
                subscribed,
                0.0,
                queue_events,
                newest,
            ),
        ]
        for label, upstream, topic, delay, events_in_case, variants in cases:
            for transport, level in variants:
                name = "default" if level is None else str(level)
                count = min(events_in_case, sequential_events) if level == 1 else events_in_case
                row = {
                    "topic": label,
                    "delay_ms": delay,
                    "transport": transport,
                    "max_concurrency": name,
                    "events": count,
                }
                with ProxyProcess(upstream, delay / 1000) as proxy:
                    progress(
                        f"P5 {label}, +{delay:.0f} ms, {transport}, max_concurrency {name}: "
                        f"{count} events"
                    )
                    try:
                        rate, cpu = _throughput(topic, proxy.url, level, count, transport)
                    except BenchError as exc:
                        if upstream != at_moto:
                            raise
                        # moto is the reference, not the measure: record its failure.
                        progress(f"  failed: {exc}")
                        rows.append(row | {"failed": str(exc)[:200]})
                        continue
                    progress(f"  {rate:,.0f} events/s, {cpu * 1e6:,.0f} µs CPU per event")
                rows.append(row | {"events_per_s": rate, "cpu_us_per_event": cpu * 1e6})
        # The outage with the default settings only: one call in flight delivers a few
        # hundred events/s at +20 ms, below the load, so its spool would never drain.
        for transport, _ in both:
            progress(f"P5 outage, {transport}, max_concurrency default")
            try:
                result = _outage(
                    topic_arn, at_responder, None, OUTAGE_LOAD, OUTAGE_S, transport=transport
                )
            except BenchError as exc:  # recorded, so the throughput rows are kept
                progress(f"  failed: {exc}")
                outage.append({"transport": transport, "failed": str(exc)[:200]})
                continue
            progress(f"  {result}")
            outage.append(
                {"max_concurrency": "default", "transport": transport, "endpoint": RESPONDER}
                | result
            )
    return {"rows": rows, "outage": outage, "elapsed_s": time.perf_counter() - started}


def render(result: dict[str, Any]) -> str:
    table = markdown_table(
        [
            "endpoint, topic",
            "added latency",
            "client",
            "max_concurrency",
            "events",
            "events/s",
            "client CPU per event",
        ],
        [
            [
                r["topic"],
                f"{r['delay_ms']:.0f} ms",
                r.get("transport", "boto3"),
                r["max_concurrency"],
                f"{r['events']:,}",
                f"{r['events_per_s']:,.0f}" if "events_per_s" in r else "failed (timeouts)",
                f"{r['cpu_us_per_event']:,.0f} µs" if "cpu_us_per_event" in r else "-",
            ]
            for r in result["rows"]
        ],
    )
    live = {
        r.get("transport", "boto3"): r["events_per_s"]
        for r in result["rows"]
        if r["topic"] == f"{RESPONDER}, standard"
        and r["delay_ms"] == 20.0
        and r["max_concurrency"] == "default"
    }
    outage = markdown_table(
        [
            "client",
            "load",
            "outage",
            "spooled",
            "return -> first send",
            "return -> spool empty",
            "drain rate (load included)",
            "same, from the first send",
            "live rate (above)",
        ],
        [
            [
                o.get("transport", "boto3"),
                f"{o['load_per_s']:,.0f} events/s",
                f"{o['down_s']:.0f} s",
                f"{o['spooled_during_outage']:,}",
                fmt_seconds(o["first_send_s"]),
                fmt_seconds(o["drain_s"]) if o["drain_s"] else f"not within {DRAIN_WAIT_S:.0f} s",
                f"{o['drain_rate_per_s']:,.0f} events/s" if o["drain_rate_per_s"] else "-",
                f"{o['drain_rate_from_first_send_per_s']:,.0f} events/s"
                if o.get("drain_rate_from_first_send_per_s")
                else "-",
                f"{live[o.get('transport', 'boto3')]:,.0f} events/s"
                if o.get("transport", "boto3") in live
                else "-",
            ]
            for o in result.get("outage", [])
            if "failed" not in o
        ]
        + [
            [o.get("transport", "boto3"), f"failed: {o['failed']}", *["-"] * 7]
            for o in result.get("outage", [])
            if "failed" in o
        ],
    )
    return (
        table + "\n\nOne producer process; `flush()` after publishing all events. Outage with a "
        "spool, against the loopback responder, +20 ms per request, under a steady load:\n\n"
        + outage
    )


def main(scale: float = 1.0) -> dict[str, Any]:
    return run_part(
        "p5", "P5 — delivery throughput with network latency", lambda: measure(scale=scale), render
    )


if __name__ == "__main__":
    import argparse

    from bench.common import load_services_env

    parser = argparse.ArgumentParser(prog="python -m bench.p5_delivery", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    arguments = parser.parse_args()
    load_services_env()
    main(scale=arguments.scale)


__all__ = ["main", "measure", "render"]
