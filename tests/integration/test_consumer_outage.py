"""The worker rides out a 30-second Cassandra outage without losing events or exiting.

Stopping the shared Cassandra node would disrupt every other test and take minutes to
restart, so the outage is simulated instead: the worker reaches Cassandra through a small
TCP proxy on loopback that this test controls. Closing the proxy drops every connection and
refuses new ones -- to the driver this is exactly a node that went away -- and reopening it
on the same port is the node coming back. Events keep arriving on the queue throughout.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from consumer.config import CassandraConfig, CassandraSchemaConfig, SqsConfig
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sources.sqs import SqsSource
from consumer.testing import make_event
from consumer.worker import Worker

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from mypy_boto3_sqs import SQSClient

CASSANDRA_LOCAL_DC = os.environ.get("SQLA_AUDIT_TEST_CASSANDRA_DC", "datacenter1")
OUTAGE_SECONDS = 30


def split_contact(contact: str) -> tuple[str, int]:
    host, _, port = contact.rpartition(":")
    return (host, int(port)) if host else (contact, 9042)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


class TcpProxy:
    """A loopback TCP proxy that can be closed (refusing and dropping) and reopened."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._sockets.discard(sock)

    def close(self) -> None:
        """Refuse new connections and drop the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(cassandra_contact: str) -> Iterator[TcpProxy]:
    made = TcpProxy(split_contact(cassandra_contact))
    yield made
    made.close()


@pytest.mark.slow
def test_cassandra_outage_loses_nothing_and_worker_never_exits(
    proxy: TcpProxy,
    cassandra_contact: str,
    cassandra_keyspace: str,
    cassandra_session: Session,
    sqs_client: SQSClient,
    sns_to_sqs: Any,
) -> None:
    """Cassandra unreachable for 30 s while events arrive: all are written after it returns."""
    host, port = split_contact(cassandra_contact)
    direct = CassandraConfig(
        hosts=(host,),
        port=port,
        local_dc=CASSANDRA_LOCAL_DC,
        consistency="LOCAL_ONE",
        protocol_version=5,
        request_timeout=2.0,
        schema=CassandraSchemaConfig(keyspace=cassandra_keyspace),
    )
    apply_schema(direct)
    through_proxy = CassandraConfig(
        hosts=("127.0.0.1",),
        port=proxy.port,
        local_dc=CASSANDRA_LOCAL_DC,
        consistency="LOCAL_ONE",
        protocol_version=5,
        request_timeout=2.0,
        schema=direct.schema,
    )
    store = CassandraStore.connect(through_proxy)
    _, queue_url = sns_to_sqs(raw=True)
    source = SqsSource(
        SqsConfig(queue_url=queue_url, wait_seconds=1, visibility_timeout=20), client=sqs_client
    )
    worker = Worker(source, store, concurrency=2, wait_seconds=1, max_backoff=2.0)
    table = f"t_{uuid.uuid4().hex[:8]}"
    sent: list[uuid.UUID] = []
    publishing = threading.Event()
    publishing.set()

    def publish() -> None:
        counter = 0
        while publishing.is_set():
            event = make_event(table=table, record_id=str(counter))
            sqs_client.send_message(QueueUrl=queue_url, MessageBody=event.to_json())
            sent.append(event.event_id)
            counter += 1
            time.sleep(0.25)

    def stored() -> set[uuid.UUID]:
        rows = cassandra_session.execute(
            f"SELECT table_name, event_id FROM {cassandra_keyspace}.changes_by_record"
        )
        return {row.event_id for row in rows if row.table_name == table}

    publisher = threading.Thread(target=publish, daemon=True)
    worker.start()
    publisher.start()
    try:
        wait_for(lambda: len(stored()) >= 3, 60, "events before the outage")
        proxy.close()
        outage_end = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_end:
            assert worker.health()["alive"]
            time.sleep(1)
        failures = worker.metrics.registry.get_sample_value(
            "sqla_audit_consumer_failures_total", {"kind": "store"}
        )
        assert failures is not None
        assert failures > 0
        assert not worker.health()["ready"]
        proxy.open()
        time.sleep(3)
        publishing.clear()
        publisher.join(10)
        expected = set(sent)
        wait_for(lambda: stored() >= expected, 120, "every event sent")
        assert stored() == expected
        assert worker.health()["alive"]
        wait_for(lambda: worker.health()["ready"], 30, "the worker to report ready")
    finally:
        publishing.clear()
        worker.stop()
        assert worker.join(30)
        store.close()
