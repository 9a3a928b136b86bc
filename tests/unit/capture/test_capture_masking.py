"""Masked values never leave the process: scan every raw message that was published."""

from __future__ import annotations

import pytest
from capture_support import Account
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.publishers.memory import InMemoryPublisher

SECRETS = [f"pw-secret-{n}-\u00e9" for n in range(8)]


def _exercise(maker: sessionmaker[Session]) -> None:
    """Inserts, updates, coalesced flushes, savepoints and deletes of masked values."""
    with maker.begin() as session:
        session.add_all([Account(id=1, login="a", password_hash=SECRETS[0])])
        session.add(Account(id=2, login="b", password_hash=SECRETS[1]))
    with maker() as session:
        first = session.get(Account, 1)
        assert first is not None
        session.commit()
        first.password_hash = SECRETS[2]  # expired: old value fetched from the database
        session.flush()
        first.password_hash = SECRETS[3]
        session.commit()
        savepoint = session.begin_nested()
        first.password_hash = SECRETS[4]
        session.flush()
        savepoint.rollback()
        with session.begin_nested():
            first.password_hash = SECRETS[5]
        session.delete(session.get(Account, 2))
        session.commit()
        session.add(Account(id=3, login="c", password_hash=SECRETS[6]))
        session.flush()
        session.get(Account, 3).password_hash = SECRETS[7]  # type: ignore[union-attr]
        session.commit()


@pytest.mark.parametrize("mode", ["direct", "outbox"])
def test_no_masked_value_in_any_published_message(maker: sessionmaker[Session], mode: str) -> None:
    """Across every kind of change, no published JSON message contains a masked value."""
    publisher = InMemoryPublisher()
    writer = InMemoryTransactionalWriter()
    if mode == "direct":
        install_audit(maker, publisher=publisher, service="shop")
    else:
        install_audit(maker, outbox=writer, service="shop")
    try:
        _exercise(maker)
    finally:
        uninstall_audit(maker)
    raw = publisher.raw_messages if mode == "direct" else [e.to_json() for e in writer.events]
    assert len(raw) >= 5
    for message in raw:
        for secret in SECRETS:
            assert secret not in message
            assert secret.encode("unicode_escape").decode() not in message
    events = publisher.events or writer.events
    updates = [e for e in events if e.operation.value == "update"]
    assert updates
    for event in updates:
        assert "password_hash" in event.changed_columns
        assert event.masked_columns == ("password_hash",)
