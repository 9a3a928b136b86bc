"""The outbox write on the real databases: one INSERT that asks nothing back, rows that
commit with the data and hold the events' bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_table
from sqla_audit.outbox.payloads import split_payload


class Base(DeclarativeBase):
    pass


class Gadget(Base):
    __tablename__ = "outbox_insert_gadgets"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(40))


@pytest.fixture(params=["postgres", "mariadb"])
def engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """An engine on a fresh PostgreSQL or MariaDB database with the outbox and gadgets."""
    engine: sa.Engine = request.getfixturevalue(f"{request.param}_engine")
    create_outbox_table(engine)
    Base.metadata.create_all(engine)
    yield engine
    with engine.begin() as connection:
        connection.execute(sa.delete(outbox_table()))
        connection.execute(sa.delete(Gadget.__table__))


def _statements(engine: sa.Engine, work: Any) -> list[str]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize("count", [1, 3])
def test_the_outbox_insert_asks_nothing_back(engine: sa.Engine, count: int) -> None:
    """Outbox mode adds one INSERT into the outbox table per transaction, without RETURNING,
    and the row holds the transaction's events."""
    maker: sessionmaker[Session] = sessionmaker(engine)
    install_audit(maker, outbox=OutboxWriter(), service="svc")

    def work() -> None:
        with maker() as session:
            session.add_all([Gadget(id=i, name=f"g{i}") for i in range(count)])
            session.commit()

    try:
        statements = _statements(engine, work)
    finally:
        uninstall_audit(maker)
    outbox = [s for s in statements if "sqla_audit_outbox" in s]
    assert len(outbox) == 1
    assert outbox[0].lstrip().upper().startswith("INSERT")
    assert "RETURNING" not in outbox[0].upper()
    table = outbox_table()
    with engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.payload, table.c.layout)).all()
    assert len(rows) == 1
    events = [json.loads(text) for text, _ in split_payload(rows[0].payload, rows[0].layout)]
    assert [event["record_id"] for event in events] == [str(i) for i in range(count)]
