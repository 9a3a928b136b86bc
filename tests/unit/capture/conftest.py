"""Fixtures of the capture unit tests: a fresh SQLite database and an audited sessionmaker.

Every event published through the ``published`` fixture is validated against the shipped
JSON Schema when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from capture_support import Base, sqlite_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit import audit_context, install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.testing import assert_valid_events


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
