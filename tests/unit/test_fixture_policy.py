"""Policy for tests needing a service: env var, else testcontainers, else skip (fail in CI)."""

from __future__ import annotations

import pathlib
import socket
import threading

import pytest
import service_policy

ENV = "SQLA_AUDIT_TEST_POLICY_PROBE"


@pytest.fixture(autouse=True)
def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Docker engine and no CI unless a test says otherwise; nothing touches the network."""
    monkeypatch.setattr(service_policy, "docker_engine_available", lambda: False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(ENV, raising=False)


def test_env_var_wins_without_looking_for_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A set environment variable is returned (stripped) and Docker is never consulted."""

    def docker_consulted() -> bool:
        raise AssertionError("Docker must not be consulted when the env var is set")

    monkeypatch.setattr(service_policy, "docker_engine_available", docker_consulted)
    monkeypatch.setenv(ENV, "  postgresql+psycopg://u:p@127.0.0.1:5432/db \n")

    assert service_policy.require_service("postgres", ENV) == (
        "postgresql+psycopg://u:p@127.0.0.1:5432/db"
    )


def test_missing_service_skips_locally() -> None:
    """Without env var or Docker, outside CI, the test is skipped with a hint naming the env var."""
    with pytest.raises(pytest.skip.Exception, match=ENV):
        service_policy.require_service("postgres", ENV)


@pytest.mark.parametrize("ci_value", ["true", "1", "yes", "TRUE"])
def test_missing_service_fails_in_ci(monkeypatch: pytest.MonkeyPatch, ci_value: str) -> None:
    """Under CI a missing service is a failure, never a skip."""
    monkeypatch.setenv("CI", ci_value)

    with pytest.raises(pytest.fail.Exception, match=ENV):
        service_policy.require_service("cassandra", ENV)


def test_blank_env_var_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An env var holding only whitespace does not count as a setting."""
    monkeypatch.setenv(ENV, "   ")

    with pytest.raises(pytest.skip.Exception):
        service_policy.require_service("aws", ENV)


@pytest.mark.parametrize("ci_value", ["", "0", "false", "no", "off", "False"])
def test_ci_false_values_keep_local_behaviour(
    monkeypatch: pytest.MonkeyPatch, ci_value: str
) -> None:
    """CI set to an empty or false word is not CI: the test is skipped, not failed."""
    monkeypatch.setenv("CI", ci_value)

    assert not service_policy.is_ci()
    with pytest.raises(pytest.skip.Exception):
        service_policy.require_service("mariadb", ENV)


def test_docker_engine_gives_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a Docker engine and no env var, the service's container setting is returned."""
    started: list[str] = []

    def fake_start(name: str) -> str:
        started.append(name)
        return "127.0.0.1:49153"

    monkeypatch.setattr(service_policy, "docker_engine_available", lambda: True)
    monkeypatch.setattr(service_policy, "start_container", fake_start)
    monkeypatch.setenv("CI", "true")

    assert service_policy.require_service("cassandra", ENV) == "127.0.0.1:49153"
    assert started == ["cassandra"]


def test_unknown_service_is_not_containerised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service without a container recipe is skipped even when Docker answers."""
    monkeypatch.setattr(service_policy, "docker_engine_available", lambda: True)

    with pytest.raises(pytest.skip.Exception):
        service_policy.require_service("no-such-service", ENV)


def test_every_service_has_an_env_var_and_a_container_recipe() -> None:
    """Each known service names its env var and can be started from a container."""
    assert set(service_policy.SERVICE_ENV) == {"postgres", "mariadb", "aws", "cassandra"}
    assert set(service_policy._STARTERS) == set(service_policy.SERVICE_ENV)


_probe_docker = service_policy.docker_engine_available.__wrapped__  # the real probe, uncached


def test_docker_probe_false_without_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """With DOCKER_HOST naming a socket that does not exist, no engine is reported."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")

    assert _probe_docker() is False


@pytest.mark.parametrize(("reply", "expected"), [(b"HTTP/1.1 200 OK", True), (b"nope", False)])
def test_docker_probe_pings_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, reply: bytes, expected: bool
) -> None:
    """The probe sends GET /_ping to the DOCKER_HOST socket and needs a 200 answer."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    requests: list[bytes] = []

    def answer_once() -> None:
        conn, _ = server.accept()
        with conn:
            requests.append(conn.recv(1024))
            conn.sendall(reply + b"\r\nContent-Length: 2\r\n\r\nOK")

    thread = threading.Thread(target=answer_once)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    try:
        assert _probe_docker() is expected
    finally:
        thread.join(timeout=5)
        server.close()
    assert requests[0].startswith(b"GET /_ping ")
