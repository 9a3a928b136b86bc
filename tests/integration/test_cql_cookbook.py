"""docs/cql.md, executed: every statement of the CQL cookbook against a real Cassandra node.

The test reads docs/cql.md, takes each fenced ``sql`` block after a ``<!-- cql: NAME -->``
marker, replaces only the keyspace (``sqla_audit.``) and the example transaction id, and runs
the statement verbatim. The data comes from the real pipeline: an ORM model audited with
``install_audit``, its messages consumed by the real worker into the Cassandra store. The
producer's clock is set per transaction so the changes fall on the documented example dates
(2026-01-09 and 2026-01-10); everything else is real.

Each statement's answer is checked against the published events and against the query API
asking the same question, so the doc, the API and the data model cannot drift apart.
A statement added to the doc without a check here (or the reverse) fails the test.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from cassandra_support import cassandra_config
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from consumer.differ import record_for_event
from consumer.query import AuditQuery
from consumer.records import to_millis
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sources.base import Message
from consumer.sources.memory import MemorySource
from consumer.worker import Worker
from sqla_audit.context import audit_context
from sqla_audit.events import ChangeEvent
from sqla_audit.install import install_audit, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.tracing import TRACE_ID_KEY

if TYPE_CHECKING:
    from cassandra.cluster import Session as CassandraSession

DOC = Path(__file__).resolve().parents[2] / "docs" / "cql.md"
UTC = dt.UTC

#: The example values the doc lists, and what the test puts in their place (None: kept).
EXAMPLE_TRANSACTION = "0192e4a1-7b2c-7d3e-8f40-123456789abc"
EXAMPLES_KEPT = {
    "sqla_audit",
    "'billing'",
    "'users'",
    "'42'",
    "'req-42'",
    "'4bf92f3577b34da6a3ce929d0e0e4736'",
    "'2026-01-10 10:00:00.000+0000'",
    "'alice'",
    "'2026-01-10'",
    "'2026-01-09'",
    "'2026-01-10 09:00:00.000+0000'",
    "'2026-01-10 17:00:00.000+0000'",
    "'2026-01-10 12:00:00.000+0000'",
    "202601",
}
WINDOW = (dt.datetime(2026, 1, 10, 9, tzinfo=UTC), dt.datetime(2026, 1, 10, 17, tzinfo=UTC))
AS_OF = dt.datetime(2026, 1, 10, 12, tzinfo=UTC)
#: The step made under the example request id and trace id, in the example hour bucket.
REQUEST_AT = dt.datetime(2026, 1, 10, 10, tzinfo=UTC)
REQUEST_ID = "req-42"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
DAY = dt.date(2026, 1, 10)


# --------------------------------------------------------------------------- the doc


@dataclass(frozen=True)
class Statement:
    name: str
    time_bucket: str
    cql: str


_BLOCK = re.compile(
    r"<!-- cql: (?P<name>[\w-]+)(?: time_bucket=(?P<bucket>\w+))? -->\n```sql\n(?P<cql>.*?)\n```",
    re.DOTALL,
)
_EXAMPLES = re.compile(r"<!-- cql-examples -->\n(?P<table>.*?)<!-- /cql-examples -->", re.DOTALL)


def doc_statements() -> dict[str, Statement]:
    text = DOC.read_text(encoding="utf-8")
    found = [
        Statement(m["name"], m["bucket"] or "none", m["cql"].strip()) for m in _BLOCK.finditer(text)
    ]
    assert len({s.name for s in found}) == len(found), "statement names must be unique"
    return {s.name: s for s in found}


def doc_examples() -> set[str]:
    match = _EXAMPLES.search(DOC.read_text(encoding="utf-8"))
    assert match is not None, "docs/cql.md lost its example table"
    examples = set()
    for line in match["table"].splitlines():
        cell = re.match(r"^\| `([^`]+)` \|", line)
        if cell:
            examples.add(cell.group(1))
    return examples


# --------------------------------------------------------------------------- the data


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(50))
    email: Mapped[str] = mapped_column(sa.String(100))
    plan: Mapped[str] = mapped_column(sa.String(20))


class ManualClock:
    """The producer's clock: set before each transaction, 250 µs further at each reading."""

    def __init__(self) -> None:
        self.now = dt.datetime(2000, 1, 1, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(microseconds=250)
        return self.now


def _add(session: Session, user_id: int, name: str) -> None:
    session.add(User(id=user_id, name=name, email=f"{name.lower()}@example.com", plan="free"))


def _set(user_id: int, **values: str) -> Callable[[Session], None]:
    def change(session: Session) -> None:
        user = session.get_one(User, user_id)
        for key, value in values.items():
            setattr(user, key, value)

    return change


def _first_transaction(session: Session) -> None:
    _add(session, 42, "Ada")
    session.flush()
    _set(7, plan="pro")(session)


#: (UTC time, actor, change) -- one transaction each.
SCRIPT: list[tuple[dt.datetime, str, Callable[[Session], None]]] = [
    (dt.datetime(2026, 1, 9, 15, tzinfo=UTC), "alice", lambda s: _add(s, 7, "Grace")),
    (dt.datetime(2026, 1, 10, 8, tzinfo=UTC), "alice", _first_transaction),
    (dt.datetime(2026, 1, 10, 10, tzinfo=UTC), "bob", _set(42, email="ada@lovelace.org")),
    (dt.datetime(2026, 1, 10, 13, tzinfo=UTC), "alice", lambda s: s.delete(s.get_one(User, 42))),
    (dt.datetime(2026, 1, 10, 15, tzinfo=UTC), "bob", lambda s: _add(s, 42, "Ada")),
    (dt.datetime(2026, 1, 10, 18, tzinfo=UTC), "alice", _set(42, plan="pro")),
    (dt.datetime(2026, 2, 2, 10, tzinfo=UTC), "carol", _set(42, name="Ada L.")),
]


def produce(tmp: Path) -> list[ChangeEvent]:
    """Run :data:`SCRIPT` on an audited SQLite database; the events, in commit order."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp / 'app.db'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    publisher = InMemoryPublisher()
    clock = ManualClock()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sqla_audit.capture.utcnow", clock)
            patch.setattr("sqla_audit.delivery.utcnow", clock)
            install_audit(factory, publisher=publisher, service="billing")
            try:
                for at, actor, change in SCRIPT:
                    clock.now = at
                    traced = at == REQUEST_AT
                    context = audit_context(
                        actor=actor,
                        request_id=REQUEST_ID if traced else None,
                        **({TRACE_ID_KEY: TRACE_ID} if traced else {}),
                    )
                    with context, factory.begin() as session:
                        change(session)
            finally:
                uninstall_audit(factory)
    finally:
        engine.dispose()
    return publisher.events


@dataclass
class Filled:
    events: list[ChangeEvent]
    keyspaces: dict[str, str]  # time bucket -> keyspace
    queries: dict[str, AuditQuery]  # time bucket -> query API on that keyspace


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory,
    cassandra_contact: str,
    cassandra_session: CassandraSession,
    cassandra_keyspace: str,
) -> Iterator[Filled]:
    """The events of :data:`SCRIPT`, consumed into a plain and a month-bucketed keyspace."""
    events = produce(tmp_path_factory.mktemp("cookbook"))
    bodies = [event.to_json() for event in events]
    keyspaces = {"none": cassandra_keyspace, "month": f"{cassandra_keyspace}_month"}
    stores: dict[str, CassandraStore] = {}
    try:
        for bucket, keyspace in keyspaces.items():
            config = cassandra_config(cassandra_contact, keyspace, time_bucket=bucket)
            apply_schema(config)
            store = stores[bucket] = CassandraStore.connect(config)
            worker = Worker(MemorySource(), store, concurrency=1)
            messages = [Message(f"m-{i}", body) for i, body in enumerate(bodies)]
            for start in range(0, len(messages), 10):
                result = worker.process(messages[start : start + 10])
                assert not result.rejected
                assert not result.released
        yield Filled(events, keyspaces, {b: AuditQuery(s) for b, s in stores.items()})
    finally:
        for store in stores.values():
            store.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspaces['month']}")


# --------------------------------------------------------------------------- expectations


def _of_42(events: list[ChangeEvent]) -> list[ChangeEvent]:
    return [e for e in events if e.table == "users" and e.record_id == "42"]


def newest_first(events: list[ChangeEvent]) -> list[ChangeEvent]:
    return sorted(events, key=lambda e: (to_millis(e.committed_at), e.event_id), reverse=True)


def _ms(value: dt.datetime) -> int:
    """Milliseconds of a driver timestamp (naive UTC) or an aware datetime."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return to_millis(aware)


def _changes(event: ChangeEvent) -> dict[str, Any]:
    record = record_for_event(event)
    assert record is not None
    return {name: change.to_dict() for name, change in record.changes.items()}


def _in_window(event: ChangeEvent) -> bool:
    return WINDOW[0] <= event.committed_at <= WINDOW[1]


def _by_alice(events: list[ChangeEvent]) -> list[ChangeEvent]:
    return [e for e in events if e.actor is not None and e.actor.id == "alice"]


def _history_rows(rows: list[Any], expected: list[ChangeEvent]) -> None:
    assert [(_ms(r.event_time), r.operation, r.actor_id, r.transaction_id) for r in rows] == [
        (
            to_millis(e.committed_at),
            e.operation.value,
            e.actor.id if e.actor else None,
            e.transaction_id,
        )
        for e in expected
    ]
    assert [json.loads(r.changes) for r in rows] == [_changes(e) for e in expected]


def check_history(rows: list[Any], filled: Filled) -> None:
    expected = newest_first(_of_42(filled.events))
    _history_rows(rows, expected)
    api = list(filled.queries["none"].iter_history("users", "42"))
    assert [r.event_id for r in api] == [e.event_id for e in expected]


def check_history_window(rows: list[Any], filled: Filled) -> None:
    expected = [e for e in newest_first(_of_42(filled.events)) if _in_window(e)]
    assert [e.operation.value for e in expected] == ["insert", "delete", "update"]
    _history_rows(rows, expected)
    api = filled.queries["none"].iter_history("users", "42", since=WINDOW[0], until=WINDOW[1])
    assert [r.event_id for r in api] == [e.event_id for e in expected]


def check_first_change(rows: list[Any], filled: Filled) -> None:
    first = _of_42(filled.events)[0]
    ((row,),) = [rows]
    assert (row.operation, row.actor_id) == ("insert", "alice")
    assert json.loads(row.after) == first.after


def check_count(rows: list[Any], filled: Filled) -> None:
    assert [row.count for row in rows] == [len(_of_42(filled.events))]


def check_as_of(rows: list[Any], filled: Filled) -> None:
    ((row,),) = [rows]
    expected = [e for e in _of_42(filled.events) if e.committed_at <= AS_OF][-1]
    assert (row.operation, row.actor_id) == ("update", "bob")
    assert json.loads(row.after) == expected.after
    state = filled.queries["none"].as_of("users", "42", AS_OF)
    assert state.exists
    assert state.wire_values == json.loads(row.after)


def check_actor_day(rows: list[Any], filled: Filled) -> None:
    expected = [e for e in newest_first(_by_alice(filled.events)) if e.committed_at.date() == DAY]
    assert [(r.table_name, r.record_id, r.operation) for r in rows] == [
        (e.table, e.record_id, e.operation.value) for e in expected
    ]
    assert [json.loads(r.changes) for r in rows] == [_changes(e) for e in expected]


def check_actor_window(rows: list[Any], filled: Filled) -> None:
    expected = [e for e in newest_first(_by_alice(filled.events)) if _in_window(e)]
    assert [(r.record_id, r.operation) for r in rows] == [("42", "delete")]
    assert [_ms(r.event_time) for r in rows] == [to_millis(e.committed_at) for e in expected]
    api = filled.queries["none"].iter_by_actor("alice", since=WINDOW[0], until=WINDOW[1])
    assert [r.event_id for r in api] == [e.event_id for e in expected]


def check_actor_days(rows: list[Any], filled: Filled) -> None:
    days = {DAY, DAY - dt.timedelta(days=1)}
    expected = [e for e in newest_first(_by_alice(filled.events)) if e.committed_at.date() in days]
    got = [(r.day.date(), _ms(r.event_time), r.record_id, r.operation) for r in rows]
    # each day newest first; the days themselves in token order
    for day in days:
        in_day = [g for g in got if g[0] == day]
        assert in_day == sorted(in_day, key=lambda g: g[1], reverse=True)
    assert sorted(got) == sorted(
        (e.committed_at.date(), to_millis(e.committed_at), e.record_id, e.operation.value)
        for e in expected
    )


def check_transaction(rows: list[Any], filled: Filled) -> None:
    txn = transaction_example(filled)
    expected = sorted(
        (e for e in filled.events if e.transaction_id == txn), key=lambda e: e.sequence
    )
    assert [(r.sequence, r.table_name, r.record_id, r.operation, r.actor_id) for r in rows] == [
        (e.sequence, e.table, e.record_id, e.operation.value, "alice") for e in expected
    ]
    assert {(r.record_id, r.operation) for r in rows} == {("42", "insert"), ("7", "update")}
    assert [r.event_id for r in filled.queries["none"].by_transaction(txn)] == [
        e.event_id for e in expected
    ]


def check_buckets(rows: list[Any], filled: Filled) -> None:
    assert [row.bucket for row in rows] == [202602, 202601]


def check_history_bucket(rows: list[Any], filled: Filled) -> None:
    expected = [
        e
        for e in newest_first(_of_42(filled.events))
        if (e.committed_at.year, e.committed_at.month) == (2026, 1)
    ]
    _history_rows(rows, expected)
    api = list(filled.queries["month"].iter_history("users", "42"))
    assert [r.event_id for r in api] == [e.event_id for e in newest_first(_of_42(filled.events))]


def check_services(rows: list[Any], filled: Filled) -> None:
    assert [row.service for row in rows] == ["billing"]
    assert filled.queries["none"].services_of("users", "42") == ["billing"]


def _requested(filled: Filled) -> list[ChangeEvent]:
    found = [e for e in filled.events if e.request_id == REQUEST_ID]
    assert [e.committed_at.replace(microsecond=0) for e in found] == [REQUEST_AT]
    return found


def check_request(rows: list[Any], filled: Filled) -> None:
    expected = _requested(filled)
    assert [(r.service, r.table_name, r.record_id, r.operation) for r in rows] == [
        (e.service, e.table, e.record_id, e.operation.value) for e in expected
    ]
    assert [json.loads(r.changes) for r in rows] == [_changes(e) for e in expected]
    api = filled.queries["none"].iter_request(REQUEST_ID)
    assert [r.event_id for r in api] == [e.event_id for e in expected]


def check_trace(rows: list[Any], filled: Filled) -> None:
    expected = _requested(filled)
    assert [(r.service, r.record_id, r.operation) for r in rows] == [
        (e.service, e.record_id, e.operation.value) for e in expected
    ]
    api = filled.queries["none"].iter_trace(TRACE_ID)
    assert [r.event_id for r in api] == [e.event_id for e in expected]


def check_table_hour(rows: list[Any], filled: Filled) -> None:
    end = REQUEST_AT + dt.timedelta(hours=1)
    expected = sorted(
        (e for e in filled.events if e.table == "users" and REQUEST_AT <= e.committed_at < end),
        key=lambda e: (e.committed_at, e.sequence),
    )
    assert expected
    assert [(r.record_id, r.operation, r.actor_id) for r in rows] == [
        (e.record_id, e.operation.value, e.actor.id if e.actor else None) for e in expected
    ]
    api = filled.queries["none"].iter_table(
        "billing",
        "users",
        since=REQUEST_AT,
        until=end - dt.timedelta(microseconds=1),
        newest_first=False,
    )
    assert [r.event_id for r in api] == [e.event_id for e in expected]


CHECKS: dict[str, Callable[[list[Any], Filled], None]] = {
    "services": check_services,
    "request": check_request,
    "trace": check_trace,
    "table-hour": check_table_hour,
    "history": check_history,
    "history-window": check_history_window,
    "first-change": check_first_change,
    "count": check_count,
    "as-of": check_as_of,
    "actor-day": check_actor_day,
    "actor-window": check_actor_window,
    "actor-days": check_actor_days,
    "transaction": check_transaction,
    "buckets": check_buckets,
    "history-bucket": check_history_bucket,
}


def transaction_example(filled: Filled) -> uuid.UUID:
    """The transaction the doc's example id stands for: the one that changed two users."""
    return filled.events[1].transaction_id


def substitute(statement: Statement, filled: Filled) -> str:
    """The statement as a user would type it for this cluster: keyspace and transaction id."""
    keyspace = filled.keyspaces[statement.time_bucket]
    return statement.cql.replace("sqla_audit.", f"{keyspace}.").replace(
        EXAMPLE_TRANSACTION, str(transaction_example(filled))
    )


# --------------------------------------------------------------------------- tests


def test_every_doc_statement_has_a_check() -> None:
    """Each statement in docs/cql.md is checked here, and each check has its statement."""
    assert set(doc_statements()) == set(CHECKS)


def test_example_values_are_the_ones_the_test_knows() -> None:
    """The doc's example table lists exactly the values this test keeps or substitutes."""
    assert doc_examples() == EXAMPLES_KEPT | {EXAMPLE_TRANSACTION}


def test_script_falls_on_the_documented_dates() -> None:
    """The scripted changes are around the doc's example day, window and as-of instant."""
    assert any(at.date() == DAY - dt.timedelta(days=1) for at, _, _ in SCRIPT)
    assert any(WINDOW[0] <= at <= AS_OF for at, _, _ in SCRIPT)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_doc_statement(name: str, filled: Filled, cassandra_session: CassandraSession) -> None:
    """The cookbook statement runs verbatim in Cassandra and answers its question correctly."""
    statement = doc_statements()[name]
    rows = list(cassandra_session.execute(substitute(statement, filled)))
    CHECKS[name](rows, filled)
