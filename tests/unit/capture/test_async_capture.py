"""The core capture cases with AsyncSession (aiosqlite): flushes, bulk statements, context.

Each test drives its scenario with ``asyncio.run`` (no asyncio plugin for pytest needed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from capture_support import (
    Account,
    Base,
    Child,
    Counter,
    Country,
    Parent,
    Post,
    Tag,
    User,
    brief,
    fix_sqlite_transactions,
    one_transaction,
)
from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import selectinload

from sqla_audit import ChangeEvent, audit_context, install_audit, uninstall_audit
from sqla_audit.context import current_actor
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.publishers.memory import InMemoryPublisher

T = TypeVar("T")

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def async_url(tmp_path: Path) -> str:
    """A SQLite file with the test tables, opened through aiosqlite."""
    path = tmp_path / "async.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def audited(
    url: str, *, outbox: InMemoryTransactionalWriter | None = None, **engine_kw: Any
) -> AsyncIterator[tuple[Maker, InMemoryPublisher]]:
    """An audited async_sessionmaker on ``url`` and its publisher (unused in outbox mode)."""
    engine = create_async_engine(url, **engine_kw)
    fix_sqlite_transactions(engine.sync_engine)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    publisher = InMemoryPublisher()
    if outbox is None:
        install_audit(maker, publisher=publisher, service="shop")
    else:
        install_audit(maker, outbox=outbox, service="shop")
    try:
        yield maker, publisher
    finally:
        uninstall_audit(maker)
        await engine.dispose()


def run(url: str, scenario: Callable[[Maker, InMemoryPublisher], Awaitable[T]]) -> T:
    """Run ``scenario(maker, publisher)`` on a fresh audited maker in a new event loop."""

    async def main() -> T:
        async with audited(url) as (maker, publisher):
            return await scenario(maker, publisher)

    return asyncio.run(main())


async def _seed(maker: Maker, publisher: InMemoryPublisher, count: int = 3) -> None:
    async with maker.begin() as session:
        session.add_all(
            [User(id=i, display_name=f"u{i}", email=f"u{i}@x") for i in range(1, count + 1)]
        )
    publisher.clear()


def test_insert_update_delete(async_url: str) -> None:
    """Flushed inserts, updates (of expired attributes) and deletes give exact events."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[ChangeEvent]:
        async with audit_context(actor="alice", request_id="req-1"), maker() as session:
            session.add(User(id=1, display_name="Ann", email="a@x", bio="b"))
            await session.commit()
            user = await session.get(User, 1)
            assert user is not None
            session.expire(user)
            user.email = "ann@x"  # assigned while expired: the old value is read
            await session.commit()
            await session.delete(user)
            await session.commit()
        return publisher.events

    events = run(async_url, scenario)
    row = {"id": 1, "name": "Ann", "email": "a@x", "login_count": 0, "bio": "b"}
    assert [brief(e) | {"sequence": 0} for e in events] == [
        {
            "op": "insert",
            "table": "users",
            "record_id": "1",
            "previous_record_id": None,
            "before": None,
            "after": row,
            "changed": list(row),
            "actor": "alice",
            "sequence": 0,
        },
        {
            "op": "update",
            "table": "users",
            "record_id": "1",
            "previous_record_id": None,
            "before": row,
            "after": row | {"email": "ann@x"},
            "changed": ["email"],
            "actor": "alice",
            "sequence": 0,
        },
        {
            "op": "delete",
            "table": "users",
            "record_id": "1",
            "previous_record_id": None,
            "before": row | {"email": "ann@x"},
            "after": None,
            "changed": list(row),
            "actor": "alice",
            "sequence": 0,
        },
    ]
    assert {e.request_id for e in events} == {"req-1"}


def test_rollback_and_failed_block_publish_nothing(async_url: str) -> None:
    """A rollback, or an exception inside ``async with session.begin()``, publishes nothing."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[str]:
        async with maker() as session:
            session.add(Country(code="A", name="a"))
            await session.flush()
            await session.execute(update(Country).values(name="bulk"))
            await session.rollback()

        async def fail() -> None:
            async with maker.begin() as session:
                session.add(Country(code="B", name="b"))
                await session.execute(delete(Country))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await fail()
        async with maker.begin() as session:
            session.add(Country(code="C", name="c"))
        return [e.record_id for e in publisher.events]

    assert run(async_url, scenario) == ["C"]


def test_savepoints(async_url: str) -> None:
    """A rolled-back SAVEPOINT drops its changes (flushed or bulk); a released one keeps them."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[tuple[str, str]]:
        async with maker.begin() as session:
            session.add(Country(code="A", name="a"))
            savepoint = await session.begin_nested()
            session.add(Country(code="X", name="x"))
            await session.execute(update(Country).values(name="inner"))
            await savepoint.rollback()
            async with session.begin_nested():
                await session.execute(update(Country).where(Country.code == "A").values(name="a2"))
                session.add(Country(code="B", name="b"))
        one_transaction(publisher.events)
        return [(e.record_id, (e.after or {})["name"]) for e in publisher.events]  # type: ignore[misc]

    assert run(async_url, scenario) == [("A", "a2"), ("B", "b")]


def test_bulk_statements(async_url: str) -> None:
    """Bulk UPDATE, DELETE and INSERT through AsyncSession.execute are captured."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[tuple[str, str, Any]]:
        await _seed(maker, publisher)
        async with audit_context(actor="job"), maker.begin() as session:
            result = await session.execute(
                update(User).where(User.id >= 2).values(login_count=User.login_count + 5)
            )
            assert result.rowcount == 2  # type: ignore[attr-defined]
            await session.execute(delete(User).where(User.id == 1))
            await session.execute(insert(User), [{"display_name": "new"}])
            await session.execute(update(User), [{"id": 4, "email": "by-key"}])
        assert {e.actor.id for e in publisher.events if e.actor} == {"job"}
        return [
            (e.operation.value, e.record_id, e.after and e.after["login_count"])
            for e in publisher.events
        ]

    assert run(async_url, scenario) == [
        ("update", "2", 5),
        ("update", "3", 5),
        ("delete", "1", None),
        ("insert", "4", 0),
    ]


def test_actor_flows_across_awaits_and_gathered_tasks(async_url: str) -> None:
    """Gathered tasks inherit the outer actor or set their own; none sees another's."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> dict[str, str]:
        async def write(code: str, actor: str | None) -> None:
            async def body() -> None:
                async with maker() as session:
                    session.add(Country(code=code, name=code))
                    await asyncio.sleep(0)  # let the other tasks run in between
                    await session.flush()
                    await asyncio.sleep(0)
                    await session.execute(
                        update(Country).where(Country.code == code).values(name=f"{code}!")
                    )
                    await asyncio.sleep(0)
                    await session.commit()

            if actor is None:
                await body()
            else:
                async with audit_context(actor=actor):
                    await asyncio.sleep(0)
                    await body()
                    assert current_actor() is not None

        async with audit_context(actor="outer"):
            await asyncio.gather(
                *(write(f"T{i}", f"task-{i}" if i % 2 else None) for i in range(8))
            )
        return {e.record_id: e.actor.id for e in publisher.events if e.actor}

    async def main() -> dict[str, str]:
        # One connection: the tasks interleave at every await but SQLite sees one writer.
        async with audited(async_url, pool_size=1, max_overflow=0) as (maker, publisher):
            return await scenario(maker, publisher)

    assert asyncio.run(main()) == {f"T{i}": (f"task-{i}" if i % 2 else "outer") for i in range(8)}


def test_outbox_mode(async_url: str) -> None:
    """With AsyncSession the outbox writer receives the events inside the commit."""
    writer = InMemoryTransactionalWriter()

    async def main() -> None:
        async with audited(async_url, outbox=writer) as (maker, _), maker.begin() as session:
            session.add(Country(code="A", name="a"))
            await session.flush()
            await session.execute(update(Country).values(name="b"))

    asyncio.run(main())
    (batch,) = writer.batches
    assert [(e.operation.value, e.record_id, e.after) for e in batch] == [
        ("insert", "A", {"code": "A", "name": "b"})
    ]


# --------------------------------------------------------------------------- more core rules


def test_deferred_server_default_onupdate_and_no_change(async_url: str) -> None:
    """Never-loaded deferred columns, onupdate values and no-op updates behave as with Session."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[tuple[Any, ...]]:
        async with maker.begin() as session:
            session.add(User(id=1, display_name="Ann", bio="old bio"))
            session.add(Counter(id=1, value=1))
        publisher.clear()
        async with maker.begin() as session:
            user = (await session.scalars(sa.select(User))).one()
            assert "bio" not in user.__dict__
            user.bio = "new bio"
            user.display_name = "Ann"  # same value: not a change
            counter = await session.get(Counter, 1)
            assert counter is not None
            counter.value = Counter.value + 1
        async with maker.begin() as session:
            same = await session.get(User, 1)
            assert same is not None
            same.email = None  # unchanged: nothing published
        return [
            (e.table, e.changed_columns, (e.before or {}).get("bio"), (e.after or {}).get("bio"))
            for e in publisher.events
        ]

    assert run(async_url, scenario) == [  # the get() autoflushed the user first
        ("users", ("bio",), "old bio", "new bio"),
        ("counters", ("value", "revision"), None, None),
    ]


def test_relationships_cascades_and_association_rows(async_url: str) -> None:
    """Delete-orphan cascades and many-to-many rows are captured through AsyncSession."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[tuple[str, str, str]]:
        async with audit_context(actor="alice"), maker.begin() as session:
            session.add(Parent(id=1, children=[Child(id=1, name="a"), Child(id=2, name="b")]))
            session.add(Post(id=1, title="p", tags=[Tag(id=7, label="x")]))
        publisher.clear()
        async with audit_context(actor="bob"), maker.begin() as session:
            parent = (
                await session.scalars(sa.select(Parent).options(selectinload(Parent.children)))
            ).one()
            parent.children.pop(0)
            tag = (await session.scalars(sa.select(Tag).options(selectinload(Tag.posts)))).one()
            tag.posts.clear()
        assert {e.actor.id for e in publisher.events if e.actor} == {"bob"}
        return [(e.operation.value, e.table, e.record_id) for e in publisher.events]

    assert run(async_url, scenario) == [  # the second query autoflushed the orphan first
        ("delete", "children", "1"),
        ("delete", "post_tags", "1:7"),
    ]


def test_key_change_coalescing_and_masking(async_url: str) -> None:
    """Key changes, coalescing within a transaction and masking work as with Session."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[tuple[Any, ...]]:
        async with maker.begin() as session:
            session.add(Country(code="A", name="a"))
            session.add(Account(id=1, login="ann", password_hash="secret-1", last_seen=1))
        publisher.clear()
        async with maker.begin() as session:
            country = await session.get(Country, "A")
            assert country is not None
            country.code = "B"
            await session.flush()
            country.name = "b"
            session.add(Country(code="N", name="new"))
            await session.flush()
            new = await session.get(Country, "N")
            await session.delete(new)
            account = await session.get(Account, 1)
            assert account is not None
            account.password_hash = "secret-2"
            account.last_seen = 2
        assert all("secret" not in text for text in publisher.raw_messages)
        return [
            (e.table, e.record_id, e.previous_record_id, e.changed_columns)
            for e in publisher.events
        ]

    assert run(async_url, scenario) == [
        ("countries", "B", "A", ("code", "name")),
        ("accounts", "1", None, ("password_hash",)),
    ]


def test_failed_flush_and_nested_savepoints(async_url: str) -> None:
    """A failed flush publishes nothing; nested SAVEPOINTs keep exactly what was released."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[str]:
        async with maker.begin() as session:
            session.add(Country(code="A", name="a"))
        publisher.clear()

        async def duplicate() -> None:
            async with maker.begin() as session:
                session.add(Country(code="Z", name="z"))
                await session.flush()
                session.add(Country(code="A", name="again"))

        with pytest.raises(sa.exc.IntegrityError):
            await duplicate()
        async with maker.begin() as session:
            async with session.begin_nested():
                session.add(Country(code="B", name="b"))
                inner = await session.begin_nested()
                session.add(Country(code="C", name="c"))
                await session.flush()
                await inner.rollback()
            session.add(Country(code="D", name="d"))
        return [e.record_id for e in publisher.events]

    assert run(async_url, scenario) == ["B", "D"]


def test_outbox_write_failure_fails_the_commit(async_url: str) -> None:
    """In outbox mode a failing writer makes the AsyncSession commit fail; nothing is kept."""
    writer = InMemoryTransactionalWriter(fail_with=RuntimeError("outbox down"))

    async def main() -> int:
        async with audited(async_url, outbox=writer) as (maker, _):
            with pytest.raises(RuntimeError, match="outbox down"):
                async with maker.begin() as session:
                    session.add(Country(code="A", name="a"))
            async with maker() as session:
                return len((await session.scalars(sa.select(Country))).all())

    assert asyncio.run(main()) == 0
