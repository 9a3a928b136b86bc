"""install_audit / uninstall_audit: every kind of target, idempotency, complete removal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlmodel
from capture_support import Base, Country, fix_sqlite_transactions
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)

from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.config import AuditConfig
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.errors import ConfigurationError
from sqla_audit.install import installation_for
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import assert_valid_events, capture_events

SESSION_EVENTS = (
    "before_flush",
    "after_flush",
    "after_flush_postexec",
    "before_commit",
    "after_commit",
    "after_transaction_end",
    "do_orm_execute",
)


def _listener_count(factory: Any) -> int:
    """Listeners of the session events sqla-audit uses, as seen by a new session."""
    session = factory()
    try:
        return sum(len(getattr(session.dispatch, name)) for name in SESSION_EVENTS)
    finally:
        session.close()


def _write(session: Session, code: str) -> None:
    session.add(Country(code=code, name=code))
    session.commit()


def test_sessionmaker_target_audits_only_its_sessions(engine: Engine) -> None:
    """Installing on a sessionmaker audits its sessions and no other maker's."""
    audited, other = sessionmaker(engine), sessionmaker(engine)
    with capture_events(audited) as published:
        with audited() as session:
            _write(session, "A")
        with other() as session:
            _write(session, "B")
    assert [e.record_id for e in published.events] == ["A"]


def test_scoped_session_target(engine: Engine) -> None:
    """Installing on a scoped_session audits the sessions it hands out."""
    scoped = scoped_session(sessionmaker(engine))
    with capture_events(scoped) as published:
        scoped.add(Country(code="A", name="a"))
        scoped.commit()
        scoped.remove()
    assert [e.record_id for e in published.events] == ["A"]


def test_scoped_session_with_plain_factory_is_rejected(engine: Engine) -> None:
    """A scoped_session whose factory is a plain function cannot be audited: clear error."""
    scoped = scoped_session(lambda: Session(engine))
    with pytest.raises(ConfigurationError, match="scoped_session"):
        install_audit(scoped, publisher=InMemoryPublisher(), service="s")
    assert installation_for(scoped) is None


def test_session_subclass_target(engine: Engine) -> None:
    """Installing on a Session subclass audits its instances, not plain Sessions."""

    class AppSession(Session):
        pass

    with capture_events(AppSession) as published:
        with AppSession(engine) as session:
            _write(session, "A")
        with Session(engine) as session:
            _write(session, "B")
    assert [e.record_id for e in published.events] == ["A"]
    assert _listener_count(AppSession) == 0


def test_global_session_class_target_and_removal(engine: Engine) -> None:
    """Installing on Session itself audits every session; uninstall leaves no listener."""
    before = _listener_count(Session)
    with capture_events(Session) as published:
        with Session(engine) as session:
            _write(session, "A")
        with sessionmaker(engine)() as session:
            _write(session, "B")
    assert [e.record_id for e in published.events] == ["A", "B"]
    assert _listener_count(Session) == before


def test_sqlmodel_session_target(tmp_path: Path) -> None:
    """SQLModel's Session subclass can be audited like any Session class."""

    class Hero(sqlmodel.SQLModel, table=True):
        __tablename__ = "heroes"
        id: int | None = sqlmodel.Field(default=None, primary_key=True)
        name: str

    engine = sqlmodel.create_engine(f"sqlite:///{tmp_path / 'heroes.db'}")
    sqlmodel.SQLModel.metadata.create_all(engine, tables=[Hero.__table__])  # type: ignore[list-item]

    class HeroSession(sqlmodel.Session):
        pass

    with capture_events(HeroSession) as published, HeroSession(engine) as session:
        hero = Hero(name="Deadpond")
        session.add(hero)
        session.commit()
        hero.name = "Dead Pond"
        session.commit()
    engine.dispose()
    insert, update = published.events
    assert (insert.table, insert.after) == ("heroes", {"id": 1, "name": "Deadpond"})
    assert (update.before, update.after) == (
        {"id": 1, "name": "Deadpond"},
        {"id": 1, "name": "Dead Pond"},
    )
    assert_valid_events(published.events)


# --------------------------------------------------------------------------- async


@pytest.fixture
def async_db(tmp_path: Path) -> str:
    """A SQLite file with the test tables, for aiosqlite."""
    path = tmp_path / "async.db"
    sync_engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(sync_engine)
    sync_engine.dispose()
    return f"sqlite+aiosqlite:///{path}"


def test_async_sessionmaker_target(async_db: str) -> None:
    """An async_sessionmaker is audited through a private sync class; context flows in."""

    async def scenario() -> InMemoryPublisher:
        engine = create_async_engine(async_db)
        fix_sqlite_transactions(engine.sync_engine)
        maker = async_sessionmaker(engine)
        other = async_sessionmaker(engine)
        publisher = InMemoryPublisher()
        install_audit(maker, publisher=publisher, service="shop")
        try:
            async with audit_context(actor="async-user"):
                async with maker() as session:
                    session.add(Country(code="A", name="a"))
                    await session.commit()
                    country = await session.get(Country, "A")
                    assert country is not None
                    country.name = "a2"
                    async with session.begin_nested():
                        session.add(Country(code="X", name="rolled back"))
                        await session.flush()
                    await session.commit()
                async with other() as session:
                    session.add(Country(code="B", name="b"))
                    await session.commit()
        finally:
            uninstall_audit(maker)
            await engine.dispose()
        assert maker.kw.get("sync_session_class") is None
        return publisher

    publisher = asyncio.run(scenario())
    events = publisher.events
    assert [(e.record_id, e.operation.value) for e in events] == [
        ("A", "insert"),
        ("A", "update"),
        ("X", "insert"),
    ]
    assert {e.actor.id for e in events if e.actor} == {"async-user"}
    assert_valid_events(events)


def test_async_scoped_session_and_custom_sync_class_restored(async_db: str) -> None:
    """async_scoped_session targets its maker; a custom sync_session_class is restored."""

    class MySync(Session):
        pass

    async def scenario() -> list[str]:
        engine = create_async_engine(async_db)
        maker = async_sessionmaker(engine, sync_session_class=MySync)
        scoped = async_scoped_session(maker, scopefunc=asyncio.current_task)
        with capture_events(scoped) as published:
            assert maker.kw["sync_session_class"] is not MySync
            scoped.add(Country(code="S", name="s"))
            await scoped.commit()
            await scoped.remove()
        assert maker.kw["sync_session_class"] is MySync
        await engine.dispose()
        return [e.record_id for e in published.events]

    assert asyncio.run(scenario()) == ["S"]


def test_async_session_class_is_rejected() -> None:
    """An AsyncSession class is not a valid target: the error names what to pass."""
    with pytest.raises(ConfigurationError, match="async_sessionmaker"):
        install_audit(AsyncSession, publisher=InMemoryPublisher(), service="s")


# --------------------------------------------------------------------------- idempotency


def test_install_twice_with_same_arguments_is_one_installation(engine: Engine) -> None:
    """A second identical install returns the same installation and adds no listener."""
    maker = sessionmaker(engine)
    publisher = InMemoryPublisher()
    first = install_audit(maker, publisher=publisher, service="shop")
    count = _listener_count(maker)
    second = install_audit(maker, publisher=publisher, service="shop")
    try:
        assert second is first
        assert _listener_count(maker) == count
        with maker() as session:
            _write(session, "A")
        assert len(publisher.events) == 1
    finally:
        uninstall_audit(maker)


def test_install_with_other_settings_is_refused(engine: Engine) -> None:
    """Re-installing with different settings raises until uninstalled."""
    maker = sessionmaker(engine)
    install_audit(maker, publisher=InMemoryPublisher(), service="shop")
    try:
        with pytest.raises(ConfigurationError, match="already installed"):
            install_audit(maker, publisher=InMemoryPublisher(), service="shop")
    finally:
        assert uninstall_audit(maker) is True
    assert uninstall_audit(maker) is False


def test_uninstall_removes_every_listener(engine: Engine) -> None:
    """After uninstall no sqla-audit listener remains and nothing more is captured."""
    maker = sessionmaker(engine)
    baseline = _listener_count(maker)
    publisher = InMemoryPublisher()
    installation = install_audit(maker, outbox=InMemoryTransactionalWriter(), service="shop")
    listeners = list(installation._listeners)
    assert len(listeners) == 7
    uninstall_audit(maker)
    for target, name, fn in listeners:
        assert not event.contains(target, name, fn)
    assert _listener_count(maker) == baseline
    install_audit(maker, publisher=publisher, service="shop")
    uninstall_audit(maker)
    with maker() as session:
        _write(session, "A")
    assert publisher.events == []


def test_capture_events_refuses_an_audited_target(engine: Engine) -> None:
    """capture_events on a target that is already audited is an error."""
    maker = sessionmaker(engine)
    with capture_events(maker):
        nested = capture_events(maker)
        with pytest.raises(RuntimeError, match="already audited"):
            nested.__enter__()


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        (
            {"publisher": InMemoryPublisher(), "outbox": InMemoryTransactionalWriter()},
            "exactly one",
        ),
        ({"publisher": object()}, "publish/flush/close"),
        ({"outbox": object()}, "write"),
        ({"publisher": InMemoryPublisher()}, "service"),
    ],
)
def test_invalid_install_arguments(engine: Engine, kwargs: dict[str, Any], message: str) -> None:
    """Missing or contradictory delivery settings are refused with a clear error."""
    with pytest.raises(ConfigurationError, match=message):
        install_audit(sessionmaker(engine), **kwargs)


@pytest.mark.parametrize("target", [object(), "sessionmaker", 42])
def test_invalid_target(target: Any) -> None:
    """A target that is not a session factory is refused."""
    with pytest.raises(ConfigurationError, match="target must be"):
        install_audit(target, publisher=InMemoryPublisher(), service="s")


def test_session_instance_is_refused(engine: Engine) -> None:
    """A Session instance is refused with a hint to pass its factory."""
    with Session(engine) as session, pytest.raises(ConfigurationError, match="sessionmaker"):
        install_audit(session, publisher=InMemoryPublisher(), service="s")


def test_config_object_and_individual_settings_are_exclusive(engine: Engine) -> None:
    """Passing config= together with individual settings is refused."""
    with pytest.raises(ConfigurationError, match="either config"):
        install_audit(
            sessionmaker(engine),
            publisher=InMemoryPublisher(),
            config=AuditConfig(service="a"),
            service="b",
        )


# --------------------------------------------------------------------------- models=


class _OtherBase(DeclarativeBase):
    pass


class _BadMask(_OtherBase):
    __tablename__ = "bad_mask"
    __audit__ = {"mask": ["nope"]}
    id: Mapped[int] = mapped_column(primary_key=True)


class Opaque:
    """A value the codec does not know."""

    def __repr__(self) -> str:
        return "Opaque()"


class _Pickled(_OtherBase):
    __tablename__ = "pickled"
    id: Mapped[int] = mapped_column(primary_key=True)
    blob: Mapped[Any] = mapped_column(sa.PickleType)


def test_models_are_validated_at_install(engine: Engine) -> None:
    """models= plans the given models at install: a bad __audit__ fails right there."""
    maker = sessionmaker(engine)
    with pytest.raises(ConfigurationError, match="unknown column 'nope'"):
        install_audit(maker, publisher=InMemoryPublisher(), service="s", models=[_BadMask])
    assert installation_for(maker) is None
    installation = install_audit(
        maker, publisher=InMemoryPublisher(), service="s", models=[Base, Base.registry, Country]
    )
    assert installation.planner.model(sa.inspect(Country)).enabled
    uninstall_audit(maker)


def test_unknown_types_error_policy_rejects_unserializable_column(engine: Engine) -> None:
    """With unknown_types='error' a column type the codec cannot restore is refused."""
    maker = sessionmaker(engine)
    with pytest.raises(ConfigurationError, match=r"_Pickled\.blob.*cannot be serialized"):
        install_audit(
            maker,
            publisher=InMemoryPublisher(),
            service="s",
            unknown_types="error",
            models=[_Pickled],
        )


def test_unknown_types_repr_policy_sends_readable_text(tmp_path: Path) -> None:
    """With the default 'repr' policy an unserializable value travels as tagged repr text."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    _OtherBase.metadata.create_all(engine, tables=[_Pickled.__table__])  # type: ignore[list-item]
    maker = sessionmaker(engine)
    with capture_events(maker) as published, maker.begin() as session:
        session.add(_Pickled(id=1, blob=Opaque()))
    engine.dispose()
    (created,) = published.events
    assert created.after is not None
    blob = created.after["blob"]
    assert isinstance(blob, dict)
    assert (blob["$type"], blob["v"]) == ("repr", "Opaque()")
    assert_valid_events(published.events)


def test_models_argument_rejects_non_models(engine: Engine) -> None:
    """models= with something that is not a model, base or registry is refused."""
    with pytest.raises(ConfigurationError, match="models="):
        install_audit(
            sessionmaker(engine), publisher=InMemoryPublisher(), service="s", models=[object()]
        )
