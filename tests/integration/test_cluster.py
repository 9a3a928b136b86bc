"""The consumer on a three-node Cassandra cluster (RF 3, LOCAL_QUORUM) while nodes fail.

One scenario, with events streaming into the SQS queue the whole time and a
``sqla-audit consume`` process writing them at ``LOCAL_QUORUM``:

1. node 2 is killed (SIGKILL) mid-stream, later restarted;
2. node 3 is stopped gracefully (SIGTERM) and stays down;
3. node 2 is killed again: with two nodes down there is no quorum, so the worker must hold
   its messages (the queue keeps them, nothing is acknowledged) and must not crash; node 2
   returns and the worker catches up.

Throughout, a reader asks ``history`` for a record at ``LOCAL_QUORUM``: it must answer
whenever two nodes are up. At the end every event sent is stored exactly once in every view
row the store writes (no loss, no duplicate), the queue is empty, and the consumer exits 0 on
SIGTERM. The stored rows are counted at ``LOCAL_QUORUM`` with node 3 still down. The log of
kills and restarts is printed, kept as ``cluster-run.log`` in the test's directory and appended
to ``.services/cassandra-cluster/test-runs.log``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cassandra_support import CASSANDRA_LOCAL_DC
from cluster_support import ClusterNodes, cluster_nodes
from sqs_consumer_support import (
    consumer_env,
    consumer_process,
    queue_is_empty,
    send_bodies,
    stop_gracefully,
)

from consumer.config import CassandraConfig, CassandraSchemaConfig
from consumer.query import AuditQuery
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sinks.cassandra.connection import connect
from consumer.testing import make_event
from tests.integration.conftest import unique_name

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

TABLE = "cluster_items"
#: events per second fed to the queue while the nodes fail, and at most this many in all
RATE = 20
MAX_EVENTS = 1200


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterNodes]:
    yield from cluster_nodes()


def _config(cluster: ClusterNodes, keyspace: str, consistency: str) -> CassandraConfig:
    return CassandraConfig(
        hosts=cluster.hosts,
        port=cluster.port,
        local_dc=CASSANDRA_LOCAL_DC,
        consistency=consistency,
        protocol_version=5,
        request_timeout=5.0,
        schema=CassandraSchemaConfig(
            keyspace=keyspace,
            replication_class="NetworkTopologyStrategy",
            datacenters={CASSANDRA_LOCAL_DC: 3},
        ),
    )


class Feeder:
    """Sends ``RATE`` events per second to the queue on its own thread."""

    def __init__(self, sqs_client: SQSClient, queue_url: str) -> None:
        self.sqs_client = sqs_client
        self.queue_url = queue_url
        self.sent: list[uuid.UUID] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def burst(self, count: int) -> None:
        """Send ``count`` more events at once (from the test's thread)."""
        events = [
            make_event(table=TABLE, record_id=f"burst-{i}", actor="cluster-test")
            for i in range(count)
        ]
        send_bodies(self.sqs_client, self.queue_url, [e.to_json() for e in events])
        self.sent.extend(e.event_id for e in events)

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set() and n < MAX_EVENTS:
                events = [
                    make_event(table=TABLE, record_id=str((n + i) % 500), actor="cluster-test")
                    for i in range(10)
                ]
                send_bodies(self.sqs_client, self.queue_url, [e.to_json() for e in events])
                self.sent.extend(e.event_id for e in events)
                n += 10
                self._stop.wait(10 / RATE)
        except BaseException as exc:
            self.error = exc


class Reader:
    """Asks ``history`` at LOCAL_QUORUM once a second; records failures with their time."""

    def __init__(self, query: AuditQuery, cluster: ClusterNodes) -> None:
        self.query = query
        self.cluster = cluster
        self.answers = 0
        self.failures: list[str] = []
        self.paused = threading.Event()  # set while fewer than two nodes are up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            if self.paused.is_set():
                continue
            try:
                self.query.history(TABLE, "1", service="billing", limit=5)
                self.answers += 1
            except Exception as exc:
                if not self.paused.is_set():
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    self.cluster.note(f"history failed: {type(exc).__name__}: {exc}")


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def test_nodes_fail_while_events_stream_in(
    cluster: ClusterNodes,
    sqs_client: SQSClient,
    aws_endpoint: str,
    tmp_path: Path,
) -> None:
    """Kills, a graceful stop and a lost quorum mid-stream: zero lost, zero duplicated,
    no worker crash, queue drained, history answering whenever two nodes are up."""
    keyspace = unique_name("sqla_audit_cluster")
    queue_url = sqs_client.create_queue(QueueName=unique_name("sqla-audit-cluster"))["QueueUrl"]
    apply_schema(_config(cluster, keyspace, "ALL"))
    cluster.note(f"keyspace {keyspace}: NetworkTopologyStrategy {{'{CASSANDRA_LOCAL_DC}': 3}}")
    env = consumer_env(
        aws_endpoint,
        queue_url,
        f"{cluster.hosts[0]}:{cluster.port}",
        keyspace,
        SQLA_AUDIT_CASSANDRA_HOSTS=",".join(cluster.hosts),
        SQLA_AUDIT_CONSISTENCY="LOCAL_QUORUM",
        SQLA_AUDIT_VISIBILITY_TIMEOUT="20",
        SQLA_AUDIT_CONCURRENCY="4",
    )
    reader_store = CassandraStore.connect(_config(cluster, keyspace, "LOCAL_QUORUM"))
    log_path = tmp_path / "consume.log"
    try:
        with (
            consumer_process(env, log_path) as consumer,
            Feeder(sqs_client, queue_url) as feeder,
            Reader(AuditQuery(reader_store), cluster) as reader,
        ):
            time.sleep(8)
            cluster.kill(2)
            time.sleep(10)
            cluster.start(2)
            time.sleep(5)
            cluster.stop(3)
            time.sleep(10)

            reader.paused.set()
            cluster.kill(2)
            feeder.burst(100)  # sent while no write can reach quorum
            held_at = len(feeder.sent)
            time.sleep(15)
            assert consumer.poll() is None, "the consumer exited while the quorum was lost"
            assert not queue_is_empty(sqs_client, queue_url), "messages were not held"
            cluster.note(
                f"quorum lost for 15 s; 100 events sent at once, "
                f"{len(feeder.sent) - held_at} more by the feeder; the queue still holds messages"
            )
            cluster.start(2)
            reader.paused.clear()
            time.sleep(5)
            feeder.stop()
            cluster.note(f"feeder stopped after {len(feeder.sent)} events")
            assert feeder.error is None, feeder.error
            _wait(lambda: queue_is_empty(sqs_client, queue_url), 600, "the queue to drain")
            cluster.note("queue drained")
            assert consumer.poll() is None, "the consumer crashed"
            assert stop_gracefully(consumer) == 0
            cluster.note("consumer stopped with exit status 0")
        counts = _stored(cluster, keyspace)
        sent = feeder.sent
        cluster.note(f"sent {len(sent)}, stored rows per view: {json.dumps(counts['rows'])}")
        assert reader.failures == [], reader.failures
        assert reader.answers > 0
        for view, event_ids in counts["ids"].items():
            assert counts["rows"][view] == len(event_ids), f"duplicate rows in {view}"
            missing = set(sent) - set(event_ids)
            assert not missing, f"{len(missing)} events lost in {view}"
            assert len(event_ids) == len(sent), f"{view} holds events that were never sent"
    finally:
        reader_store.close()
        (tmp_path / "cluster-run.log").write_text("\n".join(cluster.log) + "\n")
        _keep_log(cluster, log_path)


def _stored(cluster: ClusterNodes, keyspace: str) -> dict[str, Any]:
    """Rows and event ids of every view, read at LOCAL_QUORUM (node 3 is still down)."""
    driver = connect(
        dataclasses.replace(_config(cluster, keyspace, "LOCAL_QUORUM"), request_timeout=30.0)
    )
    try:
        session = driver.connect()
        rows: dict[str, int] = {}
        ids: dict[str, list[uuid.UUID]] = {}
        for view in ("changes_by_service_record", "changes_by_transaction", "changes_by_actor"):
            result = list(session.execute(f"SELECT event_id FROM {keyspace}.{view}"))
            rows[view] = len(result)
            ids[view] = list({row["event_id"] for row in result})
        return {"rows": rows, "ids": ids}
    finally:
        driver.shutdown()


def _keep_log(cluster: ClusterNodes, consumer_log: Path) -> None:
    """Append this run's node log where the cluster keeps its own logs, with the consumer's
    log of the run beside it (``last-consume.log``)."""
    with (cluster.state_dir / "test-runs.log").open("a") as out:
        out.write("\n".join(cluster.log) + "\n\n")
    if consumer_log.exists():
        shutil.copyfile(consumer_log, cluster.state_dir / "last-consume.log")
