"""Two installations covering one session each deliver their own events with their own config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Account, Country
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import capture_events


class AppSession(Session):
    """The application's own Session class (installing on it covers every maker of it)."""


@pytest.fixture
def app_maker(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker whose sessions are ``AppSession`` objects."""
    return sessionmaker(engine, class_=AppSession)


def _work(maker: sessionmaker[Session]) -> None:
    """Insert, update and delete a country and an account, in three transactions."""
    with maker.begin() as session:
        session.add(Country(code="fr", name="France"))
        session.add(Account(id=1, login="ann", password_hash="pw-1"))
    with maker.begin() as session:
        session.get_one(Country, "fr").name = "French Republic"
        session.get_one(Account, 1).login = "anne"
    with maker.begin() as session:
        session.delete(session.get_one(Country, "fr"))
        session.delete(session.get_one(Account, 1))


def _summary(events: list[ChangeEvent]) -> list[tuple[str, str, str, str]]:
    return [(e.service, e.operation.value, e.table, e.record_id) for e in events]


#: Every change of :func:`_work` in delivery order (``get_one`` autoflushes the country first).
ALL = [
    ("{}", "insert", "countries", "fr"),
    ("{}", "insert", "accounts", "1"),
    ("{}", "update", "countries", "fr"),
    ("{}", "update", "accounts", "1"),
    ("{}", "delete", "countries", "fr"),
    ("{}", "delete", "accounts", "1"),
]


def _expected(service: str, *, without: str | None = None) -> list[tuple[str, str, str, str]]:
    return [(service, op, table, rid) for _s, op, table, rid in ALL if table != without]


def _events(sink: Any) -> list[ChangeEvent]:
    return list(sink.events)


@pytest.mark.parametrize("class_mode", ["direct", "outbox"])
def test_class_and_maker_installations_are_independent(
    app_maker: sessionmaker[Session], class_mode: str
) -> None:
    """A Session-class and a sessionmaker installation each publish exactly their own events."""
    class_sink: Any = (
        InMemoryPublisher() if class_mode == "direct" else InMemoryTransactionalWriter()
    )
    maker_sink = InMemoryPublisher()
    delivery: dict[str, Any] = (
        {"publisher": class_sink} if class_mode == "direct" else {"outbox": class_sink}
    )
    install_audit(AppSession, service="app", exclude_tables=["accounts"], **delivery)
    install_audit(app_maker, publisher=maker_sink, service="maker", exclude_tables=["countries"])
    try:
        _work(app_maker)
    finally:
        uninstall_audit(app_maker)
        uninstall_audit(AppSession)
    assert _summary(_events(class_sink)) == _expected("app", without="accounts")
    assert _summary(maker_sink.events) == _expected("maker", without="countries")
    for event in maker_sink.events:
        assert event.masked_columns == ("password_hash",)
        assert "pw-1" not in event.to_json()


def test_capture_events_over_an_application_installation(engine: Engine) -> None:
    """capture_events() on a maker sees every change; the app's Session install keeps its own."""
    app_publisher = InMemoryPublisher()
    install_audit(Session, publisher=app_publisher, service="app", exclude_tables=["accounts"])
    try:
        maker: sessionmaker[Session] = sessionmaker(engine)
        with capture_events(maker, service="test") as published:
            _work(maker)
    finally:
        uninstall_audit(Session)
    assert _summary(published.events) == _expected("test")
    assert _summary(app_publisher.events) == _expected("app", without="accounts")


def test_each_installation_has_its_own_metadata_hook(app_maker: sessionmaker[Session]) -> None:
    """Each installation's metadata hook sees and decorates only its own events."""
    seen: dict[str, list[str]] = {"app": [], "maker": []}

    def hook(name: str) -> Any:
        def add(session: Session, change: Any) -> dict[str, str]:
            seen[name].append(change.table)
            return {"by": name}

        return add

    first, second = InMemoryPublisher(), InMemoryPublisher()
    install_audit(AppSession, publisher=first, service="app", metadata_hook=hook("app"))
    install_audit(
        app_maker,
        publisher=second,
        service="maker",
        metadata_hook=hook("maker"),
        exclude_tables=["accounts"],
    )
    try:
        _work(app_maker)
    finally:
        uninstall_audit(app_maker)
        uninstall_audit(AppSession)
    assert [dict(e.metadata) for e in first.events] == [{"by": "app"}] * 6
    assert [dict(e.metadata) for e in second.events] == [{"by": "maker"}] * 3
    assert sorted(seen["app"]) == sorted(["accounts", "countries"] * 3)
    assert seen["maker"] == ["countries"] * 3


def test_bulk_statements_reach_both_installations(app_maker: sessionmaker[Session]) -> None:
    """A bulk UPDATE/INSERT/DELETE runs once and each installation records it under its rules."""
    first, second = InMemoryPublisher(), InMemoryPublisher()
    install_audit(AppSession, publisher=first, service="app")
    install_audit(app_maker, publisher=second, service="maker", exclude_tables=["accounts"])
    try:
        with app_maker.begin() as session:
            session.add(Country(code="fr", name="France"))
            session.add(Account(id=1, login="ann", password_hash="pw-1"))
        with app_maker.begin() as session:
            session.execute(sa.update(Country).values(name="République"))
            session.execute(sa.update(Account).values(login="anne"))
            session.execute(sa.insert(Country).values(code="de", name="Germany"))
            session.execute(sa.delete(Country).where(Country.code == "de"))
    finally:
        uninstall_audit(app_maker)
        uninstall_audit(AppSession)
    assert _summary(first.events) == [
        ("app", "insert", "countries", "fr"),
        ("app", "insert", "accounts", "1"),
        ("app", "update", "countries", "fr"),
        ("app", "update", "accounts", "1"),
    ]
    assert _summary(second.events) == [
        ("maker", "insert", "countries", "fr"),
        ("maker", "update", "countries", "fr"),
    ]
    with app_maker() as session:
        assert session.scalars(sa.select(Country.name)).all() == ["République"]


@pytest.fixture(autouse=True)
def _no_leftover_installation() -> Iterator[None]:
    yield
    assert uninstall_audit(Session) is False
