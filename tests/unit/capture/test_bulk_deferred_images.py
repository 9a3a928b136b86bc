"""Bulk statements encode their row images where the events are built, with the same bytes."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Color, Everything
from sqlalchemy import delete, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

import sqla_audit.serialization as serialization
from sqla_audit import install_audit, uninstall_audit
from sqla_audit.errors import SerializationError
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.publishers.sns import SNSPublisher
from sqla_audit.serialization import encode_value
from tests.unit.delivery.conftest import FakeSNS

pytestmark = pytest.mark.usefixtures("alice")

_COLUMNS = (
    "id",
    "amount",
    "ratio",
    "flag",
    "naive",
    "day",
    "clock",
    "span",
    "token",
    "blob",
    "color",
    "doc",
    "text",
)


def _everything(i: int) -> Everything:
    return Everything(
        id=i,
        amount=decimal.Decimal(f"{i}.5"),
        ratio=i / 3,
        flag=i % 2 == 0,
        naive=dt.datetime(2026, 1, i, 12, 30, 15, 250),
        day=dt.date(2026, 2, i),
        clock=dt.time(8, i, 5),
        span=dt.timedelta(days=i, seconds=7),
        token=uuid.UUID(int=i),
        blob=bytes([i, 255]),
        color=Color.RED,
        doc={"k": [i, "é"]},
        text=f"t\u00e9xt {i}",
    )


def _seed(maker: sessionmaker[Session], count: int = 3) -> None:
    with maker.begin() as session:
        session.add_all([_everything(i) for i in range(1, count + 1)])


def _encoded_rows(maker: sessionmaker[Session]) -> dict[str, dict[str, Any]]:
    """Each row as eager encoding gives it (the JSON text of the image, parsed)."""
    with maker() as session:
        rows = session.execute(select(*(getattr(Everything, c) for c in _COLUMNS))).all()
    return {
        str(row[0]): json.loads(
            json.dumps({c: encode_value(v) for c, v in zip(_COLUMNS, row, strict=True)})
        )
        for row in rows
    }


def test_bulk_images_encode_every_type_as_eager_encoding(maker: sessionmaker[Session]) -> None:
    """A bulk UPDATE's and DELETE's images are, on the wire, the eager encoding of the rows."""
    _seed(maker)
    published = InMemoryPublisher()
    install_audit(maker, publisher=published, service="shop")
    try:
        old = _encoded_rows(maker)
        with maker.begin() as session:
            session.execute(
                update(Everything)
                .where(Everything.id >= 2)
                .values(amount=Everything.amount + 1, text="new \u2603 text")
            )
        new = _encoded_rows(maker)
        with maker.begin() as session:
            session.execute(delete(Everything).where(Everything.id <= 2))
    finally:
        uninstall_audit(maker)
    bodies = [json.loads(text) for text in published.raw_messages]
    updates = [b for b in bodies if b["operation"] == "update"]
    deletes = [b for b in bodies if b["operation"] == "delete"]
    assert [(b["before"], b["after"]) for b in updates] == [(old[k], new[k]) for k in ("2", "3")]
    assert [list(b["before"]) for b in updates] == [list(_COLUMNS)] * 2
    assert [b["changed_columns"] for b in updates] == [["amount", "text"]] * 2
    assert [b["before"] for b in deletes] == [new["1"], new["2"]]
    assert [b["primary_key"] for b in deletes] == [{"id": 1}, {"id": 2}]


@pytest.fixture
def encoder_threads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(type name, thread id) of every Decimal, datetime and UUID the codec encodes."""
    seen: list[tuple[str, int]] = []

    def spy(kind: type, original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def encode(value: Any) -> Any:
            seen.append((kind.__name__, threading.get_ident()))
            return original(value)

        return encode

    for kind in (decimal.Decimal, dt.datetime, uuid.UUID):
        monkeypatch.setitem(serialization._EXACT, kind, spy(kind, serialization._EXACT[kind]))
    return seen


def test_sns_mode_encodes_bulk_images_off_the_application_thread(
    maker: sessionmaker[Session], encoder_threads: list[tuple[str, int]]
) -> None:
    """In SNS mode a bulk UPDATE's and DELETE's values are encoded on the publisher's
    thread: none on the application's, and the events are the eager encoding."""
    _seed(maker)
    expected_before = _encoded_rows(maker)
    sns = FakeSNS()
    publisher = SNSPublisher("arn:aws:sns:us-east-1:1:t", client=sns, register_atexit=False)
    install_audit(maker, publisher=publisher, service="shop")
    try:
        encoder_threads.clear()
        with maker.begin() as session:
            session.execute(update(Everything).values(amount=Everything.amount * 2))
        with maker.begin() as session:
            session.execute(delete(Everything).where(Everything.id == 3))
        here = threading.get_ident()
        on_application_thread = [kind for kind, thread in encoder_threads if thread == here]
        assert publisher.flush(30)
    finally:
        uninstall_audit(maker)
        publisher.close(5)
    assert on_application_thread == []
    assert {kind for kind, _thread in encoder_threads} == {"Decimal", "datetime", "UUID"}
    bodies = [json.loads(entry["Message"]) for entry in sns.accepted]
    assert [b["before"] for b in bodies[:3]] == [expected_before[k] for k in ("1", "2", "3")]
    assert bodies[0]["after"]["amount"] == {"$type": "decimal", "v": "3.0000"}


def test_bulk_update_then_orm_update_coalesces(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A row a bulk UPDATE changed and the ORM changed again in the same transaction gives
    one update from the bulk's before image to the ORM's after image."""
    _seed(maker, 2)
    published.clear()
    with maker.begin() as session:
        session.execute(
            update(Everything)
            .values(amount=decimal.Decimal("9.1"), naive=dt.datetime(2030, 5, 6))
            .execution_options(synchronize_session=False)
        )
        row = session.get(Everything, 1)
        assert row is not None
        row.text = "changed by the ORM"
        row.day = dt.date(2031, 1, 1)
    updates = [(e.record_id, list(e.changed_columns)) for e in published.events]
    assert updates == [("1", ["amount", "naive", "day", "text"]), ("2", ["amount", "naive"])]
    first = published.events[0]
    assert first.before is not None
    assert first.after is not None
    assert first.before["amount"] == {"$type": "decimal", "v": "1.5000"}
    assert first.after["amount"] == {"$type": "decimal", "v": "9.1000"}
    assert first.after["naive"] == {"$type": "datetime", "v": "2030-05-06T00:00:00"}
    assert first.after["day"] == {"$type": "date", "v": "2031-01-01"}
    assert first.after["text"] == "changed by the ORM"


# -- values whose encoding must not wait ---------------------------------------------------


class _Base(DeclarativeBase):
    pass


#: The objects :class:`_Interned` hands out, by JSON text: reading a row again gives the
#: same object, as a caching type would.
_INTERNED: dict[str, Any] = {}


class _Interned(TypeDecorator[Any]):
    """JSON whose loaded values are shared objects (one per distinct value)."""

    impl = sa.JSON
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return _INTERNED.setdefault(json.dumps(value, sort_keys=True), value)


class _Opaque:
    """A value the codec does not know."""

    def __repr__(self) -> str:
        return "_Opaque()"


class _OpaqueText(TypeDecorator[Any]):
    """Text whose loaded values are of a type the codec cannot encode."""

    impl = sa.String(20)
    cache_ok = True

    @property
    def python_type(self) -> type[Any]:
        return str  # what the planner sees: a supported type

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return _Opaque()


class _Doc(_Base):
    __tablename__ = "docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[Any] = mapped_column(_Interned)
    zone: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class _Odd(_Base):
    __tablename__ = "odds"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[Any] = mapped_column(_OpaqueText)


@pytest.fixture
def other_maker(engine: sa.Engine) -> sessionmaker[Session]:
    """A sessionmaker on the test database holding this module's own tables."""
    _Base.metadata.create_all(engine)
    _INTERNED.clear()
    return sessionmaker(engine)


def test_json_value_changed_after_the_statement_does_not_change_the_event(
    other_maker: sessionmaker[Session],
) -> None:
    """A JSON value the application changes in place after a bulk UPDATE leaves the event
    as the statement found the row (JSON values are encoded inside the statement)."""
    with other_maker.begin() as session:
        session.add(_Doc(id=1, body={"n": 1}, zone=None))
    published = InMemoryPublisher()
    install_audit(other_maker, publisher=published, service="shop")
    try:
        with other_maker.begin() as session:
            session.execute(update(_Doc).values(zone=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
            (body,) = session.scalars(select(_Doc.body)).all()
            body["n"] = 2  # the object the statement's capture read
            body["extra"] = [1]
    finally:
        uninstall_audit(other_maker)
    (event,) = published.events
    assert event.before is not None
    assert event.after is not None
    assert (event.before["body"], event.after["body"]) == ({"n": 1}, {"n": 1})
    assert json.loads(published.raw_messages[0])["after"]["body"] == {"n": 1}


@pytest.mark.parametrize("operation", ["update", "delete"])
def test_unknown_type_with_error_policy_fails_inside_the_statement(
    other_maker: sessionmaker[Session], operation: str
) -> None:
    """With unknown_types='error', a value the codec cannot encode is a capture error of the
    bulk statement itself (reported before execute() returns), not of the commit or the
    publisher; the statement's rows give no event."""
    with other_maker.begin() as session:
        session.add(_Odd(id=1, text="x"))
    errors: list[BaseException] = []
    published = InMemoryPublisher()
    install_audit(
        other_maker,
        publisher=published,
        service="shop",
        unknown_types="error",
        on_error=lambda exc, _events: errors.append(exc),
    )
    try:
        with other_maker.begin() as session:
            statement = update(_Odd).values(text="y") if operation == "update" else delete(_Odd)
            session.execute(statement)
            reported = list(errors)
    finally:
        uninstall_audit(other_maker)
    assert [type(exc) for exc in reported] == [SerializationError]
    assert "_Opaque" in str(reported[0])
    assert len(errors) == 1
    assert published.events == []
