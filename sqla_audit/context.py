"""Who is making the change: the actor, request id and metadata of the current context.

The capture listeners run deep inside ``Session.flush()``, far from the web request that
caused the change, so the actor cannot be passed as an argument. It travels in a context
variable instead (built on ``contextvars-extras``): every asyncio task gets a copy of its
creator's context, a thread started with a copied context (``contextvars.copy_context().run``,
``asyncio.to_thread``, ``loop.run_in_executor`` with a copied context) sees it too, and two
concurrent requests never see each other's values.

The variable holds one immutable :class:`AuditContext` snapshot. :func:`audit_context`
sets a new snapshot (the given fields override the outer ones, metadata is merged) and
restores the outer snapshot on exit, so it nests and never leaks, even when an exception
escapes. It works as a ``with`` / ``async with`` block and as a decorator of sync and async
functions.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar, cast

from contextvars_extras import ContextVarExt

from sqla_audit.errors import ConfigurationError
from sqla_audit.events import Actor
from sqla_audit.serialization import JSONValue, encode_mapping, escape_surrogates, is_plain_text
from sqla_audit.tracing import trace_metadata

#: What callers may pass as an actor: an :class:`Actor`, a string id or an integer id.
ActorLike: TypeAlias = Actor | str | int

#: Longest request id accepted; longer values are a configuration or client error.
MAX_REQUEST_ID_LENGTH: Final = 200

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class AuditContext:
    """An immutable snapshot of who acts and why, attached to every change captured."""

    actor: Actor | None = None
    request_id: str | None = None
    metadata: Mapping[str, JSONValue] = field(default_factory=lambda: MappingProxyType({}))


_EMPTY: Final = AuditContext()

_current: Any = ContextVarExt(name="sqla_audit.context.current", default=_EMPTY)


def coerce_actor(value: ActorLike | None) -> Actor | None:
    """Turn an accepted actor value into an :class:`Actor` (``None`` stays ``None``).

    ``bool`` is rejected although it is an ``int``: ``True`` as a user id is a bug.
    """
    if value is None:
        return value
    if isinstance(value, Actor):
        return _valid_actor(value)
    if isinstance(value, bool):
        raise TypeError("an actor cannot be a bool; pass an id (str or int) or an Actor")
    if isinstance(value, int):
        return Actor(id=str(value))
    if isinstance(value, str):
        if not value:
            raise ValueError("an actor id cannot be empty")
        return Actor(id=escape_surrogates(value))
    raise TypeError(f"an actor must be an Actor, a str or an int, not {type(value).__name__}")


def _valid_actor(actor: Actor) -> Actor:
    """``actor`` as valid Unicode: surrogates in its id and attribute keys are escaped
    (:func:`~sqla_audit.serialization.escape_surrogates`) and attribute values holding
    them are encoded (``utf16`` tag), so the actor can never make an event unpublishable."""
    text = (
        json.dumps(actor.attributes, ensure_ascii=False, default=repr) if actor.attributes else ""
    )
    if is_plain_text(actor.id) and is_plain_text(text):
        return actor
    return Actor(id=escape_surrogates(actor.id), attributes=encode_mapping(actor.attributes))


def _check_request_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"request_id must be a str, not {type(value).__name__}")
    if not value or len(value) > MAX_REQUEST_ID_LENGTH or not value.isprintable():
        raise ValueError(
            f"request_id must be 1..{MAX_REQUEST_ID_LENGTH} printable characters, got {value!r}"
        )
    return value


def _encode_metadata(metadata: Mapping[str, Any]) -> dict[str, JSONValue]:
    try:
        return encode_mapping(metadata, fallback="error")
    except TypeError as exc:  # SerializationError is a TypeError
        raise ConfigurationError(f"audit metadata must be serializable: {exc}") from exc


def current_context() -> AuditContext:
    """The snapshot in effect here (an empty one outside any :func:`audit_context`).

    Inside an OpenTelemetry span its metadata also holds the span's trace and span ids
    (see :mod:`sqla_audit.tracing`), under whatever the application set itself.
    """
    value: AuditContext = _current.get()
    tracing = trace_metadata()
    if tracing is None:
        return value
    return AuditContext(
        actor=value.actor,
        request_id=value.request_id,
        metadata=MappingProxyType({**tracing, **value.metadata}),
    )


def current_actor() -> Actor | None:
    """The actor in effect here, or ``None``."""
    return current_context().actor


def current_request_id() -> str | None:
    """The request id in effect here, or ``None``."""
    return current_context().request_id


#: The header that carries the request id between services (the middlewares' default).
REQUEST_ID_HEADER: Final = "X-Request-ID"


def outgoing_headers(header: str = REQUEST_ID_HEADER) -> dict[str, str]:
    """Headers that pass the current request id on to a service this one calls.

    ``{"X-Request-ID": "<id>"}`` inside a request (or any :func:`audit_context` with a
    request id), ``{}`` outside one. The called service's middleware reads the same header,
    so the changes one user action makes in several services share one request id::

        httpx.post(url, json=body, headers=outgoing_headers())
    """
    request_id = current_context().request_id
    return {} if request_id is None else {header: request_id}


def current_metadata() -> Mapping[str, JSONValue]:
    """The context metadata in effect here (already type-tagged JSON values)."""
    return current_context().metadata


class audit_context:  # lower case: used like a function, ``with audit_context(...)``
    """Set the actor, request id and metadata for the changes made inside.

    ``actor`` and ``request_id`` left as ``None`` keep the outer values; ``metadata``
    entries are merged over the outer ones. Values are validated when the object is
    created, so a bad actor fails where it is written, not inside a flush.

    Usable as ``with audit_context(actor="alice"):``, ``async with ...``, and as a
    decorator (``@audit_context(actor="batch-job")``) on sync and async functions; each
    call of a decorated function enters its own copy, so recursion and concurrency are safe.
    """

    __slots__ = ("_actor", "_metadata", "_request_id", "_tokens")

    def __init__(
        self,
        actor: ActorLike | None = None,
        request_id: str | None = None,
        **metadata: Any,
    ) -> None:
        self._actor = coerce_actor(actor)
        self._request_id = _check_request_id(request_id)
        self._metadata = _encode_metadata(metadata)
        self._tokens: list[Token[Any]] = []

    def _snapshot(self) -> AuditContext:
        outer: AuditContext = _current.get()  # without trace ids: those are read at capture
        metadata = outer.metadata
        if self._metadata:
            metadata = MappingProxyType({**outer.metadata, **self._metadata})
        return AuditContext(
            actor=self._actor if self._actor is not None else outer.actor,
            request_id=self._request_id if self._request_id is not None else outer.request_id,
            metadata=metadata,
        )

    def _fresh(self) -> audit_context:
        clone = object.__new__(audit_context)
        clone._actor = self._actor
        clone._request_id = self._request_id
        clone._metadata = self._metadata
        clone._tokens = []
        return clone

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> AuditContext:
        snapshot = self._snapshot()
        self._tokens.append(_current.set(snapshot))
        return snapshot

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> AuditContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator -------------------------------------------------------------------------

    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await async_fn(*args, **kwargs)

            return cast(Callable[_P, _R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with self._fresh():
                return fn(*args, **kwargs)

        return wrapper


__all__ = [
    "MAX_REQUEST_ID_LENGTH",
    "REQUEST_ID_HEADER",
    "ActorLike",
    "AuditContext",
    "audit_context",
    "coerce_actor",
    "current_actor",
    "current_context",
    "current_metadata",
    "current_request_id",
    "outgoing_headers",
]
