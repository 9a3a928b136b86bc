"""Memory stays bounded while 100,000 events spill to the spool during an SNS outage.

The producer runs in a subprocess so its resident set size is its own: it publishes
100,000 events (10 per transaction) to a publisher whose SNS endpoint refuses connections,
and reports its RSS before publishing and its peak RSS (``VmHWM``) after. The in-memory
queue is capped at ``max_queue_events`` (soft) and twice that (hard) counting the events on
their way to disk; everything beyond must be on disk, so the peak growth stays far below
what 100,000 events would take in memory. The longest ``publish()`` is printed, not
asserted (timings belong to the benchmarks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
EVENTS = 100_000
#: Allowed RSS growth: the capped queue (up to the hard cap, twice the soft one), one spool
#: batch, interpreter noise. 100,000 events held in memory would take several hundred MiB.
RSS_GROWTH_LIMIT_MIB = 64

PRODUCER = textwrap.dedent(
    """
    import datetime as dt, json, socket, sys, time, uuid
    from sqla_audit.events import ChangeEvent, Operation, new_event_id
    from sqla_audit.publishers.sns import SNSPublisher, build_sns_client
    from sqla_audit.publishers.spool import EventSpool
    from sqla_audit.retry import RetryPolicy

    def status(field):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise LookupError(field)

    spool_dir, total, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]
    probe.close()  # nothing listens there: every call is refused
    client = build_sns_client(
        region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1
    )
    publisher = SNSPublisher(
        "arn:aws:sns:us-east-1:123456789012:audit",
        client=client,
        spool=EventSpool(spool_dir),
        max_queue_events=cap,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05),
        outage_retry=RetryPolicy(max_attempts=10**9, base_delay=0.2, max_delay=1.0),
        register_atexit=False,
    )
    now = dt.datetime.now(dt.UTC)
    def event(n, transaction_id, sequence):
        return ChangeEvent(
            event_id=new_event_id(), occurred_at=now, committed_at=now, service="load",
            table="public.orders", record_id=str(n), primary_key={"id": n},
            operation=Operation.UPDATE,
            before={"id": n, "status": "new", "note": "x" * 200},
            after={"id": n, "status": "paid", "note": "x" * 200},
            changed_columns=["status"], transaction_id=transaction_id, sequence=sequence,
        )
    # warm up the code paths once, then take the baseline
    publisher.publish([event(-1, uuid.uuid4(), 0)])
    time.sleep(0.5)
    baseline = status("VmRSS")
    started = time.monotonic()
    longest = 0.0
    for start in range(0, total, 10):
        transaction_id = uuid.uuid4()
        batch = [event(n, transaction_id, n - start) for n in range(start, start + 10)]
        before = time.perf_counter()
        publisher.publish(batch)
        longest = max(longest, time.perf_counter() - before)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 30
    while publisher.stats().queued and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = publisher.stats()
    print(json.dumps({
        "baseline_rss": baseline, "peak_rss": status("VmHWM"), "publish_seconds": elapsed,
        "longest_publish": longest,
        "accepted": stats.accepted, "spooled": stats.spooled, "dropped": stats.dropped,
        "queued": stats.queued, "spool_bytes": stats.spool_bytes,
    }))
    publisher.close(timeout=0.5)
    """
)


@pytest.mark.parametrize("queue_cap", [2_000, 10_000])
def test_spilling_100k_events_keeps_memory_bounded(tmp_path: Path, queue_cap: int) -> None:
    """100,000 events during an outage end up on disk and peak RSS grows by < 64 MiB."""
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_PROFILE", None)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "spool"), str(EVENTS), str(queue_cap)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    growth_mib = (report["peak_rss"] - report["baseline_rss"]) / 2**20
    print(
        f"\n100,000 spilled events, max_queue_events={queue_cap:,}: "
        f"RSS {report['baseline_rss'] / 2**20:.1f} MiB before, "
        f"peak {report['peak_rss'] / 2**20:.1f} MiB (+{growth_mib:.1f} MiB), "
        f"spool {report['spool_bytes'] / 2**20:.1f} MiB, "
        f"publish loop {report['publish_seconds']:.1f} s, "
        f"longest publish() {report['longest_publish'] * 1000:.2f} ms"
    )
    assert report["accepted"] == EVENTS + 1
    assert report["dropped"] == 0
    assert report["spooled"] == EVENTS + 1
    assert report["queued"] == 0
    assert growth_mib < RSS_GROWTH_LIMIT_MIB
