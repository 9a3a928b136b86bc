"""Fixtures of the capture unit tests: a fresh SQLite database and an audited sessionmaker.

Every event these tests produce -- through any in-memory publisher or transactional writer
-- is validated against the shipped JSON Schema as it is delivered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from capture_support import Base, sqlite_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit import ChangeEvent, audit_context, install_audit, uninstall_audit
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import assert_valid_events


@pytest.fixture(autouse=True)
def validate_every_event(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Check each delivered event against the JSON Schema; fail the test on any violation.

    (Delivery swallows exceptions by design, so violations are collected and asserted at
    the end instead of raised where they occur.)
    """
    publish = InMemoryPublisher.publish
    write = InMemoryTransactionalWriter.write
    violations: list[AssertionError] = []

    def check(events: Sequence[ChangeEvent]) -> None:
        try:
            assert_valid_events(events)
        except AssertionError as exc:
            violations.append(exc)

    def checked_publish(self: InMemoryPublisher, events: Sequence[ChangeEvent]) -> None:
        check(events)
        publish(self, events)

    def checked_write(
        self: InMemoryTransactionalWriter, connection: Any, events: Sequence[ChangeEvent]
    ) -> None:
        check(events)
        write(self, connection, events)

    monkeypatch.setattr(InMemoryPublisher, "publish", checked_publish)
    monkeypatch.setattr(InMemoryTransactionalWriter, "write", checked_write)
    yield
    assert violations == []


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An in-memory SQLite database with every test model's table."""
    engine = sqlite_engine()
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def maker(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker on the test database (not audited by itself)."""
    return sessionmaker(engine)


@pytest.fixture
def published(maker: sessionmaker[Session]) -> Iterator[InMemoryPublisher]:
    """Audit ``maker`` into an in-memory publisher; validate every event at the end."""
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="shop")
    yield publisher
    uninstall_audit(maker)
    assert_valid_events(publisher.raw_messages)


@pytest.fixture
def alice() -> Iterator[None]:
    """Run the test as actor ``alice`` with request id ``req-1``."""
    with audit_context(actor="alice", request_id="req-1"):
        yield
