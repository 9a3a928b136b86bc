"""The testcontainers route of the fixtures, taken for real: the PostgreSQL integration tests
with ``SQLA_AUDIT_TEST_POSTGRES_URL`` unset, PostgreSQL coming from a container.

podman serves the Docker API on a private unix socket (``scripts/container api``); the image is
PostgreSQL from Debian's packages built on the local base (``scripts/container postgres-image``),
named through ``SQLA_AUDIT_TEST_POSTGRES_IMAGE``. The PostgreSQL tests run in a pytest subprocess
with ``CI=true``, so that a skipped test counts as a failure there too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cassandra_support import wait_for
from container_support import CONTAINER_SCRIPT, ROOT, container_script, podman, require_podman
from service_policy import POSTGRES_ENV

pytestmark = [pytest.mark.testcontainers, pytest.mark.slow, pytest.mark.timeout(1800)]

# The PostgreSQL tests run through the container: a few modules, every PostgreSQL case in them.
POSTGRES_MODULES = [
    "tests/integration/test_capture_databases.py",
    "tests/integration/test_bulk_databases.py",
    "tests/integration/test_outbox_source_databases.py",
    "tests/integration/test_restore_databases.py",
    "tests/integration/test_async_databases.py",
]


def _api_answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200" in sock.recv(1024).split(b"\r\n", 1)[0]
    except OSError:
        return False


@pytest.fixture(scope="module")
def postgres_image() -> str:
    """PostgreSQL from Debian's packages on the local base image (built once, then cached)."""
    require_podman()
    return container_script("postgres-image", timeout=1500).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def docker_host(postgres_image: str) -> Iterator[str]:
    """``DOCKER_HOST`` of a podman API service of this module's own, stopped after."""
    directory = tempfile.mkdtemp(prefix="sqla-audit-podman-")
    sock = os.path.join(directory, "podman.sock")
    with (Path(directory) / "service.log").open("wb") as log:
        service = subprocess.Popen(
            [str(CONTAINER_SCRIPT), "api", sock], stdout=log, stderr=log, start_new_session=True
        )
    try:
        wait_for(lambda: _api_answers(sock), 60, "podman's Docker API")
        yield f"unix://{sock}"
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def junit_counts(report: Path) -> dict[str, int]:
    """tests, failures, errors and skipped of a JUnit XML report."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {
        key: sum(int(s.get(key, 0)) for s in suites)
        for key in ("tests", "failures", "errors", "skipped")
    }


def containers_of(image: str, *podman_args: str) -> set[str]:
    """Ids of the containers of ``image`` that ``podman ARGS`` (ps or events) lists."""
    lines = podman(*podman_args, "--format", "{{.ID}} {{.Image}}").splitlines()
    return {line.split(" ", 1)[0] for line in lines if line.endswith(f" {image}")}


def test_postgres_integration_tests_pass_through_testcontainers(
    postgres_image: str, docker_host: str, tmp_path: Path
) -> None:
    """With the PostgreSQL variable unset, the PostgreSQL tests pass on a testcontainer."""
    env = {k: v for k, v in os.environ.items() if k != POSTGRES_ENV}
    env.update(
        CI="true",
        DOCKER_HOST=docker_host,
        TESTCONTAINERS_RYUK_DISABLED="true",  # the reaper's image cannot be pulled here
        # Reach the container on its published port of this machine (testcontainers would
        # look for a gateway when it believes it runs inside a container).
        TESTCONTAINERS_CONNECTION_MODE="docker_host",
        SQLA_AUDIT_TEST_POSTGRES_IMAGE=postgres_image,
    )
    report = tmp_path / "junit.xml"
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *POSTGRES_MODULES,
            "-m",
            "postgres and not testcontainers",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    print(f"PostgreSQL tests through testcontainers: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    counts = junit_counts(report)
    assert counts["tests"] >= 40, counts
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts

    # They went through one container of that image, started and removed by testcontainers.
    started = containers_of(
        postgres_image, "events", "--stream=false", "--since", since, "--filter", "event=start"
    )
    assert len(started) == 1, started
    left = containers_of(postgres_image, "ps", "--all")
    assert not left, f"containers left behind: {left}"
