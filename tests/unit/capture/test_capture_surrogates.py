"""Text that is not valid Unicode (lone surrogates) never fails a commit nor an event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import Actor, audit_context, install_audit, uninstall_audit
from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_table
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.serialization import decode_row, decode_value

DOC = {"text": "\ud800", "k\udfff": ["a\udc80b", {"deep": "\udbff", "fine": "é"}]}


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    doc: Mapped[Any] = mapped_column(sa.JSON)


@pytest.fixture
def maker(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A SQLite file database with the notes and outbox tables."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'notes.db'}")
    Base.metadata.create_all(engine)
    create_outbox_table(engine)
    yield sessionmaker(engine)
    engine.dispose()


def _hook(session: Session, change: Any) -> dict[str, Any]:
    return {"hook\ud800": "v\udc00", "plain": ["\udfff"]}


def _commit(maker: sessionmaker[Session]) -> None:
    actor = Actor(id="user\ud800", attributes={"name\udc00": "n\udbff", "roles": ["r\ud800"]})
    metadata = {"m\ud800": "x\udc80", "ok": {"y": "\ud801"}}
    with audit_context(actor=actor, **metadata):
        with maker.begin() as session:
            session.add(Note(id=1, doc=DOC))
        with audit_context(actor="plain\udfff"), maker.begin() as session:
            session.get_one(Note, 1).doc = {**DOC, "text": "changed\udc00"}


def _check(payloads: list[str]) -> None:
    insert, update = (ChangeEvent.from_json(text.encode("utf-8")) for text in payloads)
    assert insert.after is not None
    assert update.before is not None
    assert update.after is not None
    assert decode_row(insert.after)["doc"] == DOC
    assert decode_row(update.before)["doc"] == DOC
    assert decode_row(update.after)["doc"] == {**DOC, "text": "changed\udc00"}
    assert insert.actor is not None
    assert update.actor is not None
    assert insert.actor.id == "user\\ud800"
    assert update.actor.id == "plain\\udfff"
    assert dict(insert.actor.attributes) == {
        "name\\udc00": {"$type": "utf16", "v": "AG7b/w=="},
        "roles": [{"$type": "utf16", "v": "AHLYAA=="}],
    }
    assert decode_value(insert.actor.attributes["name\\udc00"]) == "n\udbff"
    metadata = {key: decode_value(value) for key, value in insert.metadata.items()}
    assert metadata == {
        "m\\ud800": "x\udc80",
        "ok": {"y": "\ud801"},
        "hook\\ud800": "v\udc00",
        "plain": ["\udfff"],
    }


def test_outbox_mode_commits_and_the_rows_decode_exactly(maker: sessionmaker[Session]) -> None:
    """Outbox mode: the commit succeeds and each row's payload decodes to the exact values."""
    install_audit(maker, outbox=OutboxWriter(), service="notes", metadata_hook=_hook)
    try:
        _commit(maker)
    finally:
        uninstall_audit(maker)
    with maker() as session:
        assert session.get_one(Note, 1).doc == {**DOC, "text": "changed\udc00"}
        payloads = list(session.scalars(sa.select(outbox_table().c.payload)).all())
    _check(payloads)


def test_direct_mode_messages_are_utf8_and_decode_exactly(maker: sessionmaker[Session]) -> None:
    """Direct mode: every published message encodes as UTF-8 (what SNS is sent) and decodes."""
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="notes", metadata_hook=_hook)
    try:
        _commit(maker)
    finally:
        uninstall_audit(maker)
    _check(publisher.raw_messages)


def test_a_request_id_that_is_not_valid_unicode_is_refused_where_it_is_given() -> None:
    """A request id with a lone surrogate is refused by audit_context, never at commit."""
    with pytest.raises(ValueError, match="printable"):
        audit_context(request_id="req-\ud800")


class RawText(sa.TypeDecorator[str]):
    """Text stored as its UTF-8 bytes with surrogates kept (a database accepts any bytes)."""

    impl = sa.LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else value.encode("utf-8", "surrogatepass")

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else value.decode("utf-8", "surrogatepass")


class Label(Base):
    __tablename__ = "labels"
    code: Mapped[str] = mapped_column(RawText, primary_key=True)
    part: Mapped[str] = mapped_column(sa.String(20), primary_key=True)


def test_a_text_key_holding_a_surrogate_commits_and_names_its_record(
    maker: sessionmaker[Session],
) -> None:
    """A string primary key with a lone surrogate: the outbox commit succeeds, record_id
    escapes the surrogate (readable, valid Unicode) and primary_key keeps the exact value."""
    install_audit(maker, outbox=OutboxWriter(), service="notes")
    try:
        with maker.begin() as session:
            session.add(Label(code="a\ud800", part="x:y"))
        with maker() as session:
            (payload,) = session.scalars(sa.select(outbox_table().c.payload)).all()
    finally:
        uninstall_audit(maker)
    event = ChangeEvent.from_json(payload.encode("utf-8"))
    assert event.record_id == "a\\ud800:x%3Ay"
    assert decode_row(event.primary_key) == {"code": "a\ud800", "part": "x:y"}
