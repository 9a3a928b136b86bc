"""Outbox mode with the real OutboxWriter stores the golden events, byte for byte as the
envelopes' ``to_json`` writes them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Base as ModelBase
from capture_support import sqlite_engine
from sqlalchemy.orm import Session, sessionmaker
from test_golden_events import GOLDEN, _hook, _normalized, _scenario

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_table
from sqla_audit.outbox.payloads import split_payload

#: The run-dependent fields of a wire text, as they appear at the envelope's top level.
_VOLATILE = re.compile(
    r'"(event_id|transaction_id)":"[0-9a-f-]{36}"|"(occurred_at|committed_at)":"[0-9T:.Z-]{27}"'
)


def _masked(text: str) -> str:
    return _VOLATILE.sub(lambda m: f'"{m.group(1) or m.group(2)}":"?"', text)


def _maker() -> sessionmaker[Session]:
    engine = sqlite_engine()
    ModelBase.metadata.create_all(engine)
    create_outbox_table(engine)
    return sessionmaker(engine, expire_on_commit=True)


@pytest.fixture
def makers() -> Iterator[tuple[sessionmaker[Session], sessionmaker[Session]]]:
    """Two fresh in-memory SQLite databases with the capture models and the outbox table."""
    first, second = _maker(), _maker()
    yield first, second
    for maker in (first, second):
        bind = maker.kw["bind"]
        assert isinstance(bind, sa.Engine)
        bind.dispose()


def _stored_texts(maker: sessionmaker[Session]) -> list[str]:
    table = outbox_table()
    with maker() as session:
        rows = session.execute(
            sa.select(table.c.payload, table.c.layout).order_by(table.c.id)
        ).all()
    return [text for payload, layout in rows for text, _ in split_payload(payload, layout)]


def _run(maker: sessionmaker[Session], writer: Any) -> None:
    install_audit(maker, outbox=writer, service="golden", metadata_hook=_hook)
    try:
        _scenario(maker)
    finally:
        uninstall_audit(maker)


def test_outbox_table_holds_the_golden_events_as_envelopes_write_them(
    makers: tuple[sessionmaker[Session], sessionmaker[Session]],
) -> None:
    """The texts OutboxWriter stores for the fixed scenario are the stored golden events, and
    the very bytes of the envelopes' to_json (run-dependent ids and clocks aside)."""
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    envelopes = InMemoryTransactionalWriter()
    _run(makers[0], envelopes)
    _run(makers[1], OutboxWriter())
    stored = _stored_texts(makers[1])
    assert _normalized(stored) == expected
    assert [_masked(text) for text in stored] == [
        _masked(event.to_json()) for event in envelopes.events
    ]
