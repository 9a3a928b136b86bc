"""Memory: the producer's peak RSS with 100,000 events pending while SNS is down.

Each variant runs in a fresh process (peak RSS is per process) that commits 100 transactions
of 1,000 inserted rows -- 100,000 change events -- into a SQLite file, while the SNS
endpoint is a loopback port nobody listens on (connection refused: SNS is down for the
whole run). Variants:

* ``none`` -- the same application without audit: the baseline;
* ``spool`` -- ``SNSPublisher`` as documented for production: default in-memory queue
  (10,000 events) and a local spool directory; past the queue, events go to disk;
* ``queue`` -- ``SNSPublisher`` without a spool and with ``max_queue_events=100_000``:
  every pending event stays in memory, which shows the cost per queued event.

Reported: peak RSS (``VmHWM``), its excess over the baseline, how many events were pending
(in memory and in the spool) at the end, and the commit times during the outage -- the
application thread writes to the spool when the queue is full, so an outage can show up
there even though ``publish()`` never waits for the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_ROOT,
    fmt_bytes,
    fmt_seconds,
    markdown_table,
    progress,
    report_part,
)
from bench.loopback import free_port

TRANSACTIONS = 100
ROWS = 1000
VARIANTS = ("none", "spool", "queue")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(variant: str, transactions: int, rows: int, workdir: Path) -> dict[str, Any]:
    """Runs inside the measured process; returns what it saw."""
    import sqlalchemy as sa  # noqa: PLC0415
    from sqlalchemy.orm import sessionmaker  # noqa: PLC0415

    from bench.models import build_models, new_object  # noqa: PLC0415

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    engine = sa.create_engine(f"sqlite:///{workdir / 'app.db'}")
    models = build_models("bench_item_memory")
    models.base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    publisher: Any = None
    publish_times: list[float] = []
    errors = {"count": 0}

    def on_error(exc: BaseException, events: Any) -> None:
        errors["count"] += 1

    if variant != "none":
        import logging  # noqa: PLC0415

        from sqla_audit import install_audit  # noqa: PLC0415
        from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415

        logging.disable(logging.CRITICAL)  # the outage is logged on every retry
        down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        topic = "arn:aws:sns:us-east-1:123456789012:sqla-audit-bench-down"
        if variant == "spool":
            publisher = SNSPublisher(
                topic,
                endpoint_url=down,
                spool=workdir / "spool",
                on_error=on_error,
                register_atexit=False,
            )
        else:
            publisher = SNSPublisher(
                topic,
                endpoint_url=down,
                max_queue_events=transactions * rows,
                on_error=on_error,
                register_atexit=False,
            )
        # The capture hands a transaction over through publish_deferred when the publisher
        # has it (the envelopes are built on its thread), else through publish: time both.
        original_publish = publisher.publish
        original_deferred = publisher.publish_deferred

        def timed_publish(events: Any) -> None:
            start = time.perf_counter()
            original_publish(events)
            publish_times.append(time.perf_counter() - start)

        def timed_deferred(count: int, build: Any) -> None:
            start = time.perf_counter()
            original_deferred(count, build)
            publish_times.append(time.perf_counter() - start)

        publisher.publish = timed_publish
        publisher.publish_deferred = timed_deferred
        install_audit(maker, publisher=publisher, service="bench", models=[models.item])
    rss_before = _status_kib("VmRSS")
    commit_times = []
    for t in range(transactions):
        start = time.perf_counter()
        with maker() as session:
            session.add_all([new_object(models, t * rows + k) for k in range(rows)])
            session.commit()
        commit_times.append(time.perf_counter() - start)
    answer: dict[str, Any] = {
        "variant": variant,
        "events": transactions * rows,
        "rss_before_kib": rss_before,
        "rss_end_kib": _status_kib("VmRSS"),
        "peak_kib": _status_kib("VmHWM"),
        "commit_median_s": statistics.median(commit_times),
        "commit_max_s": max(commit_times),
        "commit_total_s": sum(commit_times),
    }
    if publisher is not None:
        stats = publisher.stats()
        answer.update(
            {
                "queued": stats.queued,
                "spooled": stats.spooled,
                "spool_bytes": stats.spool_bytes,
                "dropped": stats.dropped,
                "delivered": stats.delivered,
                "error_reports": errors["count"],
                "publish_median_s": statistics.median(publish_times),
                "publish_max_s": max(publish_times),
            }
        )
    return answer


def _run_variant(variant: str, transactions: int, rows: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sqla_audit_bench_mem_"))
    try:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.memory",
                "--child",
                variant,
                "--transactions",
                str(transactions),
                "--rows",
                str(rows),
                "--workdir",
                str(workdir),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"memory child {variant} failed:\n{completed.stderr[-2000:]}")
        answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        return answer
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(scale: float = 1.0) -> dict[str, Any]:
    started = time.perf_counter()
    # The event count is the point of this part; scale only shrinks it for a quick look.
    transactions = max(10, round(TRANSACTIONS * min(scale, 1.0)))
    runs = {}
    for variant in VARIANTS:
        progress(f"memory: {variant}")
        runs[variant] = _run_variant(variant, transactions, ROWS)
    return {
        "scale": scale,
        "events": transactions * ROWS,
        "runs": runs,
        "elapsed_s": time.perf_counter() - started,
    }


def render(result: dict[str, Any]) -> str:
    runs = result["runs"]
    base = runs["none"]
    base_growth = (base["peak_kib"] - base["rss_before_kib"]) * 1024
    labels = {
        "none": "no audit (baseline)",
        "spool": "SNSPublisher, default queue (10,000) + spool",
        "queue": "SNSPublisher, no spool, queue of 100,000",
    }
    memory_rows = []
    time_rows = []
    for variant in VARIANTS:
        run = runs[variant]
        peak = run["peak_kib"] * 1024
        audited = variant != "none"
        time_rows.append(
            [
                labels[variant],
                fmt_seconds(run["commit_median_s"]),
                fmt_seconds(run["commit_max_s"]),
                fmt_seconds(run.get("publish_median_s")) if audited else "-",
                fmt_seconds(run.get("publish_max_s")) if audited else "-",
            ]
        )
        if not audited:
            memory_rows.append([labels[variant], fmt_bytes(peak), *["-"] * 6])
            continue
        libraries = (run["rss_before_kib"] - base["rss_before_kib"]) * 1024
        growth = (run["peak_kib"] - run["rss_before_kib"]) * 1024 - base_growth
        in_memory = int(run.get("queued") or 0)
        memory_rows.append(
            [
                labels[variant],
                fmt_bytes(peak),
                fmt_bytes(peak - base["peak_kib"] * 1024),
                fmt_bytes(libraries),
                fmt_bytes(growth),
                f"{in_memory:,}",
                # Only meaningful when the events are what stays in memory.
                fmt_bytes(growth / in_memory) if variant == "queue" and in_memory else "-",
                f"{run.get('spooled', 0):,} ({fmt_bytes(run.get('spool_bytes'))})",
            ]
        )
    memory_table = markdown_table(
        [
            "producer",
            "peak RSS",
            "over baseline",
            "of which: libraries at start",
            "of which: growth during the run",
            "events pending in memory",
            "growth per pending event",
            "events spooled (on disk)",
        ],
        memory_rows,
    )
    time_table = markdown_table(
        ["producer", "commit p50", "commit max", "publish() p50", "publish() max"], time_rows
    )
    dropped = {v: runs[v].get("dropped", 0) for v in VARIANTS if v != "none"}
    return (
        memory_table
        + f"\n\n{result['events']:,} events from 1,000-row transactions; SNS unreachable "
        "throughout. Events dropped (no spool, retry budget spent): "
        + ", ".join(f"{labels[v]}: {n:,}" for v, n in dropped.items())
        + '. "Libraries" is what importing and building the publisher (boto3) adds before '
        "any event exists.\n\nThe same runs, seen from the application (1,000-row "
        "transactions; `publish()` is called inside `commit()`):\n\n" + time_table
    )


def main(scale: float = 1.0) -> dict[str, Any]:
    return report_part(
        "memory", "Memory — 100,000 events pending while SNS is down", measure(scale=scale), render
    )


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=VARIANTS, required=True)
    parser.add_argument("--transactions", type=int, default=TRANSACTIONS)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    answer = child(args.child, args.transactions, args.rows, args.workdir)
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    os._exit(0)  # do not wait for the publisher's thread to give up on the dead endpoint


if __name__ == "__main__":
    raise SystemExit(_child_main())
