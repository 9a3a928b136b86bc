"""The outbox relay on SQLite: id order, delete on acceptance, park refusals, retry outages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from sqla_audit.events import ChangeEvent
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table
from sqla_audit.outbox.relay import OutboxRelay, RelayResult, is_transient_conflict
from sqla_audit.publishers.sns import OutgoingMessage, SendOutcome, SNSRejectedError, SNSSender
from sqla_audit.retry import RetryPolicy, Sleeper

TOPIC = "arn:aws:sns:us-east-1:123456789012:audit"
FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.01)

EventFactory = Callable[..., ChangeEvent]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A SQLite file database with an empty outbox."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    create_outbox_table(engine)
    yield engine
    engine.dispose()


def commit_events(engine: sa.Engine, events: Sequence[ChangeEvent]) -> None:
    with engine.begin() as connection:
        OutboxWriter().write(connection, events)


def make_relay(engine: sa.Engine, client: Any, **kwargs: Any) -> OutboxRelay:
    kwargs.setdefault(
        "outage_retry", RetryPolicy(max_attempts=10**9, base_delay=0.001, max_delay=0.01)
    )
    return OutboxRelay(engine, SNSSender(TOPIC, client=client, retry=FAST), **kwargs)


def ids(events: Sequence[ChangeEvent]) -> list[str]:
    return [str(e.event_id) for e in events]


def test_pending_rows_are_published_in_order_and_deleted(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """One pass publishes the rows by ascending id and deletes them."""
    events = [event_factory(sequence=i) for i in range(25)]
    commit_events(engine, events[:10])
    commit_events(engine, events[10:])
    result = make_relay(engine, fake_sns).run_once()
    assert result == RelayResult(published=25)
    assert fake_sns.accepted_ids == ids(events)
    assert outbox_counts(engine) == (0, 0)


def test_batch_size_limits_a_pass_and_drain_loops(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """run_once takes batch_size rows; drain repeats until the outbox is empty."""
    events = [event_factory(sequence=i) for i in range(23)]
    for event in events:  # one transaction, so one row, each
        commit_events(engine, [event])
    relay = make_relay(engine, fake_sns, batch_size=10)
    assert relay.run_once().published == 10
    assert relay.drain() == RelayResult(published=13)
    assert fake_sns.accepted_ids == ids(events)
    assert relay.totals == {"published": 23, "parked": 0}


def test_rows_stay_while_sns_is_down(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """Rows SNS did not take stay pending and go out on a later pass, still in order."""
    events = [event_factory(sequence=i) for i in range(5)]
    commit_events(engine, events)
    relay = make_relay(engine, fake_sns)
    fake_sns.down = True
    assert relay.run_once() == RelayResult(deferred=5)
    assert outbox_counts(engine) == (5, 0)
    fake_sns.down = False
    assert relay.drain().published == 5
    assert fake_sns.accepted_ids == ids(events)


def test_refused_rows_are_parked_and_reported(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """A row SNS refuses for good is parked with its reason and reported to on_error."""
    events = [event_factory(sequence=i) for i in range(3)]
    commit_events(engine, events)
    fake_sns.entry_failures[str(events[1].event_id)] = [("InvalidParameter", True)]
    reported: list[tuple[BaseException, list[ChangeEvent]]] = []
    relay = make_relay(engine, fake_sns, on_error=lambda e, evs: reported.append((e, list(evs))))
    assert relay.run_once() == RelayResult(published=2, parked=1)
    assert outbox_counts(engine) == (0, 1)
    table = outbox_table()
    with engine.connect() as connection:
        row = connection.execute(sa.select(table)).one()
    assert row.event_id == str(events[1].event_id)
    assert "InvalidParameter" in row.last_error
    assert row.failed_at is not None
    ((error, evs),) = reported
    assert isinstance(error, SNSRejectedError)
    assert evs == [events[1]]
    assert relay.run_once() == RelayResult()  # parked rows are not selected again


def test_undecodable_payload_is_parked(engine: sa.Engine, fake_sns: Any) -> None:
    """A payload that is not an event is parked, not retried forever."""
    table = outbox_table()
    with engine.begin() as connection:
        connection.execute(
            table.insert().values(
                event_id="x",
                transaction_id="y",
                table_name="t",
                record_id="1",
                payload="{not json",
                created_at=sa.func.now(),
            )
        )
    result = make_relay(engine, fake_sns).run_once()
    assert result == RelayResult(parked=1)
    assert fake_sns.calls == []


class PublishThenCrash:
    """A sender that publishes, then fails before the relay can delete (a crash stand-in)."""

    def __init__(self, inner: SNSSender) -> None:
        self.inner = inner
        self.crash = True

    def send(
        self, messages: Sequence[OutgoingMessage], *, sleep: Sleeper | None = None
    ) -> SendOutcome:
        outcome = self.inner.send(messages, sleep=sleep)
        if self.crash:
            raise KeyboardInterrupt("relay killed between publish and delete")
        return outcome


def test_failure_between_publish_and_delete_only_duplicates(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """If the relay dies after SNS accepted, rows stay and are published again (same ids)."""
    events = [event_factory(sequence=i) for i in range(4)]
    commit_events(engine, events)
    sender = PublishThenCrash(SNSSender(TOPIC, client=fake_sns, retry=FAST))
    relay = OutboxRelay(engine, sender)
    with pytest.raises(KeyboardInterrupt):
        relay.run_once()
    assert outbox_counts(engine) == (4, 0)
    sender.crash = False
    assert relay.run_once().published == 4
    assert fake_sns.accepted_ids == ids(events) * 2
    assert outbox_counts(engine) == (0, 0)


def test_run_polls_until_stopped(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory
) -> None:
    """run() keeps relaying rows committed while it polls and returns after stop()."""
    relay = make_relay(engine, fake_sns, poll_interval=0.01, batch_size=3)
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        events = [event_factory(sequence=i) for i in range(7)]
        commit_events(engine, events)
        deadline = time.monotonic() + 10
        while len(fake_sns.accepted) < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        fake_sns.down = True  # exercise the outage back-off path while running
        commit_events(engine, [event_factory()])
        deadline = time.monotonic() + 10
        while len(fake_sns.calls) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        relay.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert relay.stopping
    assert fake_sns.accepted_ids == ids(events)


def test_run_survives_database_errors(fake_sns: Any, tmp_path: Path) -> None:
    """A database error is reported and retried with back-off instead of ending run()."""
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'none.db'}")  # no outbox table
    errors: list[BaseException] = []
    relay = make_relay(engine, fake_sns, on_error=lambda e, evs: errors.append(e))
    thread = threading.Thread(target=relay.run)
    thread.start()
    deadline = time.monotonic() + 10
    while len(errors) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.stop()
    thread.join(10)
    engine.dispose()
    assert len(errors) >= 2
    assert isinstance(errors[0], sa.exc.OperationalError)


def test_relay_settings_are_validated(engine: sa.Engine, fake_sns: Any) -> None:
    """A zero batch size or a negative poll interval is refused."""
    with pytest.raises(ValueError, match="batch_size"):
        make_relay(engine, fake_sns, batch_size=0)
    with pytest.raises(ValueError, match="poll_interval"):
        make_relay(engine, fake_sns, poll_interval=-1)


def test_select_uses_skip_locked_where_supported(engine: sa.Engine, fake_sns: Any) -> None:
    """The pass's SELECT renders FOR UPDATE SKIP LOCKED on PostgreSQL and MySQL/MariaDB."""
    select = make_relay(engine, fake_sns)._select()
    assert "FOR UPDATE SKIP LOCKED" in str(select.compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE SKIP LOCKED" in str(select.compile(dialect=mysql.dialect()))


class DriverError(Exception):
    """Stands in for a DBAPI exception with a SQLSTATE or a MySQL error number."""

    def __init__(self, *args: object, sqlstate: str | None = None) -> None:
        super().__init__(*args)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (DriverError("deadlock detected", sqlstate="40P01"), True),
        (DriverError("could not serialize", sqlstate="40001"), True),
        (DriverError(1213, "Deadlock found when trying to get lock"), True),
        (DriverError(1205, "Lock wait timeout exceeded"), True),
        (DriverError(1146, "Table doesn't exist"), False),
        (DriverError("syntax error", sqlstate="42601"), False),
    ],
)
def test_conflicts_are_recognised(orig: Exception, expected: bool) -> None:
    """Deadlocks, serialization failures and lock timeouts of PostgreSQL and MySQL are retryable."""
    error = sa.exc.OperationalError("DELETE ...", {}, orig)
    assert is_transient_conflict(error) is expected


def test_drain_retries_a_pass_aborted_by_a_deadlock(
    engine: sa.Engine, fake_sns: Any, event_factory: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass rolled back by a deadlock is retried; other database errors propagate."""
    commit_events(engine, [event_factory() for _ in range(3)])
    relay = make_relay(engine, fake_sns)
    real_run_once = relay.run_once
    failures = [sa.exc.OperationalError("DELETE", {}, DriverError(1213, "Deadlock"))]

    def flaky() -> RelayResult:
        if failures:
            raise failures.pop()
        return real_run_once()

    monkeypatch.setattr(relay, "run_once", flaky)
    assert relay.drain().published == 3
    failures.append(sa.exc.OperationalError("SELECT", {}, DriverError(1146, "no table")))
    with pytest.raises(sa.exc.OperationalError):
        relay.drain()
