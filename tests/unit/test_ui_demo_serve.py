"""`sqla-audit demo --serve`: the demo runs, then its store is served by the viewer."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consumer.cli import main


class FakeServer:
    """Stands in for uvicorn.Server: reads a few pages of the served app, then returns."""

    pages: list[str] = []
    addresses: list[Any] = []

    def __init__(self, config: Any) -> None:
        self.config = config

    def run(self, sockets: list[socket.socket]) -> None:
        FakeServer.addresses.append(sockets[0].getsockname())
        with TestClient(self.config.app) as client:
            home = client.get("/")
            assert home.status_code == 200
            FakeServer.pages.append(home.text)
            tables = re.findall(r'<option value="([^"]*)"', home.text)
            assert tables, "the demo store's tables are offered"
            request = client.get("/request?id=demo-req-001")
            assert request.status_code == 200
            FakeServer.pages.append(request.text)


@pytest.fixture(autouse=True)
def fake_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uvicorn.Server", FakeServer)
    FakeServer.pages, FakeServer.addresses = [], []
    for name in ("SQLA_AUDIT_CASSANDRA_HOSTS", "SQLA_AUDIT_TOPIC_ARN", "SQLA_AUDIT_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_demo_serve_runs_the_demo_then_serves_its_store(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After the demo's output, the viewer serves its store on 127.0.0.1 and says where."""
    code = main(["demo", "--serve", "--port", "0"])
    out = capsys.readouterr().out
    assert code == 0
    [(host, port)] = FakeServer.addresses
    assert host == "127.0.0.1"
    assert f"http://127.0.0.1:{port}/" in out
    assert out.index("sqla-audit ui: serving") > 0  # after the demo's own output
    assert "demo-req-001" in FakeServer.pages[1]


def test_demo_serve_keeps_a_given_workdir(tmp_path: Path) -> None:
    """With --workdir the served store is the one left there for the query commands."""
    assert main(["demo", "--serve", "--port", "0", "--workdir", str(tmp_path)]) == 0
    assert (tmp_path / "audit.db").is_file()
    assert FakeServer.addresses
