"""`sqla-audit loadgen` through the real pipeline: SNS -> SQS -> `sqla-audit consume` -> store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqs_consumer_support import consumer_env, consumer_process, stop_gracefully

from consumer.sinks.sqlite import SQLiteStore


def test_loadgen_drives_the_pipeline_and_every_probe_lands(
    sns_to_sqs: Any, aws_endpoint: str, tmp_path: Path
) -> None:
    """60 events at 20/s through moto and a consumer process: all stored once, every probe
    landed, the JSON summary says the pipeline kept up (exit 0)."""
    topic_arn, queue_url = sns_to_sqs()
    database = tmp_path / "audit.db"
    env = consumer_env(
        aws_endpoint,
        queue_url,
        "127.0.0.1:9",  # never contacted: the store is SQLite
        "unused",
        SQLA_AUDIT_STORE="sqlite",
        SQLA_AUDIT_STORE_URL=str(database),
    )
    with consumer_process(env, tmp_path / "consume.log") as consumer:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "consumer.cli",
                "loadgen",
                "--rate",
                "20",
                "--duration",
                "3",
                "--probe-every",
                "2",
                "--report-every",
                "1",
                "--drain-timeout",
                "90",
                "--topic-arn",
                topic_arn,
                "--queue-url",
                queue_url,
                "--store",
                "sqlite",
                "--store-url",
                str(database),
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert stop_gracefully(consumer) == 0
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["sent"] == 60
    assert summary["probes"] == 6
    assert summary["landed"] == 6
    assert summary["kept_up"] is True
    assert summary["max_queue_depth"] is not None
    assert "probes landed" in run.stderr  # progress lines
    store = SQLiteStore.open_read_only(database)
    try:
        records = [
            record
            for number in range(60)
            for record in store.history("loadgen", "loadgen_items", str(number)).items
        ]
    finally:
        store.close()
    assert len(records) == 60
    assert len({record.event_id for record in records}) == 60
