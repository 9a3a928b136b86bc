"""audit_context: nesting, decorators, tasks and threads, isolation, validation."""

from __future__ import annotations

import asyncio
import contextvars
import decimal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sqla_audit.context import (
    MAX_REQUEST_ID_LENGTH,
    audit_context,
    coerce_actor,
    current_actor,
    current_context,
    current_metadata,
    current_request_id,
)
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import Actor


def _actor_id() -> str | None:
    actor = current_actor()
    return None if actor is None else actor.id


def test_outside_any_context_everything_is_empty() -> None:
    """Outside audit_context there is no actor, request id or metadata."""
    assert (current_actor(), current_request_id(), dict(current_metadata())) == (None, None, {})


def test_context_manager_sets_and_restores() -> None:
    """Values are visible inside the block and gone after it, even after an exception."""
    with audit_context(actor="alice", request_id="r1", tenant="t1") as snapshot:
        assert snapshot == current_context()
        assert (_actor_id(), current_request_id(), current_metadata()) == (
            "alice",
            "r1",
            {"tenant": "t1"},
        )
    assert current_actor() is None
    with pytest.raises(KeyError), audit_context(actor="bob"):
        raise KeyError("x")
    assert current_actor() is None


def test_nested_contexts_override_and_merge() -> None:
    """Inner values override outer ones, unset ones are inherited, metadata merges."""
    with audit_context(actor="alice", request_id="r1", tenant="t1", app="web"):
        with audit_context(actor="bob", tenant="t2"):
            assert (_actor_id(), current_request_id()) == ("bob", "r1")
            assert current_metadata() == {"tenant": "t2", "app": "web"}
        assert (_actor_id(), current_metadata()) == ("alice", {"tenant": "t1", "app": "web"})


def test_actor_forms_are_normalised() -> None:
    """A str or int becomes an Actor; an Actor keeps its attributes."""
    assert coerce_actor(42) == Actor(id="42")
    assert coerce_actor("x") == Actor(id="x")
    full = Actor(id="7", attributes={"roles": ["admin"]})
    with audit_context(actor=full):
        assert current_actor() is full


@pytest.mark.parametrize(
    ("actor", "error"),
    [(True, TypeError), (3.5, TypeError), ("", ValueError), (["a"], TypeError)],
)
def test_bad_actor_is_rejected_where_written(actor: object, error: type[Exception]) -> None:
    """A bool, float, empty string or list as actor raises when the context is created."""
    with pytest.raises(error):
        audit_context(actor=actor)  # type: ignore[arg-type]


@pytest.mark.parametrize("request_id", ["", "x" * (MAX_REQUEST_ID_LENGTH + 1), "line\nbreak", 12])
def test_bad_request_id_is_rejected(request_id: object) -> None:
    """Empty, too long, non-printable or non-string request ids are refused."""
    with pytest.raises((TypeError, ValueError)):
        audit_context(request_id=request_id)  # type: ignore[arg-type]


def test_unserializable_metadata_is_a_configuration_error() -> None:
    """Metadata must be encodable; an arbitrary object is refused at once."""
    with pytest.raises(ConfigurationError, match="serializable"):
        audit_context(handler=object())


def test_metadata_values_are_type_tagged() -> None:
    """Metadata is stored already encoded (Decimal becomes a tagged value)."""
    with audit_context(limit=decimal.Decimal("1.5")):
        assert current_metadata() == {"limit": {"$type": "decimal", "v": "1.5"}}


def test_decorator_on_sync_function_and_recursion() -> None:
    """As a decorator, each call enters its own context; recursion restores correctly."""

    @audit_context(actor="job")
    def work(depth: int) -> list[str | None]:
        seen = [_actor_id()]
        if depth:
            seen += work(depth - 1)
        return seen

    assert work(2) == ["job", "job", "job"]
    assert work.__name__ == "work"
    assert current_actor() is None


def test_decorator_on_async_function() -> None:
    """As a decorator of a coroutine function, the context covers the awaited body."""

    @audit_context(actor="async-job", request_id="r9")
    async def work() -> tuple[str | None, str | None]:
        await asyncio.sleep(0)
        return _actor_id(), current_request_id()

    assert asyncio.run(work()) == ("async-job", "r9")


def test_async_with_form() -> None:
    """``async with audit_context(...)`` works like the sync form."""

    async def main() -> str | None:
        async with audit_context(actor="a"):
            return _actor_id()

    assert asyncio.run(main()) == "a"


def test_visible_in_tasks_created_inside() -> None:
    """Tasks created inside the context see it; changes in a task do not leak back."""

    async def child() -> str | None:
        with audit_context(actor="child"):
            await asyncio.sleep(0)
        return _actor_id()

    async def main() -> tuple[str | None, str | None]:
        with audit_context(actor="parent"):
            seen = await asyncio.create_task(child())
            return seen, _actor_id()

    assert asyncio.run(main()) == ("parent", "parent")


def test_concurrent_tasks_never_see_each_other() -> None:
    """Many interleaved tasks each keep their own actor."""

    async def request(number: int) -> list[str | None]:
        with audit_context(actor=f"user-{number}"):
            seen = []
            for _ in range(5):
                await asyncio.sleep(0)
                seen.append(_actor_id())
            return seen

    async def main() -> list[list[str | None]]:
        return await asyncio.gather(*(request(n) for n in range(50)))

    results = asyncio.run(main())
    assert results == [[f"user-{n}"] * 5 for n in range(50)]


def test_visible_in_thread_run_with_copied_context() -> None:
    """A thread running in a copied context sees the actor; a bare thread does not."""
    seen: dict[str, str | None] = {}

    def record(name: str) -> None:
        seen[name] = _actor_id()

    with audit_context(actor="alice"):
        copied = contextvars.copy_context()
        thread = threading.Thread(target=copied.run, args=(record, "copied"))
        bare = threading.Thread(target=record, args=("bare",))
        thread.start()
        bare.start()
        thread.join()
        bare.join()

        async def via_to_thread() -> None:
            await asyncio.to_thread(record, "to_thread")

        asyncio.run(via_to_thread())
    assert seen == {"copied": "alice", "bare": None, "to_thread": "alice"}


def test_thread_pool_workers_do_not_leak_between_jobs() -> None:
    """Jobs in a reused worker thread do not inherit each other's context."""

    def job(number: int) -> tuple[str | None, str | None]:
        before = _actor_id()
        audit_context(actor=f"job-{number}").__enter__()  # deliberately never exited
        return before, _actor_id()

    with ThreadPoolExecutor(max_workers=1) as pool:
        results = [pool.submit(contextvars.copy_context().run, job, n).result() for n in range(3)]
    assert results == [(None, "job-0"), (None, "job-1"), (None, "job-2")]


def test_outgoing_headers_pass_the_request_id_on() -> None:
    """outgoing_headers() carries the current request id, and nothing outside a request."""
    from sqla_audit import outgoing_headers  # noqa: PLC0415 - the public, lazy export

    assert outgoing_headers() == {}
    with audit_context(request_id="req-7"):
        assert outgoing_headers() == {"X-Request-ID": "req-7"}
        assert outgoing_headers("traceparent-ish") == {"traceparent-ish": "req-7"}
