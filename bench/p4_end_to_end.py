"""P4: end to end -- from the application's commit to the audit row in Cassandra.

The whole production path, each piece the real one:

application (PostgreSQL, ``install_audit`` + ``SNSPublisher``) -> SNS topic -> SQS queue
(raw message delivery) -> ``sqla-audit consume`` (a separate process: the real command,
4 pollers, long polling) -> Cassandra.

The application commits one-row transactions at a steady pace (20 per second by default:
latency, not throughput, is measured here) and notes the wall-clock time at which each
``commit()`` returned. The audit row's arrival is read back from Cassandra as the row's
``WRITETIME`` -- the microsecond timestamp the consumer's driver attached to the write when
it sent it (client-side timestamps, on by default in the driver). Latency = write time -
commit time, both from the same machine clock. It therefore excludes the write's own round
trip to Cassandra (about a millisecond here, see P2) and includes everything before it.

SNS and SQS are moto (a local emulator), whose own processing time is part of the figure:
these are absolute numbers from this machine and this emulator, not a prediction for AWS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from bench.common import (
    REPO_ROOT,
    BenchError,
    PrivateMoto,
    cassandra_contact,
    fmt_seconds,
    markdown_table,
    postgres_url,
    progress,
    run_part,
    summarize,
    unique_name,
)
from bench.models import build_models, row_values
from bench.p1_commit import _create_pg_database, _drop_pg_database

COMMITS = 300
RATE_PER_SECOND = 20.0


def _queue_for_topic(moto: PrivateMoto, topic_arn: str, name: str) -> str:
    sqs = moto.client("sqs")
    sns = moto.client("sns")
    url: str = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return url


def _start_consumer(moto: PrivateMoto, queue_url: str, keyspace: str) -> subprocess.Popen[bytes]:
    host, port = cassandra_contact()
    env = dict(os.environ)
    env.update(
        {
            "SQLA_AUDIT_QUEUE_URL": queue_url,
            "SQLA_AUDIT_AWS_ENDPOINT_URL": moto.endpoint,
            "SQLA_AUDIT_KEYSPACE": keyspace,
            "SQLA_AUDIT_CASSANDRA_HOSTS": host,
            "SQLA_AUDIT_CASSANDRA_PORT": str(port),
            "SQLA_AUDIT_METRICS_PORT": "0",
            "SQLA_AUDIT_CONCURRENCY": "4",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "--log-level", "WARNING", "consume"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def measure(scale: float = 1.0, shared_moto: bool = False) -> dict[str, Any]:
    from consumer.config import CassandraConfig, CassandraSchemaConfig  # noqa: PLC0415
    from consumer.sinks.cassandra import apply_schema, connect  # noqa: PLC0415
    from sqla_audit import install_audit, uninstall_audit  # noqa: PLC0415
    from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415

    started = time.perf_counter()
    commits = max(20, round(COMMITS * scale))
    base_pg = postgres_url()
    host, port = cassandra_contact()
    keyspace = unique_name("sqla_audit_bench")
    cassandra = CassandraConfig(
        hosts=(host,), port=port, schema=CassandraSchemaConfig(keyspace=keyspace)
    )
    apply_schema(cassandra)
    cluster = connect(cassandra)
    session = cluster.connect()
    pg_name, pg_url = _create_pg_database(base_pg)
    engine = sa.create_engine(pg_url)
    models = build_models("bench_item_e2e")
    models.base.metadata.create_all(engine)
    table_name = models.table.fullname
    consumer: subprocess.Popen[bytes] | None = None
    publisher: SNSPublisher | None = None
    maker = sessionmaker(engine)
    committed: dict[str, float] = {}
    latencies: dict[str, float] = {}
    try:
        with PrivateMoto(shared=shared_moto) as moto:
            topic_arn = moto.client("sns").create_topic(Name=unique_name("sqla_audit_bench"))[
                "TopicArn"
            ]
            queue_url = _queue_for_topic(moto, topic_arn, unique_name("sqla_audit_bench"))
            consumer = _start_consumer(moto, queue_url, keyspace)
            publisher = SNSPublisher(topic_arn, endpoint_url=moto.endpoint, register_atexit=False)
            install_audit(maker, publisher=publisher, service="bench", models=[models.item])
            select = session.prepare(
                f"SELECT writetime(operation) AS w FROM {keyspace}.changes_by_service_record "
                "WHERE service = 'bench' AND table_name = ? AND record_id = ?"
            )

            def visible(record_id: str) -> float | None:
                rows = list(session.execute(select, (table_name, record_id)))
                return None if not rows else float(rows[0]["w"]) / 1e6

            # Warm-up: the first event goes through every piece (and waits for the consumer
            # to connect); it is not counted.
            with maker() as s:
                s.add(models.item(id=1, **row_values(1)))
                s.commit()
            deadline = time.monotonic() + 120
            while visible("1") is None:
                if consumer.poll() is not None:
                    raise BenchError(
                        "the consumer exited; run `python -m consumer consume` by hand"
                    )
                if time.monotonic() > deadline:
                    raise BenchError("the warm-up event did not reach Cassandra within 120 s")
                time.sleep(0.1)
            progress(f"P4: pipeline ready; {commits} commits at {RATE_PER_SECOND:.0f}/s")
            interval = 1.0 / RATE_PER_SECOND
            next_at = time.monotonic()
            for k in range(commits):
                record = 1000 + k
                with maker() as s:
                    s.add(models.item(id=record, **row_values(record)))
                    s.commit()
                    committed[str(record)] = time.time()
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            deadline = time.monotonic() + 120
            while len(latencies) < len(committed) and time.monotonic() < deadline:
                for record_id, at in committed.items():
                    if record_id not in latencies:
                        written = visible(record_id)
                        if written is not None:
                            latencies[record_id] = written - at
                if len(latencies) < len(committed):
                    time.sleep(0.5)
            missing = len(committed) - len(latencies)
            if missing:
                raise BenchError(f"{missing} audit rows did not reach Cassandra within 120 s")
            _stop(consumer)  # before the moto server goes away
    finally:
        if consumer is not None:
            _stop(consumer)
        uninstall_audit(maker)
        if publisher is not None:
            publisher.close(5)
        engine.dispose()
        _drop_pg_database(base_pg, pg_name)
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        finally:
            cluster.shutdown()
    values = list(latencies.values())
    return {
        "scale": scale,
        "commits": commits,
        "rate_per_second": RATE_PER_SECOND,
        "moto": "shared" if shared_moto else "private",
        "stats": summarize(values),
        "latencies": values,
        "elapsed_s": time.perf_counter() - started,
    }


def render(result: dict[str, Any]) -> str:
    s = result["stats"]
    rows = [
        [
            f"{result['commits']} one-row commits at {result['rate_per_second']:.0f}/s",
            fmt_seconds(s["median"]),
            fmt_seconds(s["p90"]),
            fmt_seconds(s["p99"]),
            fmt_seconds(s["max"]),
        ]
    ]
    return markdown_table(["workload", "p50", "p90", "p99", "max"], rows) + (
        "\n\nAbsolute numbers from this machine with moto standing in for SNS/SQS: "
        "machine-dependent, not a prediction for AWS."
    )


def main(scale: float = 1.0, shared_moto: bool = False) -> dict[str, Any]:
    return run_part(
        "p4",
        "P4 — end to end: commit → row in Cassandra",
        lambda: measure(scale=scale, shared_moto=shared_moto),
        render,
    )


__all__ = ["main", "measure", "render"]
