"""The core capture cases with AsyncSession on real drivers: aiosqlite and asyncpg.

Each test drives its scenario with ``asyncio.run``; the PostgreSQL URL is the module's
fresh database with the ``postgresql+asyncpg`` driver.
"""

from __future__ import annotations

import asyncio
import decimal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from capture_support import Base, Country, Manager, User, brief, fix_sqlite_transactions
from sqlalchemy import delete, insert, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from sqla_audit import ChangeEvent, audit_context, install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import assert_valid_events

T = TypeVar("T")
Maker = async_sessionmaker[AsyncSession]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="aiosqlite"),
        pytest.param("postgres", id="asyncpg", marks=pytest.mark.postgres),
    ],
)
def async_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An async URL of a fresh database with the capture test tables."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("aiosqlite") / "test.db"
        sync_url = f"sqlite:///{path}"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        sync_url = request.getfixturevalue("postgres_url")
        url = make_url(sync_url).set(drivername="postgresql+asyncpg").render_as_string(False)
    engine = sa.create_engine(sync_url)
    Base.metadata.create_all(engine)
    try:
        yield url
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


@asynccontextmanager
async def audited(url: str) -> AsyncIterator[tuple[Maker, InMemoryPublisher]]:
    """An audited async_sessionmaker on empty tables, and its publisher."""
    sqlite = url.startswith("sqlite")
    # SQLite: one connection, so interleaved tasks never contend for the database lock.
    engine = create_async_engine(url, **({"pool_size": 1, "max_overflow": 0} if sqlite else {}))
    fix_sqlite_transactions(engine.sync_engine)
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(table.delete())
    maker = async_sessionmaker(engine, expire_on_commit=False)
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="shop")
    try:
        yield maker, publisher
    finally:
        uninstall_audit(maker)
        await engine.dispose()


def run(url: str, scenario: Callable[[Maker, InMemoryPublisher], Awaitable[T]]) -> T:
    """Run ``scenario(maker, publisher)`` in a new event loop; check the events' schema."""

    async def main() -> T:
        async with audited(url) as (maker, publisher):
            outcome = await scenario(maker, publisher)
            events = publisher.events
            assert_valid_events([*events[:20], *events[-20:]])
            return outcome

    return asyncio.run(main())


def test_flushed_insert_update_delete(async_url: str) -> None:
    """ORM flushes through AsyncSession give exact images and the context's actor."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[ChangeEvent]:
        async with audit_context(actor="alice", request_id="req-1"), maker() as session:
            session.add(User(id=1, display_name="Ann", email="a@x"))
            session.add(Manager(id=2, name="m", budget=decimal.Decimal("5.00")))
            await session.commit()
            user = await session.get(User, 1)
            assert user is not None
            session.expire(user)
            user.email = "ann@x"
            await session.commit()
            await session.delete(user)
            await session.commit()
        return publisher.events

    events = run(async_url, scenario)
    row = {"id": 1, "name": "Ann", "email": "a@x", "login_count": 0, "bio": None}
    assert [(e.operation.value, e.record_id, e.before, e.after) for e in events] == [
        ("insert", "1", None, row),
        (
            "insert",
            "2",
            None,
            {
                "id": 2,
                "name": "m",
                "kind": "manager",
                "language": None,
                "budget": {"$type": "decimal", "v": "5.00"},
            },
        ),
        ("update", "1", row, row | {"email": "ann@x"}),
        ("delete", "1", row | {"email": "ann@x"}, None),
    ]
    assert {(brief(e)["actor"], e.request_id) for e in events} == {("alice", "req-1")}


def test_rollback_and_savepoints(async_url: str) -> None:
    """Rolled-back work (transaction or SAVEPOINT, flushed or bulk) publishes nothing."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[tuple[str, Any]]:
        async with maker() as session:
            session.add(Country(code="R", name="r"))
            await session.flush()
            await session.execute(update(Country).values(name="bulk"))
            await session.rollback()
        async with maker.begin() as session:
            session.add(Country(code="A", name="a"))
            savepoint = await session.begin_nested()
            session.add(Country(code="X", name="x"))
            await session.execute(delete(Country).where(Country.code == "A"))
            await savepoint.rollback()
            async with session.begin_nested():
                await session.execute(update(Country).values(name="kept"))
        return [(e.record_id, e.after) for e in publisher.events]

    assert run(async_url, scenario) == [("A", {"code": "A", "name": "kept"})]


def test_bulk_statements_of_1000_rows(async_url: str) -> None:
    """Bulk UPDATE and DELETE of 1,000 rows and a keyless bulk INSERT through AsyncSession."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> list[ChangeEvent]:
        async with maker.begin() as session:
            await session.execute(
                insert(User), [{"id": i, "display_name": f"u{i}"} for i in range(1, 1001)]
            )
        assert len(publisher.events) == 1000
        publisher.clear()
        async with audit_context(actor="job"), maker.begin() as session:
            await session.execute(update(User).values(login_count=User.login_count + 1))
        updates = publisher.events
        publisher.clear()
        async with maker.begin() as session:
            await session.execute(delete(User).where(User.id > 500))
            await session.execute(
                insert(Manager), [{"name": "g1", "budget": 1}, {"name": "g2", "budget": 2}]
            )
        assert [e.operation.value for e in publisher.events] == ["delete"] * 500 + ["insert"] * 2
        assert [e.after and e.after["name"] for e in publisher.events[-2:]] == ["g1", "g2"]
        return updates

    updates = run(async_url, scenario)
    assert len(updates) == 1000
    for event in updates:
        i = int(event.record_id)
        assert event.before == {
            "id": i,
            "name": f"u{i}",
            "email": None,
            "login_count": 0,
            "bio": None,
        }
        assert event.after is not None
        assert event.after["login_count"] == 1
        assert event.actor is not None
        assert event.actor.id == "job"


def test_actor_across_gathered_tasks(async_url: str) -> None:
    """Concurrent tasks keep their own actor (or inherit the outer one) across awaits."""

    async def scenario(maker: Maker, publisher: InMemoryPublisher) -> dict[str, str]:
        async def write(code: str, actor: str | None) -> None:
            async def body() -> None:
                async with maker() as session:
                    session.add(Country(code=code, name=code))
                    await asyncio.sleep(0)
                    await session.flush()
                    await session.execute(
                        update(Country).where(Country.code == code).values(name=f"{code}!")
                    )
                    await asyncio.sleep(0)
                    await session.commit()

            if actor is None:
                await body()
            else:
                async with audit_context(actor=actor):
                    await body()

        async with audit_context(actor="outer"):
            await asyncio.gather(
                *(write(f"T{i}", f"task-{i}" if i % 2 else None) for i in range(10))
            )
        return {e.record_id: e.actor.id for e in publisher.events if e.actor}

    assert run(async_url, scenario) == {
        f"T{i}": (f"task-{i}" if i % 2 else "outer") for i in range(10)
    }
