"""The three-node Cassandra cluster of ``scripts/services up cassandra-cluster``, for tests.

Where the cluster comes from: ``SQLA_AUDIT_TEST_CASSANDRA_CLUSTER`` (``h1,h2,h3:port``, with
``SQLA_AUDIT_TEST_CASSANDRA_CLUSTER_STATE`` naming its state directory) when it is already
running; else, under ``CI=true`` or with ``SQLA_AUDIT_TEST_START_CLUSTER=1``, the fixture starts
it and stops it after the module (about 1-2 minutes of start-up and 3 x ~0.9 GiB of memory,
so it is not part of the default services); else the tests are skipped, naming both ways.

:class:`ClusterNodes` kills (SIGKILL), stops (SIGTERM, waits) and restarts nodes through the
pid files and the services script, and keeps a timestamped log of what it did: the test
prints it and writes it next to its other artifacts, so the kills and restarts of a run can
be read afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from service_policy import is_ci

CLUSTER_ENV = "SQLA_AUDIT_TEST_CASSANDRA_CLUSTER"
CLUSTER_STATE_ENV = "SQLA_AUDIT_TEST_CASSANDRA_CLUSTER_STATE"
START_ENV = "SQLA_AUDIT_TEST_START_CLUSTER"
ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services"


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class ClusterNodes:
    """The running cluster: its contact points, and control over each node."""

    hosts: tuple[str, ...]
    port: int
    state_dir: Path
    log: list[str] = field(default_factory=list)

    @property
    def services(self) -> Path:
        """The services script of the checkout that runs this cluster (its state directory
        is ``<checkout>/.services/cassandra-cluster``): another checkout's script would not
        know the cluster's nodes."""
        return self.state_dir.parent.parent / "scripts" / "services"

    def note(self, text: str) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        line = f"{stamp} {text}"
        self.log.append(line)
        print(line, flush=True)

    def pid(self, node: int) -> int | None:
        try:
            text = (self.state_dir / f"node{node}" / "cassandra.pid").read_text().strip()
        except OSError:
            return None
        pid = int(text) if text.isdigit() else None
        return pid if pid is not None and _pid_alive(pid) else None

    def kill(self, node: int) -> None:
        """SIGKILL: the node dies at once, mid-request, without flushing anything."""
        pid = self.pid(node)
        assert pid is not None, f"node {node} is not running"
        os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, 30)
        self.note(f"node {node} (127.0.0.{node}, pid {pid}) killed with SIGKILL")

    def stop(self, node: int) -> None:
        """SIGTERM: Cassandra's shutdown hook drains the node and leaves gossip cleanly."""
        pid = self.pid(node)
        assert pid is not None, f"node {node} is not running"
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        self._wait_gone(pid, 120)
        self.note(
            f"node {node} (127.0.0.{node}, pid {pid}) stopped with SIGTERM "
            f"in {time.monotonic() - started:.1f} s"
        )

    def start(self, *nodes: int) -> None:
        """Start ``nodes`` (all that are down when none) and wait until they take writes."""
        env = dict(os.environ)
        if nodes:
            env["CASSANDRA_CLUSTER_START"] = " ".join(str(n) for n in nodes)
        started = time.monotonic()
        self.note(f"starting node(s) {' '.join(map(str, nodes)) or 'that are down'}")
        run = subprocess.run(
            [str(self.services), "up", "cassandra-cluster"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        self.note(
            f"node(s) {' '.join(map(str, nodes)) or 'all'} up and taking writes after "
            f"{time.monotonic() - started:.1f} s"
        )

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                pytest.fail(f"process {pid} did not exit within {timeout} s")
            time.sleep(0.2)


def _parse(contact: str) -> tuple[tuple[str, ...], int]:
    hosts, _, port = contact.rpartition(":")
    return tuple(h.strip() for h in hosts.split(",") if h.strip()), int(port)


def _fragment(state_dir: Path) -> dict[str, str]:
    values = {}
    env_file = state_dir / "env"
    for line in env_file.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            values[key] = value
    return values


def cluster_nodes() -> Iterator[ClusterNodes]:
    """Body of the module-scoped ``cluster`` fixture (see the module documentation)."""
    contact = os.environ.get(CLUSTER_ENV, "").strip()
    if contact:
        state = Path(os.environ.get(CLUSTER_STATE_ENV, ROOT / ".services" / "cassandra-cluster"))
        hosts, port = _parse(contact)
        nodes = ClusterNodes(hosts, port, state)
        if any(nodes.pid(n) is None for n in (1, 2, 3)):
            nodes.start()  # a node left down by an earlier run: the test needs all three
        try:
            yield nodes
        finally:
            # leave the running cluster as it was found: every node up
            if any(nodes.pid(n) is None for n in (1, 2, 3)):
                nodes.start()
        return
    wanted = os.environ.get(START_ENV, "").strip().lower() in {"1", "true", "yes"}
    if not (is_ci() or wanted):
        pytest.skip(
            f"the three-node cluster is not running: `scripts/services up cassandra-cluster` "
            f"and source .services.env, or set {START_ENV}=1 to start it for these tests"
        )
    started = time.monotonic()
    run = subprocess.run(
        [str(SERVICES), "up", "cassandra-cluster"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if run.returncode != 0:
        pytest.fail(f"scripts/services up cassandra-cluster failed:\n{run.stderr[-3000:]}")
    state = ROOT / ".services" / "cassandra-cluster"
    hosts, port = _parse(_fragment(state)[CLUSTER_ENV])
    nodes = ClusterNodes(hosts, port, state)
    nodes.note(f"cluster started for this module in {time.monotonic() - started:.1f} s")
    try:
        yield nodes
    finally:
        subprocess.run(
            [str(SERVICES), "down", "cassandra-cluster"],
            capture_output=True,
            timeout=300,
            check=False,
        )
