"""Transactions: events leave only after the outermost commit, savepoints are honoured."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from capture_support import Country, User, brief, one_transaction, seed
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit import ChangeEvent, audit_context, install_audit, uninstall_audit
from sqla_audit.delivery import InMemoryTransactionalWriter
from sqla_audit.errors import SerializationError
from sqla_audit.publishers.memory import InMemoryPublisher


def _codes(publisher: InMemoryPublisher) -> list[str]:
    return [event.record_id for event in publisher.events]


def test_nothing_is_published_before_commit(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Flushed but uncommitted changes are not published."""
    with maker() as session:
        session.add(Country(code="A", name="a"))
        session.flush()
        assert published.events == []
        session.commit()
        assert _codes(published) == ["A"]


def test_rollback_publishes_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A rolled-back transaction publishes nothing, even after flushes."""
    with maker() as session:
        session.add(Country(code="A", name="a"))
        session.flush()
        session.rollback()
        session.add(Country(code="B", name="b"))
        session.commit()
    assert _codes(published) == ["B"]


def test_exception_inside_begin_block_publishes_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An exception inside ``with session.begin()`` rolls back and publishes nothing."""

    def work() -> None:
        with maker.begin() as session:
            session.add(Country(code="A", name="a"))
            session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        work()
    assert published.events == []


def test_failed_flush_publishes_nothing(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """A flush that fails in the database (duplicate key) publishes nothing."""
    seed(maker, published, Country(code="A", name="a"))

    def work() -> None:
        with maker.begin() as session:
            session.add(Country(code="Z", name="z"))
            session.flush()
            session.add(Country(code="A", name="again"))

    with pytest.raises(sa.exc.IntegrityError):
        work()
    assert published.events == []


def test_rolled_back_savepoint_discards_only_its_changes(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Rolling back a SAVEPOINT drops its changes and keeps the outer ones."""
    with maker.begin() as session:
        session.add(Country(code="A", name="a"))
        savepoint = session.begin_nested()
        session.add(Country(code="B", name="b"))
        country_a = session.get(Country, "A")
        assert country_a is not None
        country_a.name = "changed in savepoint"
        session.flush()
        savepoint.rollback()
        session.add(Country(code="C", name="c"))
    events = published.events
    assert [(e.record_id, e.operation.value) for e in events] == [("A", "insert"), ("C", "insert")]
    assert events[0].after == {"code": "A", "name": "a"}
    one_transaction(events)


def test_released_savepoint_changes_are_kept_and_coalesced(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Changes of a released SAVEPOINT join the outer transaction and coalesce with it."""
    with maker.begin() as session:
        session.add(Country(code="A", name="a"))
        session.flush()
        with session.begin_nested():
            country_a = session.get(Country, "A")
            assert country_a is not None
            country_a.name = "a2"
            session.add(Country(code="B", name="b"))
    events = published.events
    assert [(e.record_id, e.operation.value, e.after) for e in events] == [
        ("A", "insert", {"code": "A", "name": "a2"}),
        ("B", "insert", {"code": "B", "name": "b"}),
    ]
    one_transaction(events)


def test_nested_savepoints_inner_rollback_outer_release(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """With savepoints inside savepoints, each rollback discards exactly its own level."""
    with maker.begin() as session:
        session.add(Country(code="A", name="a"))
        outer = session.begin_nested()
        session.add(Country(code="B", name="b"))
        inner = session.begin_nested()
        session.add(Country(code="C", name="c"))
        session.flush()
        innermost = session.begin_nested()
        session.add(Country(code="D", name="d"))
        innermost.commit()
        inner.rollback()  # drops C and D
        session.add(Country(code="E", name="e"))
        outer.commit()
        dropped = session.begin_nested()
        session.add(Country(code="F", name="f"))
        session.flush()
        dropped.rollback()
    assert _codes(published) == ["A", "B", "E"]
    one_transaction(published.events)


def test_savepoint_rollback_restores_update_of_outer_row(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An update made in a rolled-back savepoint leaves the outer row's event untouched."""
    seed(maker, published, Country(code="A", name="a"))
    with maker.begin() as session:
        country = session.get(Country, "A")
        assert country is not None
        country.name = "outer"
        session.flush()
        savepoint = session.begin_nested()
        country.name = "inner"
        session.flush()
        savepoint.rollback()
    (event,) = published.events
    assert (event.before, event.after) == (
        {"code": "A", "name": "a"},
        {"code": "A", "name": "outer"},
    )


def test_exception_in_begin_nested_block_discards_savepoint(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An exception inside ``with session.begin_nested()`` discards that savepoint only."""

    def inner(session: Session) -> None:
        with session.begin_nested():
            session.add(Country(code="B", name="b"))
            session.flush()
            raise ValueError("inner")

    with maker.begin() as session:
        session.add(Country(code="A", name="a"))
        with pytest.raises(ValueError, match="inner"):
            inner(session)
    assert _codes(published) == ["A"]


def test_reused_session_starts_a_fresh_buffer(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Each transaction of a reused session publishes only its own changes."""
    with maker() as session:
        session.add(Country(code="A", name="a"))
        session.commit()
        session.add(Country(code="B", name="b"))
        session.flush()
        session.rollback()
        session.add(Country(code="C", name="c"))
        session.commit()
        session.close()
        session.add(Country(code="D", name="d"))
        session.commit()
    batches = published.batches
    assert [[e.record_id for e in batch] for batch in batches] == [["A"], ["C"], ["D"]]
    assert len({batch[0].transaction_id for batch in batches}) == 3
    for batch in batches:
        assert batch[0].sequence == 0


def test_commit_with_savepoint_still_open_publishes_its_changes(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Committing the outer transaction with a savepoint open commits the savepoint's work too."""
    session = maker()
    with session.begin():
        session.add(Country(code="A", name="a"))
        session.begin_nested()
        session.add(Country(code="B", name="b"))
    session.close()
    assert _codes(published) == ["A", "B"]


# --------------------------------------------------------------------------- failures


class _RaisingPublisher(InMemoryPublisher):
    def publish(self, events: Sequence[ChangeEvent]) -> None:
        raise ConnectionError("bus down")


def test_publisher_failure_never_reaches_the_application(maker: sessionmaker[Session]) -> None:
    """A publisher that raises after commit is reported to on_error; commit succeeds."""
    reported: list[tuple[BaseException, int]] = []
    install_audit(
        maker,
        publisher=_RaisingPublisher(),
        service="shop",
        on_error=lambda exc, events: reported.append((exc, len(events))),
    )
    try:
        with maker.begin() as session:
            session.add(Country(code="A", name="a"))
    finally:
        uninstall_audit(maker)
    assert [(type(exc).__name__, count) for exc, count in reported] == [("ConnectionError", 1)]
    with maker() as session:
        assert session.get(Country, "A") is not None


def test_failing_on_error_hook_is_contained(maker: sessionmaker[Session]) -> None:
    """Even an on_error hook that raises does not reach the application."""

    def bad_hook(exc: BaseException, events: Sequence[ChangeEvent]) -> None:
        raise RuntimeError("hook bug")

    install_audit(maker, publisher=_RaisingPublisher(), service="shop", on_error=bad_hook)
    try:
        with maker.begin() as session:
            session.add(Country(code="A", name="a"))
    finally:
        uninstall_audit(maker)


def test_metadata_hook_adds_metadata_and_its_failure_is_reported(
    maker: sessionmaker[Session],
) -> None:
    """The metadata hook's mapping is merged into events; a raising hook is reported."""
    publisher = InMemoryPublisher()
    reported: list[BaseException] = []

    def hook(session: Session, change: object) -> dict[str, object]:
        if getattr(change, "record_id", None) == "B":
            raise KeyError("no tenant")
        return {"tenant": 7, "table": getattr(change, "table", None)}

    install_audit(
        maker,
        publisher=publisher,
        service="shop",
        metadata_hook=hook,
        on_error=lambda exc, events: reported.append(exc),
    )
    try:
        with maker.begin() as session:
            session.add_all([Country(code="A", name="a"), Country(code="B", name="b")])
    finally:
        uninstall_audit(maker)
    a, b = publisher.events
    assert a.metadata == {"tenant": 7, "table": "countries"}
    assert b.metadata == {}
    assert [type(exc) for exc in reported] == [KeyError]


def test_capture_error_in_direct_mode_is_reported_not_raised(
    maker: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An internal capture failure in direct mode is reported; the commit goes through."""
    publisher = InMemoryPublisher()
    reported: list[BaseException] = []
    installation = install_audit(
        maker, publisher=publisher, service="shop", on_error=lambda e, ev: reported.append(e)
    )

    def broken(*args: object) -> None:
        raise SerializationError("cannot encode")

    monkeypatch.setattr(installation.capturer, "after_flush_postexec", broken)
    try:
        with maker.begin() as session:
            session.add(Country(code="A", name="a"))
    finally:
        uninstall_audit(maker)
    assert [type(exc) for exc in reported] == [SerializationError]
    assert publisher.events == []


# --------------------------------------------------------------------------- outbox mode


def test_outbox_mode_writes_events_before_commit_in_the_transaction(
    maker: sessionmaker[Session],
) -> None:
    """In outbox mode the writer gets the events before commit, on the session's connection."""
    seen: list[tuple[bool, list[str]]] = []

    class Writer(InMemoryTransactionalWriter):
        def write(self, connection: sa.Connection, events: Sequence[ChangeEvent]) -> None:
            count = connection.execute(sa.text("SELECT count(*) FROM countries")).scalar_one()
            seen.append((connection.in_transaction() and count == 2, [e.record_id for e in events]))
            super().write(connection, events)

    writer = Writer()
    install_audit(maker, outbox=writer, service="shop")
    try:
        with maker.begin() as session:
            session.add(Country(code="A", name="a"))
            session.flush()
            with session.begin_nested():
                session.add(Country(code="B", name="b"))
            session.add(User(display_name="not flushed yet"))
    finally:
        uninstall_audit(maker)
    assert seen == [(True, ["A", "B", "1"])]
    (batch,) = writer.batches
    one_transaction(batch)
    assert [brief(e)["op"] for e in batch] == ["insert"] * 3


def test_outbox_write_failure_fails_the_commit(maker: sessionmaker[Session]) -> None:
    """In outbox mode a failing writer makes the commit fail and the data roll back."""
    writer = InMemoryTransactionalWriter(fail_with=OSError("outbox table missing"))
    install_audit(maker, outbox=writer, service="shop")
    try:
        with pytest.raises(OSError, match="outbox table missing"), maker.begin() as session:
            session.add(Country(code="A", name="a"))
    finally:
        uninstall_audit(maker)
    with maker() as session:
        assert session.get(Country, "A") is None


def test_outbox_mode_rollback_writes_nothing(maker: sessionmaker[Session]) -> None:
    """In outbox mode nothing is written for a rolled-back transaction or savepoint."""
    writer = InMemoryTransactionalWriter()
    install_audit(maker, outbox=writer, service="shop")
    try:
        with maker() as session:
            session.add(Country(code="A", name="a"))
            session.flush()
            session.rollback()
            savepoint = session.begin_nested()
            session.add(Country(code="B", name="b"))
            savepoint.rollback()
            session.add(Country(code="C", name="c"))
            session.commit()
    finally:
        uninstall_audit(maker)
    assert [e.record_id for e in writer.events] == ["C"]


def test_outbox_capture_errors_propagate(
    maker: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In outbox mode a capture failure fails the flush instead of losing the audit record."""
    installation = install_audit(maker, outbox=InMemoryTransactionalWriter(), service="shop")

    def broken(*args: object) -> None:
        raise SerializationError("cannot encode")

    monkeypatch.setattr(installation.capturer, "after_flush", broken)
    try:
        with pytest.raises(SerializationError), maker.begin() as session:
            session.add(Country(code="A", name="a"))
    finally:
        uninstall_audit(maker)


def test_outbox_commit_with_open_savepoint_is_reported(maker: sessionmaker[Session]) -> None:
    """Outbox mode cannot write when the outer commit closes an open savepoint: it reports it."""
    writer = InMemoryTransactionalWriter()
    reported: list[tuple[BaseException, int]] = []
    install_audit(
        maker,
        outbox=writer,
        service="shop",
        on_error=lambda exc, events: reported.append((exc, len(events))),
    )
    try:
        session = maker()
        with session.begin():
            session.add(Country(code="A", name="a"))
            session.begin_nested()
            session.add(Country(code="B", name="b"))
        session.close()
    finally:
        uninstall_audit(maker)
    assert writer.batches == []
    assert [(type(exc).__name__, count) for exc, count in reported] == [("ConfigurationError", 2)]


def test_row_leaves_a_key_before_another_row_takes_it(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """B touched first, A moved US -> ZZ, B moved CA -> US: A's move is published first."""
    seed(maker, published, Country(code="US", name="a"), Country(code="CA", name="b"))
    with maker.begin() as session:
        a, b = session.get(Country, "US"), session.get(Country, "CA")
        assert a is not None
        assert b is not None
        b.name = "b2"
        session.flush()
        a.code = "ZZ"
        session.flush()
        b.code = "US"
    moves = [(e.sequence, e.previous_record_id, e.record_id) for e in published.events]
    assert moves == [(0, "US", "ZZ"), (1, "CA", "US")]


def test_row_deleted_from_a_key_before_another_row_takes_it(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """B touched first, A (key US) deleted, B moved CA -> US: A's delete is published first."""
    seed(maker, published, Country(code="US", name="a"), Country(code="CA", name="b"))
    with maker.begin() as session:
        a, b = session.get(Country, "US"), session.get(Country, "CA")
        assert a is not None
        assert b is not None
        b.name = "b2"
        session.flush()
        session.delete(a)
        session.flush()
        b.code = "US"
    changes = [(e.sequence, e.operation.value, e.record_id) for e in published.events]
    assert changes == [(0, "delete", "US"), (1, "update", "US")]


def test_change_undone_in_a_released_savepoint_keeps_the_last_actor(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """alice sets a; in a savepoint alice sets b and bob sets a again: the event is bob's."""
    seed(maker, published, Country(code="US", name="x"))
    with maker() as session, session.begin():
        country = session.get(Country, "US")
        assert country is not None
        with audit_context(actor="alice"):
            country.name = "a"
            session.flush()
        with session.begin_nested():
            with audit_context(actor="alice"):
                country.name = "b"
                session.flush()
            with audit_context(actor="bob"):
                country.name = "a"
                session.flush()
    (event,) = published.events
    assert (event.changed_columns, event.actor and event.actor.id) == (("name",), "bob")
