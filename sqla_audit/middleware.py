"""Web middleware that puts each request's actor and request id into the audit context.

Both middlewares take an ``actor_getter`` -- your function that reads the actor from the
request (a session cookie, a verified token...) and returns an
:class:`~sqla_audit.events.Actor`, a string or integer id, or ``None`` for anonymous
requests. Every change flushed while the request is handled carries that actor and the
request id.

The request id is read from a configurable header (``X-Request-ID`` by default). A value
that is absent, longer than :data:`~sqla_audit.context.MAX_REQUEST_ID_LENGTH` or not
printable is not trusted: a new id is generated instead (``uuid4`` text by default). With
``echo_request_id`` (the default) the id is returned in the same response header, so
clients and logs can be correlated with the audit trail.

:class:`AuditASGIMiddleware` is a pure ASGI middleware (not Starlette's
``BaseHTTPMiddleware``, which runs the endpoint in another task and breaks context
propagation and streaming); it handles ``http`` and ``websocket`` scopes and passes
``lifespan`` through. Each ASGI request already runs in its own task, hence its own context
copy; the middleware sets the audit context for the duration of the call and restores it.

:class:`AuditWSGIMiddleware` runs each request -- including the iteration of its response
body -- in a fresh copy of the context, because WSGI servers reuse threads and a value set
in a thread's context would otherwise be seen by the next request on that thread.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any, TypeAlias

from sqla_audit.context import MAX_REQUEST_ID_LENGTH, ActorLike, audit_context

logger = logging.getLogger(__name__)

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGIActorGetter: TypeAlias = Callable[[Scope], "ActorLike | Awaitable[ActorLike | None] | None"]

WSGIEnviron: TypeAlias = dict[str, Any]
StartResponse: TypeAlias = Callable[..., Any]
WSGIApp: TypeAlias = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]
WSGIActorGetter: TypeAlias = Callable[[WSGIEnviron], "ActorLike | None"]

DEFAULT_REQUEST_ID_HEADER = "x-request-id"


def _new_request_id() -> str:
    return str(uuid.uuid4())


def _header_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not name
        or not all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in name)
    ):
        raise ValueError(f"request_id_header must be an HTTP header name, got {name!r}")
    return name.lower()


def accept_request_id(value: str | None) -> str | None:
    """The header value if it is usable as a request id, else ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_REQUEST_ID_LENGTH or not value.isprintable():
        return None
    return value


class AuditASGIMiddleware:
    """Pure ASGI middleware: audit context (actor, request id) for each request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        actor_getter: ASGIActorGetter,
        request_id_header: str = DEFAULT_REQUEST_ID_HEADER,
        generate_request_id: Callable[[], str] = _new_request_id,
        echo_request_id: bool = True,
    ) -> None:
        if not callable(actor_getter):
            raise TypeError("actor_getter must be callable: (scope) -> actor or None")
        self.app = app
        self.actor_getter = actor_getter
        self.header = _header_name(request_id_header)
        self._header_bytes = self.header.encode("ascii")
        self.generate_request_id = generate_request_id
        self.echo_request_id = echo_request_id

    def _request_id(self, scope: Scope) -> str:
        for name, value in scope.get("headers") or ():
            if name.lower() == self._header_bytes:
                accepted = accept_request_id(value.decode("latin-1"))
                if accepted is not None:
                    return accepted
                logger.debug("ignoring an unusable %s header", self.header)
                break
        return self.generate_request_id()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        actor = self.actor_getter(scope)
        if inspect.isawaitable(actor):
            actor = await actor
        context = audit_context(actor=actor, request_id=request_id)

        if self.echo_request_id:
            header = (self._header_bytes, request_id.encode("latin-1", "replace"))

            async def send_with_id(message: Message) -> None:
                if message.get("type") in ("http.response.start", "websocket.accept"):
                    headers = list(message.get("headers") or ())
                    if not any(name.lower() == self._header_bytes for name, _ in headers):
                        headers.append(header)
                    message["headers"] = headers
                await send(message)

            with context:
                await self.app(scope, receive, send_with_id)
        else:
            with context:
                await self.app(scope, receive, send)


class _ContextBoundResponse:
    """A WSGI response iterable that is iterated and closed inside a given context."""

    def __init__(self, result: Iterable[bytes], context: contextvars.Context) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._context = context

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._context.run(iter, self._result)
        chunk: bytes = self._context.run(next, self._iterator)
        return chunk

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            self._context.run(close)


class AuditWSGIMiddleware:
    """WSGI middleware: audit context (actor, request id) for each request."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        actor_getter: WSGIActorGetter,
        request_id_header: str = DEFAULT_REQUEST_ID_HEADER,
        generate_request_id: Callable[[], str] = _new_request_id,
        echo_request_id: bool = True,
    ) -> None:
        if not callable(actor_getter):
            raise TypeError("actor_getter must be callable: (environ) -> actor or None")
        self.app = app
        self.actor_getter = actor_getter
        self.header = _header_name(request_id_header)
        self._environ_key = "HTTP_" + self.header.upper().replace("-", "_")
        self._response_header = "-".join(part.capitalize() for part in self.header.split("-"))
        self.generate_request_id = generate_request_id
        self.echo_request_id = echo_request_id

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        context = contextvars.copy_context()
        result = context.run(self._call, environ, start_response)
        return _ContextBoundResponse(result, context)

    def _call(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        request_id = accept_request_id(environ.get(self._environ_key))
        if request_id is None:
            request_id = self.generate_request_id()
        actor = self.actor_getter(environ)
        # Entered and never exited on purpose: this context copy belongs to this request
        # alone and is dropped with it.
        audit_context(actor=actor, request_id=request_id).__enter__()

        if not self.echo_request_id:
            return self.app(environ, start_response)

        header = (self._response_header, request_id)

        def start_with_id(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            if not any(name.lower() == self.header for name, _ in headers):
                headers = [*headers, header]
            return start_response(status, headers, *args)

        return self.app(environ, start_with_id)


__all__ = [
    "DEFAULT_REQUEST_ID_HEADER",
    "AuditASGIMiddleware",
    "AuditWSGIMiddleware",
    "accept_request_id",
]
