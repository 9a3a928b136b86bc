"""The examples run: FastAPI and Flask apps (actor per request), the background job."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from consumer.decoding import Decoder
from consumer.demo.runner import consume
from consumer.sinks.memory import MemoryStore
from consumer.sources.outbox import OutboxSource
from sqla_audit import uninstall_audit
from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import outbox_table
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import assert_valid_events

ROOT = Path(__file__).resolve().parents[2]


def example(name: str) -> ModuleType:
    """Import ``examples.<name>`` from the repository (the examples are not installed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"examples.{name}")


def who_did_what(events: list[ChangeEvent]) -> list[tuple[str, str, str | None]]:
    return [(e.operation.value, e.record_id, e.actor.id if e.actor else None) for e in events]


# --------------------------------------------------------------------------- FastAPI

Request = tuple[str, str, dict[str, Any]]


def call(app: Any, requests: list[Request]) -> list[httpx.Response]:
    """Send ``requests`` in order to the ASGI ``app``, inside its lifespan."""

    async def run() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://notes") as client:
                return [await client.request(method, path, **kw) for method, path, kw in requests]

    return asyncio.run(run())


def fastapi_app(tmp_path: Path, publisher: InMemoryPublisher | None = None) -> Any:
    url = f"sqlite:///{tmp_path / 'notes.db'}"
    return example("fastapi_app.app").create_app(url, publisher=publisher)


def test_fastapi_events_carry_the_authenticated_user(tmp_path: Path) -> None:
    """Each request's changes carry the X-User of that request and its request id."""
    publisher = InMemoryPublisher()
    created, updated, deleted = call(
        fastapi_app(tmp_path, publisher),
        [
            ("POST", "/notes", {"json": {"title": "milk"}, "headers": {"X-User": "alice"}}),
            (
                "PATCH",
                "/notes/1",
                {"json": {"done": True}, "headers": {"X-User": "bob", "X-Request-ID": "req-42"}},
            ),
            ("DELETE", "/notes/1", {"headers": {"X-User": "alice"}}),
        ],
    )
    assert created.status_code == 201
    assert created.json()["id"] == 1
    assert updated.json()["done"] is True
    assert updated.headers["x-request-id"] == "req-42"
    assert deleted.status_code == 204
    events = publisher.events
    assert who_did_what(events) == [
        ("insert", "1", "alice"),
        ("update", "1", "bob"),
        ("delete", "1", "alice"),
    ]
    assert events[0].actor is not None
    assert events[0].actor.attributes == {"team": "support"}
    assert events[1].request_id == "req-42"
    assert events[1].changed_columns == ("done",)
    assert_valid_events(events)


def test_fastapi_refuses_anonymous_writes(tmp_path: Path) -> None:
    """Without a known X-User a write is refused with 401 and nothing is audited."""
    publisher = InMemoryPublisher()
    responses = call(
        fastapi_app(tmp_path, publisher),
        [
            ("POST", "/notes", {"json": {"title": "x"}}),
            ("POST", "/notes", {"json": {"title": "x"}, "headers": {"X-User": "mallory"}}),
            ("GET", "/notes/1", {}),
        ],
    )
    assert [r.status_code for r in responses] == [401, 401, 404]
    assert publisher.events == []


def test_fastapi_default_outbox_feeds_the_consumer(tmp_path: Path) -> None:
    """With no publisher the app writes the outbox, which the embedded consumer reads."""
    call(
        fastapi_app(tmp_path),
        [
            ("POST", "/notes", {"json": {"title": "milk"}, "headers": {"X-User": "alice"}}),
            ("PATCH", "/notes/1", {"json": {"title": "oat milk"}, "headers": {"X-User": "bob"}}),
        ],
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'notes.db'}")
    source = OutboxSource(engine, table=outbox_table(sa.MetaData()))
    store = MemoryStore()
    try:
        consume(source, store, Decoder(), expected=None, timeout=60)
    finally:
        source.close()
        engine.dispose()
    history = store.history("notes-api", "notes", "1").items
    assert [(r.operation.value, r.actor_id) for r in reversed(history)] == [
        ("insert", "alice"),
        ("update", "bob"),
    ]
    assert history[0].changes["title"].new == "oat milk"


# --------------------------------------------------------------------------- Flask


@pytest.fixture
def flask_app(tmp_path: Path) -> Iterator[tuple[Any, InMemoryPublisher]]:
    publisher = InMemoryPublisher()
    app = example("flask_app.app").create_app(
        f"sqlite:///{tmp_path / 'notes.db'}", publisher=publisher
    )
    yield app.test_client(), publisher
    uninstall_audit(app.extensions["notes_session_factory"])


def test_flask_events_carry_the_authenticated_user(
    flask_app: tuple[Any, InMemoryPublisher],
) -> None:
    """Each request's changes carry the X-User of that request and its request id."""
    client, publisher = flask_app
    created = client.post("/notes", json={"title": "milk"}, headers={"X-User": "bob"})
    assert created.status_code == 201
    updated = client.patch(
        "/notes/1", json={"body": "two"}, headers={"X-User": "alice", "X-Request-ID": "r-7"}
    )
    assert updated.status_code == 200
    assert updated.headers["X-Request-ID"] == "r-7"
    assert client.get("/notes/1").get_json()["body"] == "two"
    assert client.delete("/notes/1", headers={"X-User": "bob"}).status_code == 204
    events = publisher.events
    assert who_did_what(events) == [
        ("insert", "1", "bob"),
        ("update", "1", "alice"),
        ("delete", "1", "bob"),
    ]
    assert events[1].request_id == "r-7"
    assert_valid_events(events)


def test_flask_refuses_anonymous_and_malformed_writes(
    flask_app: tuple[Any, InMemoryPublisher],
) -> None:
    """No known X-User: 401; no JSON object or no title: 400; nothing is audited."""
    client, publisher = flask_app
    assert client.post("/notes", json={"title": "x"}).status_code == 401
    assert client.post("/notes", data="nope", headers={"X-User": "bob"}).status_code == 400
    assert client.post("/notes", json={"body": "x"}, headers={"X-User": "bob"}).status_code == 400
    assert client.patch("/notes/9", json={}, headers={"X-User": "bob"}).status_code == 404
    assert publisher.events == []


# --------------------------------------------------------------------------- background job


def test_background_job_changes_carry_the_job_actor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job's updates, made in a worker thread, are audited as nightly-job."""
    publisher = InMemoryPublisher()
    job = example("background_job")
    assert job.main(["--db", f"sqlite:///{tmp_path / 'jobs.db'}"], publisher=publisher) == 0
    assert "2 of 3 invoices marked overdue" in capsys.readouterr().out
    events = publisher.events
    assert who_did_what(events) == [
        ("insert", "1", "billing-import"),
        ("insert", "2", "billing-import"),
        ("insert", "3", "billing-import"),
        ("update", "2", "nightly-job"),
        ("update", "3", "nightly-job"),
    ]
    assert {e.changed_columns for e in events[3:]} == {("status",)}
    assert events[3].request_id is not None
    assert events[3].request_id.startswith("nightly-job-")
    assert_valid_events(events)


def test_background_job_script_runs_in_outbox_mode(tmp_path: Path) -> None:
    """`python examples/background_job.py --db URL` leaves its five events in the outbox."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "background_job.py"),
            "--db",
            f"sqlite:///{tmp_path / 'jobs.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "5 change events wait in the outbox table sqla_audit_outbox" in done.stdout
