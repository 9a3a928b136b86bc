"""Flushes encode their row images where the events are built, with the same bytes."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Color, Everything
from sqlalchemy.orm import Session, sessionmaker
from test_bulk_deferred_images import (
    _COLUMNS,
    _Doc,
    _encoded_rows,
    _everything,
    _Odd,
    _Opaque,
    encoder_threads,
    other_maker,
)

from sqla_audit import flush_images, install_audit, uninstall_audit
from sqla_audit.config import AuditConfig, plan_model
from sqla_audit.errors import SerializationError
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.publishers.sns import SNSPublisher
from sqla_audit.serialization import encode_value
from tests.unit.delivery.conftest import FakeSNS

pytestmark = pytest.mark.usefixtures("alice")
__all__ = ["encoder_threads", "other_maker"]  # fixtures shared with the bulk tests


def test_sns_mode_encodes_flush_images_off_the_application_thread(
    maker: sessionmaker[Session], encoder_threads: list[tuple[str, int]]
) -> None:
    """In SNS mode the values of a flush's inserts, updates and deletes are encoded on the
    publisher's thread: none on the application's, and the events are the eager encoding."""
    sns = FakeSNS()
    publisher = SNSPublisher("arn:aws:sns:us-east-1:1:t", client=sns, register_atexit=False)
    install_audit(maker, publisher=publisher, service="shop")
    try:
        encoder_threads.clear()
        with maker.begin() as session:
            session.add_all([_everything(1), _everything(2)])
        inserted = _encoded_rows(maker)
        encoder_threads.clear()
        with maker.begin() as session:
            one = session.get(Everything, 1)
            assert one is not None
            one.amount = decimal.Decimal("7.25")
            one.naive = dt.datetime(2027, 1, 1)
            session.delete(session.get(Everything, 2))
        here = threading.get_ident()
        on_application_thread = [kind for kind, thread in encoder_threads if thread == here]
        assert publisher.flush(30)
        updated = _encoded_rows(maker)
    finally:
        uninstall_audit(maker)
        publisher.close(5)
    assert on_application_thread == []
    bodies = [json.loads(entry["Message"]) for entry in sns.accepted]
    assert [(b["operation"], b["record_id"]) for b in bodies] == [
        ("insert", "1"),
        ("insert", "2"),
        ("update", "1"),
        ("delete", "2"),
    ]
    written = [
        json.loads(json.dumps({c: encode_value(getattr(_everything(i), c)) for c in _COLUMNS}))
        for i in (1, 2)
    ]
    assert [b["after"] for b in bodies[:2]] == written
    assert [list(b["after"]) for b in bodies[:2]] == [list(_COLUMNS)] * 2
    assert bodies[2]["before"] == inserted["1"]
    assert bodies[2]["after"] == {
        **inserted["1"],
        "amount": {"$type": "decimal", "v": "7.25"},
        "naive": {"$type": "datetime", "v": "2027-01-01T00:00:00"},
    }
    assert updated["1"]["amount"] == {"$type": "decimal", "v": "7.2500"}
    assert bodies[2]["changed_columns"] == ["amount", "naive"]
    assert bodies[3]["before"] == inserted["2"]


def test_json_value_changed_in_place_after_the_flush_does_not_change_the_event(
    other_maker: sessionmaker[Session],
) -> None:
    """A JSON value changed in place after the flush that captured it (no new flush sees it:
    plain JSON does not track mutations) leaves the event as flushed."""
    published = InMemoryPublisher()
    install_audit(other_maker, publisher=published, service="shop")
    try:
        with other_maker.begin() as session:
            doc = _Doc(id=1, body={"n": 1}, zone=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
            session.add(doc)
            session.flush()
            doc.body["n"] = 2
    finally:
        uninstall_audit(other_maker)
    (event,) = published.events
    assert event.after is not None
    assert event.after["body"] == {"n": 1}
    assert json.loads(published.raw_messages[0])["after"]["body"] == {"n": 1}


def test_unknown_type_with_error_policy_fails_inside_the_flush(
    other_maker: sessionmaker[Session],
) -> None:
    """With unknown_types='error', a value the codec cannot encode is a capture error of the
    flush (reported before flush() returns), not of the commit or the publisher."""
    errors: list[BaseException] = []
    install_audit(
        other_maker,
        publisher=InMemoryPublisher(),
        service="shop",
        unknown_types="error",
        on_error=lambda exc, _events: errors.append(exc),
    )
    try:
        with other_maker.begin() as session:
            session.add(_Odd(id=1, text=_Opaque()))
            session.flush()
            reported = list(errors)
    finally:
        uninstall_audit(other_maker)
    assert [type(exc) for exc in reported] == [SerializationError]


def test_flush_insert_image_is_the_eager_encoding(maker: sessionmaker[Session]) -> None:
    """An insert's image (an enum encoded during the flush, the rest later) reads back as the
    eager encoding of the values written."""
    published = InMemoryPublisher()
    install_audit(maker, publisher=published, service="shop")
    try:
        with maker.begin() as session:
            row = _everything(3)
            row.color = Color.GREEN
            session.add(row)
    finally:
        uninstall_audit(maker)
    row = _everything(3)
    row.color = Color.GREEN
    expected = json.loads(json.dumps({c: encode_value(getattr(row, c)) for c in _COLUMNS}))
    body: dict[str, Any] = json.loads(published.raw_messages[0])
    assert body["after"] == expected
    assert body["after"]["color"]["$type"] == "enum"
    assert uuid.UUID(body["after"]["token"]["v"]) == uuid.UUID(int=3)


def test_layouts_kept_are_bounded_whatever_the_null_patterns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows with more distinct NULL patterns than MAX_LAYOUTS keep at most MAX_LAYOUTS
    layouts, and each image still reads as the eager encoding."""
    monkeypatch.setattr(flush_images, "MAX_LAYOUTS", 16)
    plan = plan_model(sa.inspect(Everything), AuditConfig(service="s"))
    images = flush_images.FlushImages("repr")
    full = {c: getattr(_everything(1), c) for c in _COLUMNS}
    optional = [c for c in _COLUMNS if c != "id"]
    seen = set()
    for pattern in range(600):
        raw = {c: None if pattern >> bit & 1 else full[c] for bit, c in enumerate(optional)}
        raw["id"] = pattern
        image, keys = images.image(plan, raw)
        seen.add(image.layout)
        assert keys == {"id": pattern}
        assert image.as_dict() == {c: encode_value(raw[c]) for c in _COLUMNS}
        kept = [len(images._layouts), *(len(m.layouts) for _p, m in images._models.values())]
        assert max(kept) <= 16
    assert len(seen) > 16
