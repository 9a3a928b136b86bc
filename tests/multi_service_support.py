"""Two services, one audit trail: the scenario of the multi-service acceptance tests.

Two applications (``billing`` and ``crm``), each with its own database and its own
``install_audit``, both with a ``users`` table and the same user ids, change their rows in
turns over several hours; one request id goes through both. The real capture produces the
events; :func:`consumer.differ.records_for_event` turns them into records for any store.
:func:`check_store` asks every multi-service question of a store and checks each answer
against the events themselves.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.differ import records_for_event
from consumer.query import AmbiguousRecord, AuditQuery
from consumer.records import AuditRecord
from consumer.sinks.base import AuditStore, commit_key
from sqla_audit.context import audit_context
from sqla_audit.events import ChangeEvent
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher

UTC = dt.UTC
#: When the script starts; it runs for about five hours, so it spans several hour buckets.
START = dt.datetime(2026, 3, 2, 9, 10, tzinfo=UTC)
SHARED_REQUEST = "req-shared-7f3a"
SERVICES = ("billing", "crm")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(50))


class _Clock:
    """The producers' clock: set per step, 250 µs further at each reading."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(microseconds=250)
        return self.now


def produce(tmp: Path) -> list[ChangeEvent]:
    """Run the script on two audited SQLite databases; every event, in commit order."""
    engines = {name: sa.create_engine(f"sqlite+pysqlite:///{tmp / name}.db") for name in SERVICES}
    factories = {name: sessionmaker(engine) for name, engine in engines.items()}
    publisher = InMemoryPublisher()
    clock = _Clock()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sqla_audit.capture.utcnow", clock)
            patch.setattr("sqla_audit.delivery.utcnow", clock)
            for name, factory in factories.items():
                Base.metadata.create_all(engines[name])
                install_audit(factory, publisher=publisher, service=name)
            try:
                for step in range(24):
                    service = SERVICES[step % 2]
                    clock.now = START + dt.timedelta(minutes=13 * step)
                    request = SHARED_REQUEST if step in {9, 10, 15} else f"req-{step}"
                    with (
                        audit_context(actor=f"{service}-user", request_id=request),
                        factories[service].begin() as session,
                    ):
                        if step < 2:
                            session.add_all(
                                [User(id=1, name=f"{service}-0"), User(id=2, name=f"{service}-0")]
                            )
                        else:
                            user = session.get_one(User, 1 + (step // 2) % 2)
                            user.name = f"{service}-{step}"
            finally:
                for factory in factories.values():
                    uninstall_audit(factory)
    finally:
        for engine in engines.values():
            engine.dispose()
    return sorted(publisher.events, key=lambda e: e.committed_at)


def records_of(events: list[ChangeEvent]) -> list[AuditRecord]:
    return [record for event in events for record in records_for_event(event)]


def _ids(records: list[AuditRecord]) -> list[object]:
    return [record.event_id for record in records]


def check_store(store: AuditStore, events: list[ChangeEvent]) -> None:
    """Every multi-service answer of ``store`` agrees with the events."""
    records = records_of(events)
    query = AuditQuery(store)
    newest = sorted(records, key=lambda r: r.sort_key, reverse=True)
    # history and as_of: each service sees only its own rows
    for service in SERVICES:
        for record_id in ("1", "2"):
            own = [r for r in newest if (r.service, r.record_id) == (service, record_id)]
            assert len(own) >= 5
            got = list(query.iter_history("users", record_id, service=service, page_size=2))
            assert _ids(got) == _ids(own)
            for record in own:
                state = query.as_of("users", record_id, record.event_time, service=service)
                assert state.service == service
                assert state.values == {"id": int(record_id), "name": record.after["name"]}  # type: ignore[index]
    assert query.services_of("users", "1") == list(SERVICES)
    with pytest.raises(AmbiguousRecord) as caught:
        query.history("users", "1")
    assert caught.value.services == list(SERVICES)
    assert "billing, crm" in str(caught.value)
    # the request view: one request through both services, in commit order
    shared = sorted((r for r in records if r.request_id == SHARED_REQUEST), key=commit_key)
    assert {r.service for r in shared} == set(SERVICES)
    assert len(shared) == 3
    assert _ids(list(query.iter_request(SHARED_REQUEST, page_size=1))) == _ids(shared)
    # the table timeline: a window over several hour buckets, exactly, both orders, paged
    since = START + dt.timedelta(minutes=13 * 3, microseconds=1)  # leaves step 3 out
    until = START + dt.timedelta(minutes=13 * 20)  # step 20 began here: its commit is later
    for service in SERVICES:
        inside = sorted(
            (r for r in records if r.service == service and since <= r.event_time <= until),
            key=commit_key,
        )
        hours = {r.event_time.replace(minute=0, second=0, microsecond=0) for r in inside}
        assert len(hours) >= 3
        for size in (1, 2, 3):
            oldest = query.iter_table(
                service, "users", since=since, until=until, newest_first=False, page_size=size
            )
            assert _ids(list(oldest)) == _ids(inside)
            newest_first = query.iter_table(
                service, "users", since=since, until=until, page_size=size
            )
            assert _ids(list(newest_first)) == _ids(inside[::-1])
