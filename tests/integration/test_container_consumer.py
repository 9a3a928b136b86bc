"""The consumer image, built and run with the Docker commands of README.md.

``docker`` is podman here (``scripts/container podman``), the base image the local Debian
bookworm one (``scripts/container base``). Two consumer containers share one SQS queue on the
moto endpoint and write into Cassandra, both on the host's loopback (``--network host``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from cassandra_support import split_contact, wait_for
from container_support import (
    container_script,
    pick,
    podman,
    readme_docker_commands,
    require_podman,
    run_with_docker_as_podman,
)
from net_support import free_port
from sqs_consumer_support import event_ids, queue_is_empty, send_bodies

from consumer.testing import make_event

if TYPE_CHECKING:
    from cassandra.cluster import Session
    from mypy_boto3_sqs import SQSClient

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(1800)]

EVENTS = 100
IMAGE = "sqla-audit-consumer"


@pytest.fixture(scope="module")
def base_image() -> str:
    """The local Debian bookworm base (made by debootstrap on the first run, then cached)."""
    require_podman()
    return container_script("base", timeout=1200).strip()


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of the containers a test starts; removed at the end whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        podman("rm", "--force", "--time", "0", name, check=False)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of a container's log."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def test_readme_docker_commands_run_two_consumers_writing_each_event_once(
    base_image: str,
    containers: list[str],
    sqs_client: SQSClient,
    sns_to_sqs: Callable[..., tuple[str, str]],
    aws_endpoint: str,
    cassandra_contact: str,
    cassandra_session: Session,
    cassandra_keyspace: str,
) -> None:
    """Two containers from the README's commands: each event stored once, health, SIGTERM exit 0."""
    commands = readme_docker_commands()
    host, port = split_contact(cassandra_contact)
    _, queue_url = sns_to_sqs(raw=True)
    env = {
        "BASE_IMAGE": base_image,
        "QUEUE_URL": queue_url,
        "CASSANDRA_HOSTS": host,
        "CASSANDRA_PORT": str(port),
        "KEYSPACE": cassandra_keyspace,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": aws_endpoint,
    }

    def run(command: str, timeout: float = 120, **extra: str) -> str:
        began = time.monotonic()
        proc = run_with_docker_as_podman(command, {**env, **extra}, timeout=timeout)
        print(
            f"{time.monotonic() - began:6.1f} s  {command.split(chr(10), maxsplit=1)[0]}"
        )  # -s / -rP
        assert proc.returncode == 0, f"{command}\nexited {proc.returncode}:\n{proc.stderr[-4000:]}"
        return proc.stdout + proc.stderr

    run(pick(commands, "docker build"), timeout=1500)
    run(pick(commands, "docker run --rm", "schema apply"))

    consumers = {f"sqla-audit-consumer-{uuid.uuid4().hex[:8]}": str(free_port()) for _ in "ab"}
    for name, metrics_port in consumers.items():
        containers.append(name)
        run(pick(commands, "docker run -d"), NAME=name, METRICS_PORT=metrics_port)

    table = f"t_{uuid.uuid4().hex[:8]}"
    sent = time.monotonic()
    events = [make_event(table=table, record_id=str(i)) for i in range(EVENTS)]
    send_bodies(sqs_client, queue_url, [e.to_json() for e in events])
    wait_for(
        lambda: len(event_ids(cassandra_session, cassandra_keyspace, table)) >= EVENTS,
        180,
        f"{EVENTS} events stored",
    )
    wait_for(lambda: queue_is_empty(sqs_client, queue_url), 60, "an empty queue")
    print(f"{time.monotonic() - sent:6.1f} s  {EVENTS} events sent, stored, queue empty")

    curl = pick(commands, "curl")
    for name, metrics_port in consumers.items():
        assert run(curl, NAME=name, METRICS_PORT=metrics_port).strip(), f"{name}: empty /healthz"

    # Both get SIGTERM at once, as an orchestrator scaling down would send it.
    stop = pick(commands, "docker stop")
    with ThreadPoolExecutor(len(consumers)) as pool:
        list(pool.map(lambda name: run(stop, timeout=90, NAME=name), consumers))
    logs = {name: run(pick(commands, "docker logs"), NAME=name) for name in consumers}
    for name in consumers:
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name).strip()
        assert exit_code == "0", f"{name} exited {exit_code} (137: killed after the grace period)"
        lines = json_lines(logs[name])
        messages = [line.get("message") for line in lines]
        assert "worker stopped" in messages, f"{name}:\n{logs[name][-4000:]}"
        stamps = {line.get("message"): line.get("ts", "") for line in lines}
        print(
            f"{name}: SIGTERM at {stamps.get('received SIGTERM, shutting down')}, "
            f"stopped at {stamps['worker stopped']}"
        )
        run(pick(commands, "docker rm"), NAME=name)

    stored = event_ids(cassandra_session, cassandra_keyspace, table)
    assert len(stored) == EVENTS, f"{len(stored) - len(set(stored))} duplicates"
    assert set(stored) == {e.event_id for e in events}
