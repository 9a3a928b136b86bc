"""Who may read the viewer, and what ``sqla-audit ui`` does before it serves.

A non-loopback bind without credentials is refused; with a token or basic auth every request
needs them; the command prints where it listens; the secrets never reach a page or the output.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from ui_support import ORDERS, fill_store, make_trail

from consumer.cli import main
from consumer.query import AuditQuery
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.ui import Credentials, audit_app
from consumer.ui.auth import check_bind, is_loopback
from sqla_audit.errors import ConfigurationError

TOKEN = "s3cr3t-token-value"
PASSWORD = "pa:ss-wörd"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def guarded() -> Iterator[TestClient]:
    app = audit_app(
        AuditQuery(MemoryStore()),
        credentials=Credentials(token=TOKEN, username="ops", password=PASSWORD),
    )
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "audit.example.invalid"], ids=str)
def test_a_non_loopback_bind_needs_credentials(host: str) -> None:
    """Any address but loopback is refused without a token or basic auth."""
    with pytest.raises(ConfigurationError, match="without authentication"):
        check_bind(host, None)
    check_bind(host, Credentials(token=TOKEN))
    check_bind(host, Credentials(username="ops", password=PASSWORD))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.8.9.10"])
def test_loopback_needs_no_credentials(host: str) -> None:
    """Loopback addresses (and localhost) may serve without authentication."""
    assert is_loopback(host)
    check_bind(host, None)


def test_requests_without_credentials_get_401(guarded: TestClient) -> None:
    """Without an Authorization header, or with a wrong one, every page is a bare 401."""
    for headers in (
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": basic("ops", "wrong")},
        {"authorization": basic("other", PASSWORD)},
        {"authorization": "Basic not-base64!"},
        {"authorization": "Digest abc"},
    ):
        response = guarded.get("/", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Basic realm=")
        assert TOKEN not in response.text
        assert PASSWORD not in response.text
    assert guarded.get("/static/viewer.css").status_code == 401


def test_the_token_or_the_user_opens_the_pages(guarded: TestClient) -> None:
    """A matching bearer token or basic-auth user gets the pages."""
    for value in (f"Bearer {TOKEN}", basic("ops", PASSWORD)):
        response = guarded.get("/", headers={"authorization": value})
        assert response.status_code == 200
        assert TOKEN not in response.text
        assert PASSWORD not in response.text


def test_credentials_are_validated() -> None:
    """Empty tokens, half a basic-auth pair and USER without a colon are refused."""
    with pytest.raises(ConfigurationError):
        Credentials(token="")
    with pytest.raises(ConfigurationError):
        Credentials(username="ops")
    with pytest.raises(ConfigurationError):
        Credentials.parse_basic("ops")
    assert Credentials.parse_basic("ops:a:b").password == "a:b"
    assert TOKEN not in repr(Credentials(token=TOKEN))


class FakeServer:
    """Stands in for uvicorn.Server: records the address, reads one page, returns."""

    served: list[Any] = []
    #: (path, headers) to GET while "serving"; the answers' statuses
    visit: list[tuple[str, dict[str, str]]] = []
    statuses: list[int] = []

    def __init__(self, config: Any) -> None:
        self.config = config

    def run(self, sockets: list[socket.socket]) -> None:
        FakeServer.served.append(sockets[0].getsockname())
        with TestClient(self.config.app) as client:
            for path, headers in FakeServer.visit:
                FakeServer.statuses.append(client.get(path, headers=headers).status_code)

    @classmethod
    def reset(cls, visit: list[tuple[str, dict[str, str]]]) -> None:
        cls.served, cls.visit, cls.statuses = [], visit, []


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    store = SQLiteStore(path)
    try:
        fill_store(store, make_trail(tmp_path))
    finally:
        store.close()
    return path


def test_ui_prints_where_it_listens(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sqla-audit ui` binds 127.0.0.1 by default and prints the URL it serves."""
    monkeypatch.setattr("uvicorn.Server", FakeServer)
    FakeServer.reset([(f"/record?table={ORDERS}&id=1&service=shop", {})])
    code = main(["ui", "--store", "sqlite", "--store-url", str(store_file), "--port", "0"])
    out = capsys.readouterr().out
    assert code == 0
    [(host, port)] = FakeServer.served
    assert host == "127.0.0.1"
    assert f"http://127.0.0.1:{port}/" in out
    assert FakeServer.statuses == [200]


def test_ui_refuses_a_public_bind_without_auth(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--host 0.0.0.0` without a token or basic auth: one line, exit 2, nothing served."""
    monkeypatch.setattr("uvicorn.Server", FakeServer)
    monkeypatch.delenv("SQLA_AUDIT_UI_TOKEN", raising=False)
    monkeypatch.delenv("SQLA_AUDIT_UI_BASIC_AUTH", raising=False)
    FakeServer.reset([])
    argv = ["ui", "--store", "sqlite", "--store-url", str(store_file), "--port", "0"]
    code = main([*argv, "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "without authentication" in err
    assert FakeServer.served == []


def test_ui_serves_a_public_bind_behind_the_token(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the token in the environment the public bind starts, and pages need the token."""
    monkeypatch.setattr("uvicorn.Server", FakeServer)
    monkeypatch.setenv("SQLA_AUDIT_UI_TOKEN", TOKEN)
    FakeServer.reset([("/", {}), ("/", {"authorization": f"Bearer {TOKEN}"})])
    argv = ["ui", "--store", "sqlite", "--store-url", str(store_file), "--port", "0"]
    assert main([*argv, "--host", "0.0.0.0"]) == 0
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert FakeServer.statuses == [401, 200]
