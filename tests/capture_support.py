"""Models and helpers shared by the capture tests (unit tests on SQLite, integration tests).

The models cover each capture rule: attribute names that differ from column names, server
defaults and ``onupdate`` values, deferred columns, masking and exclusion, composite and
natural (changeable) primary keys, joined and single-table inheritance, many-to-many
association tables with and without a primary key, and a model that opts out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    deferred,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.pool import StaticPool

from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.memory import InMemoryPublisher


class Base(DeclarativeBase):
    pass


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class User(Base):
    """Attribute ``display_name`` is stored in column ``name``; ``bio`` is deferred."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str] = mapped_column("name", sa.String(50))
    email: Mapped[str | None] = mapped_column(sa.String(100))
    login_count: Mapped[int] = mapped_column(server_default=sa.text("0"))
    bio: Mapped[str | None] = deferred(mapped_column(sa.Text))


class Account(Base):
    """A masked and an excluded column."""

    __tablename__ = "accounts"
    __audit__ = {"mask": ["password_hash"], "exclude": ["last_seen"]}

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(sa.String(50))
    password_hash: Mapped[str] = mapped_column(sa.String(100))
    last_seen: Mapped[int | None]


class Counter(Base):
    """A column the database changes on every UPDATE (SQL ``onupdate``, expired by the flush)."""

    __tablename__ = "counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)
    revision: Mapped[int] = mapped_column(default=1, onupdate=sa.literal_column("revision + 1"))


class Stock(Base):
    """A composite, natural primary key (changeable)."""

    __tablename__ = "stock"

    warehouse: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    sku: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    quantity: Mapped[int] = mapped_column(default=0)


class Country(Base):
    """A single natural primary key that can change."""

    __tablename__ = "countries"

    code: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))


class Employee(Base):
    """Root of a joined (Manager) and a single-table (Engineer) inheritance."""

    __tablename__ = "employees"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    kind: Mapped[str] = mapped_column(sa.String(20))
    language: Mapped[str | None] = mapped_column(sa.String(20))

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "employee"}


class Manager(Employee):
    __tablename__ = "managers"

    id: Mapped[int] = mapped_column(sa.ForeignKey("employees.id"), primary_key=True)
    budget: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(12, 2))

    __mapper_args__ = {"polymorphic_identity": "manager"}


class Engineer(Employee):
    __mapper_args__ = {"polymorphic_identity": "engineer"}


post_tags = sa.Table(
    "post_tags",
    Base.metadata,
    sa.Column("post_id", sa.ForeignKey("posts.id"), nullable=False),
    sa.Column("tag_id", sa.ForeignKey("tags.id"), nullable=False),
)

memberships = sa.Table(
    "memberships",
    Base.metadata,
    sa.Column("group_id", sa.ForeignKey("groups.id"), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), primary_key=True),
)


class Post(Base):
    """Many-to-many through ``post_tags`` (no primary key), with a backref."""

    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(50))
    tags: Mapped[list[Tag]] = relationship(secondary=post_tags, back_populates="posts")


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(50))
    posts: Mapped[list[Post]] = relationship(secondary=post_tags, back_populates="tags")


class Group(Base):
    """Many-to-many through ``memberships`` (composite primary key), one direction only."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    members: Mapped[list[User]] = relationship(secondary=memberships)


class Parent(Base):
    """One-to-many with delete-orphan cascade."""

    __tablename__ = "parents"

    id: Mapped[int] = mapped_column(primary_key=True)
    children: Mapped[list[Child]] = relationship(
        back_populates="parent", cascade="all, delete-orphan"
    )


class Child(Base):
    __tablename__ = "children"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("parents.id"))
    parent: Mapped[Parent | None] = relationship(back_populates="children")


class Scratch(Base):
    """Opted out of auditing."""

    __tablename__ = "scratch"
    __audit__ = {"enabled": False}

    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str | None] = mapped_column(sa.String(50))


class Everything(Base):
    """One column of each portable type the codec restores exactly."""

    __tablename__ = "everything"

    id: Mapped[int] = mapped_column(primary_key=True)
    amount: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(12, 4))
    ratio: Mapped[float | None] = mapped_column(sa.Float)
    flag: Mapped[bool | None]
    naive: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    day: Mapped[dt.date | None] = mapped_column(sa.Date)
    clock: Mapped[dt.time | None] = mapped_column(sa.Time)
    span: Mapped[dt.timedelta | None] = mapped_column(sa.Interval)
    token: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    blob: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    color: Mapped[Color | None] = mapped_column(sa.Enum(Color))
    doc: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    text: Mapped[str | None] = mapped_column(sa.Text)


# --------------------------------------------------------------------------- engines


def sqlite_engine(url: str = "sqlite://") -> Engine:
    """A SQLite engine with working SAVEPOINTs (pysqlite's own transaction handling off).

    In-memory URLs share one connection so every session sees the same database.
    """
    kwargs: dict[str, Any] = {}
    if url == "sqlite://":
        kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    engine = sa.create_engine(url, **kwargs)
    fix_sqlite_transactions(engine)
    return engine


def fix_sqlite_transactions(engine: Engine) -> None:
    """SQLAlchemy's documented recipe for SAVEPOINT support on pysqlite."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


@contextlib.contextmanager
def capture_tables(engine: Engine) -> Iterator[Engine]:
    """Every test model's table on ``engine`` for the block (SAVEPOINTs fixed on SQLite)."""
    fix_sqlite_transactions(engine)
    Base.metadata.create_all(engine)
    try:
        yield engine
    finally:
        Base.metadata.drop_all(engine)


def emptied(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker on ``engine`` after deleting every row of the test models' tables."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    return sessionmaker(engine)


def seed(maker: sessionmaker[Session], published: InMemoryPublisher, *rows: object) -> None:
    """Add ``rows`` in one committed transaction, then forget the events it published."""
    with maker.begin() as session:
        session.add_all(rows)
    published.clear()


# --------------------------------------------------------------------------- assertions


def brief(event: ChangeEvent) -> dict[str, Any]:
    """The parts of an event a capture rule decides (ids and clocks left out)."""
    return {
        "op": event.operation.value,
        "table": event.table,
        "record_id": event.record_id,
        "previous_record_id": event.previous_record_id,
        "before": None if event.before is None else dict(event.before),
        "after": None if event.after is None else dict(event.after),
        "changed": list(event.changed_columns),
        "actor": None if event.actor is None else event.actor.id,
        "sequence": event.sequence,
    }


def briefs(events: Iterable[ChangeEvent]) -> list[dict[str, Any]]:
    return [brief(event) for event in events]


def one_transaction(events: list[ChangeEvent]) -> None:
    """Assert the events form one committed transaction: one id, sequence 0..n-1."""
    assert len({event.transaction_id for event in events}) == 1
    assert [event.sequence for event in events] == list(range(len(events)))
    assert len({event.committed_at for event in events}) == 1
