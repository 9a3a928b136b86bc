"""SNS mode (envelopes built on the publisher's thread) publishes the golden events exactly."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from capture_support import Base as ModelBase
from capture_support import sqlite_engine
from sqlalchemy.orm import Session, sessionmaker
from test_golden_events import GOLDEN, _hook, _normalized, _scenario

import sqla_audit.delivery
from sqla_audit import install_audit, uninstall_audit
from sqla_audit.publishers.sns import SNSPublisher
from tests.unit.delivery.conftest import FakeSNS

TOPIC = "arn:aws:sns:us-east-1:123456789012:golden"


@pytest.fixture
def maker() -> Iterator[sessionmaker[Session]]:
    """A fresh in-memory SQLite database with the capture models."""
    engine = sqlite_engine()
    ModelBase.metadata.create_all(engine)
    yield sessionmaker(engine, expire_on_commit=True)
    engine.dispose()


def _sns_mode(maker: sessionmaker[Session]) -> tuple[list[str], set[str]]:
    """Run the golden scenario through an SNSPublisher; the bodies sent and the threads that
    made the events' ids."""
    threads: set[str] = set()
    original = sqla_audit.delivery.new_event_ids

    def recorded(count: int) -> list[uuid.UUID]:
        threads.add(threading.current_thread().name)
        return original(count)

    sns = FakeSNS()
    publisher = SNSPublisher(TOPIC, client=sns, max_concurrency=1, register_atexit=False)
    install_audit(maker, publisher=publisher, service="golden", metadata_hook=_hook)
    patch = pytest.MonkeyPatch()
    patch.setattr(sqla_audit.delivery, "new_event_ids", recorded)
    try:
        _scenario(maker)
        assert publisher.flush(30)
    finally:
        patch.undo()
        uninstall_audit(maker)
        publisher.close(5)
    return [entry["Message"] for entry in sns.accepted], threads


def test_sns_mode_events_match_the_stored_copy(maker: sessionmaker[Session]) -> None:
    """The events SNS receives are, for the fixed scenario, exactly the stored ones, in order."""
    expected: list[dict[str, Any]] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    bodies, _ = _sns_mode(maker)
    events = _normalized(bodies)
    assert events == expected
    assert [list(e) for e in events] == [list(e) for e in expected]


def test_sns_mode_builds_envelopes_off_the_application_thread(
    maker: sessionmaker[Session],
) -> None:
    """In SNS mode build_events runs on the publisher's thread, not the committing one."""
    _, threads = _sns_mode(maker)
    assert threads
    assert threading.current_thread().name not in threads
