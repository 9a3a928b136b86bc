"""ASGI and WSGI middleware: each request's actor and request id reach its audit events."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
import sqlalchemy as sa
from capture_support import Base, Country, fix_sqlite_transactions
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.context import current_actor, current_request_id
from sqla_audit.middleware import AuditASGIMiddleware, AuditWSGIMiddleware, accept_request_id
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import assert_valid_events

REQUESTS = 50


def _user_from_scope(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"x-user":
            return str(value.decode())
    return None


async def _async_user_from_scope(scope: dict[str, Any]) -> str | None:
    await asyncio.sleep(0)
    return _user_from_scope(scope)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A SQLite file with the test tables."""
    path = tmp_path / "web.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture
def sync_maker(db_path: Path) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker on the file database (threads may share it)."""
    engine = sa.create_engine(
        f"sqlite:///{db_path}", poolclass=NullPool, connect_args={"timeout": 30}
    )
    fix_sqlite_transactions(engine)
    yield sessionmaker(engine)
    engine.dispose()


def _starlette_app(db_path: Path, sync_maker: sessionmaker[Session]) -> tuple[Starlette, Any]:
    async_engine = create_async_engine(
        f"sqlite+aiosqlite:///{db_path}", poolclass=NullPool, connect_args={"timeout": 30}
    )
    fix_sqlite_transactions(async_engine.sync_engine)
    async_maker = async_sessionmaker(async_engine)

    async def write_async(request: Request) -> JSONResponse:
        code = request.path_params["code"]
        await asyncio.sleep(random.random() / 100)  # interleave the requests
        async with async_maker.begin() as session:
            session.add(Country(code=code, name=code))
            await asyncio.sleep(0)
        return JSONResponse({"actor": str(current_actor().id if current_actor() else None)})

    def write_sync(request: Request) -> PlainTextResponse:
        code = request.path_params["code"]
        with sync_maker.begin() as session:
            session.add(Country(code=code, name=code))
        return PlainTextResponse(current_request_id() or "")

    app = Starlette(
        routes=[
            Route("/async/{code}", write_async, methods=["POST"]),
            Route("/sync/{code}", write_sync, methods=["POST"]),
        ]
    )
    return app, async_maker


@pytest.mark.parametrize("path", ["async", "sync"])
@pytest.mark.parametrize("getter", [_user_from_scope, _async_user_from_scope])
def test_fifty_concurrent_asgi_requests_keep_their_own_actor(
    db_path: Path, sync_maker: sessionmaker[Session], path: str, getter: Any
) -> None:
    """50 concurrent requests with different actors: each event carries its request's actor."""
    app, async_maker = _starlette_app(db_path, sync_maker)
    publisher = InMemoryPublisher()
    install_audit(async_maker, publisher=publisher, service="web")
    install_audit(sync_maker, publisher=publisher, service="web")
    wrapped = AuditASGIMiddleware(app, actor_getter=getter)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"/{path}/C{n}",
                        headers={"x-user": f"user-{n}", "x-request-id": f"req-{n}"},
                    )
                    for n in range(REQUESTS)
                )
            )

    try:
        responses = asyncio.run(main())
    finally:
        uninstall_audit(async_maker)
        uninstall_audit(sync_maker)
    assert all(response.status_code == 200 for response in responses)
    for n, response in enumerate(responses):
        assert response.headers["x-request-id"] == f"req-{n}"
    events = publisher.events
    assert len(events) == REQUESTS
    for event in events:
        number = event.record_id.removeprefix("C")
        assert event.actor is not None
        assert (event.actor.id, event.request_id) == (f"user-{number}", f"req-{number}")
    assert_valid_events(events)


def _asgi_call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    actor = current_actor()
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    body = f"{actor.id if actor else None}|{current_request_id()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_missing_or_unusable_request_id_is_generated() -> None:
    """Without a usable request-id header the middleware generates one and echoes it."""
    app = AuditASGIMiddleware(
        _echo_app, actor_getter=_user_from_scope, generate_request_id=lambda: "generated"
    )
    for headers in ([], [(b"x-request-id", b"x" * 500)], [(b"x-request-id", b"a\x01b")]):
        sent = _asgi_call(app, {"type": "http", "headers": headers})
        assert sent[0]["headers"] == [(b"x-request-id", b"generated")]
        assert sent[1]["body"] == b"None|generated"


def test_custom_header_and_no_echo() -> None:
    """The request id header is configurable and echoing can be turned off."""
    app = AuditASGIMiddleware(
        _echo_app,
        actor_getter=lambda scope: 7,
        request_id_header="X-Correlation-ID",
        echo_request_id=False,
    )
    sent = _asgi_call(app, {"type": "http", "headers": [(b"x-correlation-id", b"corr-1")]})
    assert sent[0]["headers"] == []
    assert sent[1]["body"] == b"7|corr-1"


def test_websocket_accept_echoes_request_id_and_lifespan_passes_through() -> None:
    """Websocket scopes get the context and header; lifespan scopes are passed through."""
    app = AuditASGIMiddleware(
        _echo_app, actor_getter=_user_from_scope, generate_request_id=lambda: "ws-1"
    )
    sent = _asgi_call(app, {"type": "websocket", "headers": []})
    assert sent == [{"type": "websocket.accept", "headers": [(b"x-request-id", b"ws-1")]}]

    seen: list[str] = []

    async def lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        assert current_request_id() is None

    _asgi_call(
        AuditASGIMiddleware(lifespan_app, actor_getter=_user_from_scope), {"type": "lifespan"}
    )
    assert seen == ["lifespan"]


def test_bad_middleware_arguments_are_refused() -> None:
    """A non-callable actor getter or an invalid header name is refused at construction."""
    with pytest.raises(TypeError, match="actor_getter"):
        AuditASGIMiddleware(_echo_app, actor_getter="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="header"):
        AuditASGIMiddleware(_echo_app, actor_getter=_user_from_scope, request_id_header="a b")
    with pytest.raises(TypeError, match="actor_getter"):
        AuditWSGIMiddleware(lambda e, s: [], actor_getter=None)  # type: ignore[arg-type]


def test_accept_request_id_rules() -> None:
    """Request ids are trimmed; empty, oversized or non-printable values are refused."""
    assert accept_request_id("  abc ") == "abc"
    assert accept_request_id(None) is None
    assert accept_request_id("   ") is None
    assert accept_request_id("a\tb") is None


# --------------------------------------------------------------------------- WSGI


def _flask_app(maker: sessionmaker[Session]) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.post("/write/<code>")
    def write(code: str) -> str:
        with maker.begin() as session:
            session.add(Country(code=code, name=code))
        actor = current_actor()
        return f"{actor.id if actor else None}|{current_request_id()}"

    @app.get("/stream")
    def stream() -> flask.Response:
        def chunks() -> Iterator[str]:
            actor = current_actor()
            yield f"{actor.id if actor else None}"

        return flask.Response(chunks())

    app.wsgi_app = AuditWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        actor_getter=lambda environ: environ.get("HTTP_X_USER"),
        generate_request_id=lambda: "gen",
    )
    return app


def test_wsgi_requests_carry_their_actor_and_do_not_leak(
    sync_maker: sessionmaker[Session],
) -> None:
    """Flask requests get their actor and request id; the next request on the thread does not."""
    publisher = InMemoryPublisher()
    install_audit(sync_maker, publisher=publisher, service="flask")
    client = _flask_app(sync_maker).test_client()
    try:
        first = client.post("/write/A", headers={"X-User": "alice", "X-Request-ID": "r-1"})
        second = client.post("/write/B")
        streamed = client.get("/stream", headers={"X-User": "streamer"})
    finally:
        uninstall_audit(sync_maker)
    assert (first.text, first.headers["X-Request-ID"]) == ("alice|r-1", "r-1")
    assert (second.text, second.headers["X-Request-ID"]) == ("None|gen", "gen")
    assert streamed.text == "streamer"
    a, b = publisher.events
    assert (a.actor and a.actor.id, a.request_id) == ("alice", "r-1")
    assert (b.actor, b.request_id) == (None, "gen")
    assert current_actor() is None


def test_concurrent_wsgi_requests_in_threads(sync_maker: sessionmaker[Session]) -> None:
    """Concurrent WSGI requests on a thread pool each keep their own actor."""
    publisher = InMemoryPublisher()
    install_audit(sync_maker, publisher=publisher, service="flask")
    app = _flask_app(sync_maker)

    def call(number: int) -> str:
        return app.test_client().post(f"/write/W{number}", headers={"X-User": f"u{number}"}).text

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            texts = list(pool.map(call, range(20)))
    finally:
        uninstall_audit(sync_maker)
    assert texts == [f"u{n}|gen" for n in range(20)]
    for event in publisher.events:
        assert event.actor is not None
        assert event.actor.id == "u" + event.record_id.removeprefix("W")
