"""max_bulk_rows and marker events: loud, never silent, and harmless to the consumer."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from capture_support import Country, User, seed
from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session, sessionmaker

from consumer.differ import record_for_event
from consumer.sinks.memory import MemoryStore
from consumer.sources.memory import MemorySource
from consumer.worker import Worker
from sqla_audit import (
    AuditConfig,
    ChangeEvent,
    audit_context,
    bulk_insert,
    install_audit,
    uninstall_audit,
)
from sqla_audit.bulk import (
    REASON_KEY_UPDATED,
    REASON_MAX_ROWS,
    REASON_UNMATCHED,
    BulkCapturer,
)
from sqla_audit.bulk_images import RowImages
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import MARKER_METADATA_KEY, MARKER_RECORD_ID
from sqla_audit.publishers.memory import InMemoryPublisher


@pytest.fixture
def capped(maker: sessionmaker[Session]) -> Any:
    """Audit ``maker`` with max_bulk_rows=3; seed five countries."""
    with maker.begin() as session:
        session.add_all([Country(code=c, name=c.lower()) for c in "ABCDE"])
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="shop", max_bulk_rows=3)
    yield publisher
    uninstall_audit(maker)


def _description(event: ChangeEvent) -> dict[str, Any]:
    value = event.metadata[MARKER_METADATA_KEY]
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "10"])
def test_max_bulk_rows_is_validated(value: Any) -> None:
    """max_bulk_rows must be a positive integer or None."""
    with pytest.raises(ConfigurationError, match="max_bulk_rows"):
        AuditConfig(service="shop", max_bulk_rows=value)


def test_max_bulk_rows_none_means_no_cap() -> None:
    """None removes the cap; the default is 10,000."""
    assert AuditConfig(service="shop", max_bulk_rows=None).max_bulk_rows is None
    assert AuditConfig(service="shop").max_bulk_rows == 10_000


def test_max_bulk_rows_with_config_object_is_refused(maker: sessionmaker[Session]) -> None:
    """max_bulk_rows= and config= together are refused like other individual settings."""
    with pytest.raises(ConfigurationError, match="either config"):
        install_audit(
            maker,
            publisher=InMemoryPublisher(),
            config=AuditConfig(service="shop"),
            max_bulk_rows=5,
        )


def test_over_the_cap_gives_one_marker_and_an_error_log(
    maker: sessionmaker[Session], capped: InMemoryPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """More rows than max_bulk_rows: no row events, one marker, one ERROR log line."""
    with (
        caplog.at_level(logging.ERROR, logger="sqla_audit.bulk"),
        audit_context(actor="alice", request_id="r-9", ticket="T-1"),
        maker.begin() as session,
    ):
        session.execute(update(Country).where(Country.code != "E").values(name="x"))
    (marker,) = capped.events
    assert marker.is_marker
    assert (marker.table, marker.record_id, marker.operation.value) == ("countries", "*", "update")
    assert (marker.before, marker.after, marker.primary_key) == ({}, {}, {})
    assert marker.changed_columns == ("name",)
    assert marker.actor is not None
    assert (marker.actor.id, marker.request_id) == ("alice", "r-9")
    assert marker.metadata["ticket"] == "T-1"
    assert _description(marker) == {
        "reason": REASON_MAX_ROWS,
        "operation": "update",
        "rows": 4,
        "itemized": 0,
        "max_bulk_rows": 3,
        "statement": "UPDATE countries SET name=? WHERE countries.code != ?",
    }
    (record,) = [r for r in caplog.records if r.name == "sqla_audit.bulk"]
    assert record.levelno == logging.ERROR
    assert "countries" in record.getMessage()
    assert "max_bulk_rows" in record.getMessage()
    with maker() as session:
        assert session.scalar(sa.select(sa.func.count()).where(Country.name == "x")) == 4


def test_at_the_cap_rows_are_itemized(
    maker: sessionmaker[Session], capped: InMemoryPublisher
) -> None:
    """Exactly max_bulk_rows rows are still itemized."""
    with maker.begin() as session:
        session.execute(delete(Country).where(Country.code.in_(["A", "B", "C"])))
    assert [(e.operation.value, e.record_id) for e in capped.events] == [
        ("delete", "A"),
        ("delete", "B"),
        ("delete", "C"),
    ]


def test_cap_applies_to_every_form(maker: sessionmaker[Session], capped: InMemoryPublisher) -> None:
    """By-key updates, deletes and inserts over the cap each give one marker with the count."""
    with maker.begin() as session:
        session.execute(update(Country), [{"code": c, "name": "k"} for c in "ABCD"])
        session.execute(insert(User), [{"id": i, "display_name": "u"} for i in range(5)])
        session.execute(insert(User), [{"display_name": "u"} for _ in range(6)])
        session.execute(delete(Country))
    assert [(e.operation.value, _description(e)["rows"]) for e in capped.events] == [
        ("update", 4),
        ("insert", 5),
        ("insert", 6),
        ("delete", 5),
    ]
    assert all(_description(e)["reason"] == REASON_MAX_ROWS for e in capped.events)


def test_markers_are_never_coalesced(
    maker: sessionmaker[Session], capped: InMemoryPublisher
) -> None:
    """Two markers on one table in one transaction stay two events, in order."""
    with maker.begin() as session:
        session.execute(update(Country).values(name="1"))
        session.execute(update(Country).values(name="2"))
        session.add(Country(code=MARKER_RECORD_ID, name="a row whose key is a star"))
    events = capped.events
    assert [(e.record_id, e.operation.value, e.is_marker) for e in events] == [
        ("*", "update", True),
        ("*", "update", True),
        ("*", "insert", False),
    ]
    assert [e.sequence for e in events] == [0, 1, 2]


def test_marker_of_a_rolled_back_savepoint_is_discarded(
    maker: sessionmaker[Session], capped: InMemoryPublisher
) -> None:
    """A marker follows the transaction rules: gone with its rolled-back SAVEPOINT."""
    with maker.begin() as session:
        savepoint = session.begin_nested()
        session.execute(update(Country).values(name="1"))
        savepoint.rollback()
    assert capped.events == []


def test_updating_a_primary_key_gives_a_marker(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An UPDATE that assigns a key column cannot pair old and new rows: a marker."""
    seed(maker, published, Country(code="A", name="a"))
    with maker.begin() as session:
        session.execute(update(Country).where(Country.code == "A").values(code="B"))
    (marker,) = published.events
    assert _description(marker)["reason"] == REASON_KEY_UPDATED
    assert _description(marker)["rows"] == 1
    assert marker.changed_columns == ("code",)


def test_more_rows_changed_than_read_gives_a_marker(
    maker: sessionmaker[Session], published: InMemoryPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows the statement changed beyond those read first (a phantom) are reported."""
    with maker.begin() as session:
        session.add_all([Country(code=c, name="n") for c in "AB"])
    published.clear()
    read_where = BulkCapturer._read_where

    def miss_one(self: BulkCapturer, job: Any) -> Any:
        rows, exceeded = read_where(self, job)
        rows.pop(next(iter(rows)))
        return rows, exceeded

    monkeypatch.setattr(BulkCapturer, "_read_where", miss_one)
    with maker.begin() as session:
        session.execute(update(Country).values(name="m"))
    row, marker = published.events
    assert row.record_id == "B"
    assert _description(marker) | {"statement": ""} == {
        "reason": REASON_UNMATCHED,
        "operation": "update",
        "rows": 2,
        "itemized": 1,
        "max_bulk_rows": 10_000,
        "statement": "",
    }


def test_statement_text_in_a_marker_never_holds_values(
    maker: sessionmaker[Session], capped: InMemoryPublisher
) -> None:
    """The marker's SQL text carries placeholders, never the values written or compared."""
    with maker.begin() as session:
        session.execute(update(Country).where(Country.name != "secret-1").values(name="secret-2"))
    (marker,) = capped.events
    assert "secret" not in marker.to_json()


def test_capture_failure_in_direct_mode_keeps_the_statement(
    maker: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture bug is reported; the statement still runs once and returns its result."""
    with maker.begin() as session:
        session.add_all([Country(code="A", name="a"), Country(code="B", name="b")])
    errors: list[BaseException] = []
    publisher = InMemoryPublisher()
    install_audit(
        maker, publisher=publisher, service="shop", on_error=lambda e, _events: errors.append(e)
    )

    def broken(self: RowImages, *args: Any) -> None:
        raise RuntimeError("capture bug")

    monkeypatch.setattr(RowImages, "updated_rows", broken)
    try:
        with maker.begin() as session:
            result = session.execute(update(Country).values(name="z"))
            assert result.rowcount == 2  # type: ignore[attr-defined]
    finally:
        uninstall_audit(maker)
    assert [str(e) for e in errors] == ["capture bug"]
    assert publisher.events == []
    with maker() as session:
        assert {c.name for c in session.scalars(sa.select(Country))} == {"z"}


def test_capture_failure_before_the_statement_lets_it_run(
    maker: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure before the statement ran: reported, and SQLAlchemy runs it as usual."""
    errors: list[BaseException] = []
    install_audit(
        maker,
        publisher=InMemoryPublisher(),
        service="shop",
        on_error=lambda e, _events: errors.append(e),
    )

    def broken(*args: Any) -> None:
        raise RuntimeError("early bug")

    monkeypatch.setattr(bulk_insert, "keys_of", broken)
    try:
        with maker.begin() as session:
            session.execute(insert(Country), [{"code": "Q", "name": "q"}])
    finally:
        uninstall_audit(maker)
    assert [str(e) for e in errors] == ["early bug"]
    with maker() as session:
        assert session.get(Country, "Q") is not None


def test_capture_failure_in_outbox_mode_propagates(
    maker: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In outbox mode a capture failure fails the statement's transaction."""
    from sqla_audit.delivery import InMemoryTransactionalWriter  # noqa: PLC0415

    with maker.begin() as session:
        session.add(Country(code="A", name="a"))
    install_audit(maker, outbox=InMemoryTransactionalWriter(), service="shop")

    def broken(self: RowImages, *args: Any) -> None:
        raise RuntimeError("capture bug")

    monkeypatch.setattr(RowImages, "updated_rows", broken)
    try:
        with pytest.raises(RuntimeError, match="capture bug"), maker.begin() as session:
            session.execute(update(Country).values(name="z"))
    finally:
        uninstall_audit(maker)
    with maker() as session:
        assert session.get(Country, "A").name == "a"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the consumer


def _marker_event(maker: sessionmaker[Session], publisher: InMemoryPublisher) -> ChangeEvent:
    with maker.begin() as session:
        session.execute(update(Country).values(name="x"))
    (marker,) = publisher.events
    return ChangeEvent.from_json(marker.to_json())


def test_consumer_stores_a_marker_as_a_record_of_the_star_id(
    maker: sessionmaker[Session], capped: InMemoryPublisher
) -> None:
    """The differ keeps an update marker (no field changes) instead of skipping it."""
    marker = _marker_event(maker, capped)
    record = record_for_event(marker)
    assert record is not None
    assert (record.table, record.record_id, record.changes) == ("countries", "*", {})
    assert record.metadata[MARKER_METADATA_KEY] == _description(marker)


def test_worker_writes_markers_and_rows_alike(
    maker: sessionmaker[Session], capped: InMemoryPublisher
) -> None:
    """A marker goes through the worker like any event: written, acknowledged, queryable."""
    marker = _marker_event(maker, capped)
    with maker.begin() as session:
        session.execute(delete(Country).where(Country.code == "A"))
    row_event = capped.events[-1]
    source = MemorySource(visibility_timeout=30, dlq=True)
    store = MemoryStore()
    for event in (marker, row_event):
        source.send(event.to_json())
    worker = Worker(source, store, concurrency=1, wait_seconds=0.05, max_backoff=0.2)
    try:
        result = worker.process(source.receive(10, 0))
    finally:
        worker.stop()
        worker.join(5)
    assert len(result.acked) == 2
    assert source.pending == 0
    assert [r.event_id for r in store.history("shop", "countries", "*")] == [marker.event_id]
    assert [r.operation.value for r in store.history("shop", "countries", "A")] == ["delete"]
