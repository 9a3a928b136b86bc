"""Masks and exclusions hold for every mapper that writes a table, through every inheritance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from consumer.differ import records_for_event
from sqla_audit import install_audit, uninstall_audit
from sqla_audit.capture import RowChange
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_table
from sqla_audit.publishers.memory import InMemoryPublisher

SSN = "SSN-123-45-6789"
SSN2 = "SSN-987-65-4321"
CODE = "LEVEL-SECRET-7"


class Base(DeclarativeBase):
    pass


class Person(Base):
    """Joined-table root masking ``ssn``."""

    __tablename__ = "persons"
    __audit__ = {"mask": ["ssn"]}

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    ssn: Mapped[str | None] = mapped_column(sa.String(50))
    kind: Mapped[str] = mapped_column(sa.String(20))

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}


class Admin(Person):
    """Joined subclass with its own ``__audit__`` (which must not drop the parent's mask)."""

    __tablename__ = "admins"
    __audit__ = {"exclude": ["level"]}

    id: Mapped[int] = mapped_column(sa.ForeignKey("persons.id"), primary_key=True)
    level: Mapped[str | None] = mapped_column(sa.String(50))

    __mapper_args__ = {"polymorphic_identity": "admin"}


class Guest(Person):
    """Single-table subclass of the joined root, with an unrelated option."""

    __audit__ = {"exclude": ["name"]}
    __mapper_args__ = {"polymorphic_identity": "guest"}


class Staff(Base):
    """Single-table root without options; a subclass masks a column of the shared table."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    badge: Mapped[str | None] = mapped_column(sa.String(50))
    kind: Mapped[str] = mapped_column(sa.String(20))

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "staff"}


class Guard(Staff):
    __audit__ = {"mask": ["badge"]}
    __mapper_args__ = {"polymorphic_identity": "guard"}


class Vehicle(Base):
    """Concrete-table root masking ``vin``."""

    __tablename__ = "vehicles"
    __audit__ = {"mask": ["vin"]}

    id: Mapped[int] = mapped_column(primary_key=True)
    vin: Mapped[str | None] = mapped_column(sa.String(50))


class Truck(Vehicle):
    """Concrete subclass: its own table, its own ``vin`` column, its own options."""

    __tablename__ = "trucks"
    __audit__ = {"exclude": ["axles"]}
    __mapper_args__ = {"concrete": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    vin: Mapped[str | None] = mapped_column(sa.String(50))
    axles: Mapped[int | None]


@pytest.fixture
def maker(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A SQLite database with the models' tables and the outbox table."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'people.db'}")
    Base.metadata.create_all(engine)
    create_outbox_table(engine)
    yield sessionmaker(engine)
    engine.dispose()


def _exercise(maker: sessionmaker[Session]) -> None:
    """Insert, update (masked and plain columns) and delete rows of every subclass."""
    with maker.begin() as session:
        session.add(Admin(id=1, name="root", ssn=SSN, level=CODE))
        session.add(Guest(id=2, name="visitor", ssn=SSN))
        session.add(Guard(id=3, badge=SSN))
        session.add(Staff(id=4, badge="public-badge"))
        session.add(Truck(id=5, vin=SSN, axles=3))
    with maker.begin() as session:
        admin = session.get_one(Admin, 1)
        admin.ssn, admin.name, admin.level = SSN2, "boss", CODE + "x"
        session.get_one(Guest, 2).ssn = SSN2
        session.get_one(Guard, 3).badge = SSN2
        session.get_one(Truck, 5).vin = SSN2
    with maker.begin() as session:
        session.execute(sa.update(Guest).where(Guest.id == 2).values(ssn=SSN + "b"))
        session.execute(sa.update(Admin).where(Admin.id == 1).values(level=CODE + "b"))
    with maker.begin() as session:
        for model, key in ((Admin, 1), (Guest, 2), (Guard, 3), (Truck, 5)):
            session.delete(session.get_one(model, key))


def _assert_clean(text: str) -> None:
    for secret in (SSN, SSN2, CODE):
        assert secret not in text


def test_direct_mode_json_hook_and_stored_records_hold_no_masked_value(
    maker: sessionmaker[Session],
) -> None:
    """Published JSON, the metadata hook's input and stored records never hold a masked value."""
    hook_inputs: list[RowChange] = []

    def hook(session: Session, change: RowChange) -> None:
        hook_inputs.append(change)

    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="hr", metadata_hook=hook)
    try:
        _exercise(maker)
    finally:
        uninstall_audit(maker)
    assert len(publisher.raw_messages) >= 12
    for message in publisher.raw_messages:
        _assert_clean(message)
    for change in hook_inputs:
        _assert_clean(repr(change))
    for event in publisher.events:
        for record in records_for_event(event):
            _assert_clean(repr(record))
    by_table: dict[str, set[tuple[str, ...]]] = {}
    for event in publisher.events:
        by_table.setdefault(event.table, set()).add(event.masked_columns)
        columns = set(event.before or {}) | set(event.after or {})
        assert "level" not in columns
        assert "axles" not in columns
    assert by_table["persons"] == {("ssn",)}
    assert by_table["staff"] == {("badge",)}
    assert by_table["trucks"] == {("vin",)}
    assert len(hook_inputs) >= len(publisher.events)


def test_outbox_rows_hold_no_masked_value(maker: sessionmaker[Session]) -> None:
    """In outbox mode no outbox row payload holds a masked value of a subclass row."""
    install_audit(maker, outbox=OutboxWriter(layout=1), service="hr")  # a row per event
    try:
        _exercise(maker)
    finally:
        uninstall_audit(maker)
    with maker() as session:
        payloads = session.scalars(sa.select(outbox_table().c.payload)).all()
    assert len(payloads) >= 12
    for payload in payloads:
        _assert_clean(payload)
        event = ChangeEvent.from_json(payload)
        if event.table in ("persons", "staff", "trucks") and event.operation.value == "insert":
            assert event.masked_columns


def test_a_mask_declared_by_a_subclass_holds_for_every_mapper_of_its_table(
    maker: sessionmaker[Session],
) -> None:
    """A column masked by one single-table subclass is masked in rows written by the root."""
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="hr")
    try:
        with maker.begin() as session:
            session.add(Staff(id=9, badge=SSN))
    finally:
        uninstall_audit(maker)
    (event,) = publisher.events
    assert event.masked_columns == ("badge",)
    _assert_clean(event.to_json())


def test_concrete_subclass_rows_name_their_own_table(maker: sessionmaker[Session]) -> None:
    """Rows of a concrete-table subclass are reported under its own table, not the root's."""
    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="hr")
    try:
        with maker.begin() as session:
            session.add(Vehicle(id=5, vin="v"))
            session.add(Truck(id=5, vin="t", axles=2))
    finally:
        uninstall_audit(maker)
    assert sorted((e.table, e.record_id) for e in publisher.events) == [
        ("trucks", "5"),
        ("vehicles", "5"),
    ]


def _contradicting_models() -> tuple[type[Any], ...]:
    class Other(DeclarativeBase):
        pass

    class Root(Other):
        __tablename__ = "roots"
        __audit__ = {"mask": ["secret"]}
        id: Mapped[int] = mapped_column(primary_key=True)
        secret: Mapped[str | None]
        kind: Mapped[str]
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "root"}

    class Leaf(Root):
        __audit__ = {"exclude": ["secret"]}
        __mapper_args__ = {"polymorphic_identity": "leaf"}

    return Root, Leaf


def test_a_contradicting_subclass_declaration_is_refused_at_install() -> None:
    """A subclass excluding what its parent masks is refused at install time, naming both."""
    root, leaf = _contradicting_models()
    engine = sa.create_engine("sqlite://")
    maker = sessionmaker(engine)
    with pytest.raises(ConfigurationError, match=r"secret.*(Root|Leaf).*(Root|Leaf)"):
        install_audit(maker, publisher=InMemoryPublisher(), service="hr", models=[root, leaf])
    assert uninstall_audit(maker) is False
    engine.dispose()


def test_an_empty_subclass_mask_does_not_unmask(maker: sessionmaker[Session]) -> None:
    """``"mask": []`` on a subclass keeps the parent's mask (masks only accumulate)."""

    class Intern(Person):
        __audit__ = {"mask": [], "enabled": True}
        __mapper_args__ = {"polymorphic_identity": "intern"}

    publisher = InMemoryPublisher()
    install_audit(maker, publisher=publisher, service="hr")
    try:
        with maker.begin() as session:
            session.add(Intern(id=11, name="i", ssn=SSN))
    finally:
        uninstall_audit(maker)
    (event,) = publisher.events
    assert event.masked_columns == ("ssn",)
    _assert_clean(event.to_json())
