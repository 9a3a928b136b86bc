"""Where the integration tests find their services, and what happens when one is missing.

A service's setting comes from its environment variable (``scripts/services up`` writes them to
``.services.env``). Without it, a Docker engine that answers is used through testcontainers.
Without either, the test is skipped -- except under ``CI=true``, where a missing service is a
failure: CI must never pass by skipping the tests that matter.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

POSTGRES_ENV = "SQLA_AUDIT_TEST_POSTGRES_URL"
MARIADB_ENV = "SQLA_AUDIT_TEST_MARIADB_URL"
AWS_ENV = "SQLA_AUDIT_TEST_AWS_ENDPOINT"
CASSANDRA_ENV = "SQLA_AUDIT_TEST_CASSANDRA"

#: service name -> environment variable holding its setting
SERVICE_ENV = {
    "postgres": POSTGRES_ENV,
    "mariadb": MARIADB_ENV,
    "aws": AWS_ENV,
    "cassandra": CASSANDRA_ENV,
}

# Images used when a service comes from testcontainers: Docker Hub's, unless the variable
# SQLA_AUDIT_TEST_<SERVICE>_IMAGE names another (a locally built one where no registry is
# reachable: scripts/container postgres-image).
POSTGRES_IMAGE = "postgres:16-alpine"
MARIADB_IMAGE = "mariadb:11.4"
MOTO_IMAGE = "motoserver/moto:5.2.5"
CASSANDRA_IMAGE = "cassandra:5.0"


def image(service: str, default: str) -> str:
    """The image for *service*: ``SQLA_AUDIT_TEST_<SERVICE>_IMAGE`` when set, else *default*."""
    return os.environ.get(f"SQLA_AUDIT_TEST_{service.upper()}_IMAGE", "").strip() or default


_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def is_ci() -> bool:
    """True when running in CI (``CI`` set to anything but an empty/false value)."""
    return os.environ.get("CI", "").strip().lower() not in _FALSE_WORDS


def require_service(name: str, env_var: str) -> str:
    """Return the setting for service *name*: env var, else a testcontainer, else skip/fail."""
    value = os.environ.get(env_var, "").strip()
    if value:
        return value
    if name in _STARTERS and docker_engine_available():
        return start_container(name)
    message = (
        f"{name} is not available: set {env_var} (run `scripts/services up` and source "
        f".services.env) or make a Docker engine available for testcontainers"
    )
    if is_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@functools.cache
def docker_engine_available() -> bool:
    """True when a Docker engine answers ``GET /_ping`` (a ``docker`` client alone is not enough).

    Probes ``DOCKER_HOST`` (``unix://`` or plain ``tcp://``; default the standard socket) with a
    raw request, so that no client object is left half-open when there is no engine.
    """
    host = os.environ.get("DOCKER_HOST", "").strip() or "unix:///var/run/docker.sock"
    scheme, _, rest = host.partition("://")
    try:
        if scheme == "unix":
            if not os.path.exists(rest):
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(rest)
        elif scheme in {"tcp", "http"} and not os.environ.get("DOCKER_TLS_VERIFY"):
            address, _, port = rest.rstrip("/").rpartition(":")
            sock = socket.create_connection((address.strip("[]"), int(port)), timeout=5)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(1024).split(b"\r\n", 1)[0]
        return status_line.startswith(b"HTTP/") and b" 200" in status_line
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# testcontainers: started on first use, one per service for the whole session.

_containers: dict[str, tuple[Any, str]] = {}


def start_container(name: str) -> str:
    """Start (once per session) the container for service *name* and return its setting."""
    if name not in _containers:
        container, value = _STARTERS[name]()
        _containers[name] = (container, value)
    return _containers[name][1]


def stop_containers() -> None:
    """Stop every container started by :func:`start_container`."""
    while _containers:
        _, (container, _) = _containers.popitem()
        container.stop()


def _import_container(module: str, cls: str) -> Any:
    # testcontainers >= 4.14 moved the modules under testcontainers.community; the old path
    # still works there but warns, and pytest turns warnings into errors.
    import importlib  # noqa: PLC0415

    try:
        mod = importlib.import_module(f"testcontainers.community.{module}")
    except ModuleNotFoundError:
        mod = importlib.import_module(f"testcontainers.{module}")
    return getattr(mod, cls)


def _start_postgres() -> tuple[Any, str]:
    container_cls = _import_container("postgres", "PostgresContainer")
    container = container_cls(
        image("postgres", POSTGRES_IMAGE),
        username="sqla_audit",
        password="sqla_audit",
        dbname="sqla_audit",
        driver="psycopg",
    ).start()
    return container, str(container.get_connection_url())


def _start_mariadb() -> tuple[Any, str]:
    container_cls = _import_container("mysql", "MySqlContainer")
    # root: the fixtures create and drop a database per test module.
    container = container_cls(
        image("mariadb", MARIADB_IMAGE),
        username="root",
        password="sqla_audit",
        dbname="sqla_audit",
        dialect="pymysql",
    ).start()
    return container, str(container.get_connection_url())


def _start_moto() -> tuple[Any, str]:
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    container = DockerContainer(image("moto", MOTO_IMAGE)).with_exposed_ports(5000).start()
    host = container.get_container_host_ip()
    endpoint = f"http://{host}:{container.get_exposed_port(5000)}"
    _wait_http_ok(f"{endpoint}/moto-api/", timeout=60)
    return container, endpoint


def _start_cassandra() -> tuple[Any, str]:
    container_cls = _import_container("cassandra", "CassandraContainer")
    container = container_cls(image("cassandra", CASSANDRA_IMAGE)).start()
    host, port = container.get_contact_points()[0]
    return container, f"{host}:{port}"


def _wait_http_ok(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {url} after {timeout}s")
        time.sleep(0.5)


_STARTERS: dict[str, Callable[[], tuple[Any, str]]] = {
    "postgres": _start_postgres,
    "mariadb": _start_mariadb,
    "aws": _start_moto,
    "cassandra": _start_cassandra,
}
