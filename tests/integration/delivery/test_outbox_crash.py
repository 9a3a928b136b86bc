"""Outbox mode across crashes: SIGKILLed applications and relays lose nothing.

* The application process commits transactions in outbox mode (and rolls some back, and
  leaves one open) and is SIGKILLed right after its last commit returned: the relay later
  publishes exactly the committed events -- nothing from the rolled-back or open ones.
* Two relays drain one outbox at the same time: every event is published once.
* A relay SIGKILLed between SNS accepting a batch and its delete committing causes
  duplicates only, and the consumer's idempotent store absorbs them.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from consumer.decoding import Decoder
from consumer.differ import record_for_event
from consumer.sinks.memory import MemoryStore
from sqla_audit.events import ChangeEvent, Operation, new_event_id
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table
from sqla_audit.outbox.relay import OutboxRelay
from sqla_audit.publishers.sns import SNSSender
from sqla_audit.retry import RetryPolicy

pytestmark = [pytest.mark.aws, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "crash_orders"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(sa.String(20))


APPLICATION = textwrap.dedent(
    """
    import os, signal, sys
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
    from sqla_audit import install_audit
    from sqla_audit.outbox import OutboxWriter

    class Base(DeclarativeBase):
        pass

    class Order(Base):
        __tablename__ = "crash_orders"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        status: Mapped[str] = mapped_column(sa.String(20))

    engine = sa.create_engine(sys.argv[1])
    maker = sessionmaker(engine)
    install_audit(maker, outbox=OutboxWriter(), service="crashy")
    for i in range(int(sys.argv[2])):
        if i % 5 == 4:
            with maker() as session:
                session.add(Order(id=i, status="doomed"))
                session.flush()
                session.rollback()
            print("rolled-back", i, flush=True)
        else:
            with maker.begin() as session:
                session.add(Order(id=i, status="new"))
            with maker.begin() as session:
                session.get(Order, i).status = "paid"
            print("committed", i, flush=True)
    session = maker()
    session.add(Order(id=100000, status="open"))
    session.flush()
    print("open transaction flushed; killing myself", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)

RELAY = textwrap.dedent(
    """
    import os, signal, sys
    import boto3
    import sqlalchemy as sa
    from sqla_audit.outbox.relay import OutboxRelay
    from sqla_audit.publishers.sns import SNSSender

    url, endpoint, topic_arn = sys.argv[1:4]
    client = boto3.client(
        "sns", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )

    class KilledAfterPublish(SNSSender):
        def send(self, messages, *, sleep=None):
            outcome = super().send(messages, sleep=sleep)
            print("published", len(outcome.accepted), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # before the relay can delete the rows
            return outcome

    relay = OutboxRelay(sa.create_engine(url), KilledAfterPublish(topic_arn, client=client),
                        batch_size=int(sys.argv[4]))
    relay.run_once()
    """
)


def run_child(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(params=["postgres", "mariadb"])
def db(request: pytest.FixtureRequest) -> Iterator[tuple[str, sa.Engine]]:
    """URL and engine of a fresh PostgreSQL or MariaDB database with the tables created."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(url)
    Base.metadata.drop_all(engine)
    outbox_table().drop(engine, checkfirst=True)
    Base.metadata.create_all(engine)
    create_outbox_table(engine)
    yield url, engine
    engine.dispose()


def sender_for(private_aws: Any, topic_arn: str, sns_client_for: Any) -> SNSSender:
    return SNSSender(topic_arn, client=sns_client_for(private_aws.endpoint), retry=FAST)


def test_sigkilled_application_loses_no_committed_event(
    db: tuple[str, sa.Engine], private_aws: Any, sns_client_for: Any, tmp_path: Path
) -> None:
    """After a SIGKILL, the relay publishes every committed event and nothing else."""
    url, engine = db
    child = run_child(tmp_path, APPLICATION, url, "40")
    assert child.returncode == -signal.SIGKILL, child.stderr
    lines = [line.split() for line in child.stdout.splitlines()]
    committed = {words[1] for words in lines if words[0] == "committed"}
    rolled_back = {words[1] for words in lines if words[0] == "rolled-back"}
    assert (len(committed), len(rolled_back)) == (32, 8)
    assert outbox_counts(engine) == (64, 0)  # an insert and an update per committed order

    topic_arn, queue_url = private_aws.topic_with_queue()
    reader = private_aws.reader(queue_url)
    relay = OutboxRelay(engine, sender_for(private_aws, topic_arn, sns_client_for))
    assert relay.drain().published == 64
    events = [ChangeEvent.from_dict(e) for e in reader.wait(expected=64).events()]
    assert len(events) == 64
    assert {e.record_id for e in events} == committed
    assert sorted(e.operation.value for e in events) == ["insert"] * 32 + ["update"] * 32
    assert {e.service for e in events} == {"crashy"}


def make_outbox_rows(engine: sa.Engine, count: int) -> list[ChangeEvent]:
    """Commit ``count`` insert events straight through the writer, 100 per transaction."""
    events: list[ChangeEvent] = []
    writer = OutboxWriter()
    for start in range(0, count, 100):
        transaction_id = uuid.uuid4()
        batch = []
        for n in range(start, min(start + 100, count)):
            now = dt.datetime.now(dt.UTC)
            batch.append(
                ChangeEvent(
                    event_id=new_event_id(),
                    occurred_at=now,
                    committed_at=now,
                    service="relays",
                    table="crash_orders",
                    record_id=str(n),
                    primary_key={"id": n},
                    operation=Operation.INSERT,
                    before=None,
                    after={"id": n, "status": "new"},
                    changed_columns=["id", "status"],
                    transaction_id=transaction_id,
                    sequence=n - start,
                )
            )
        with engine.begin() as connection:
            writer.write(connection, batch)
        events.extend(batch)
    return events


def test_two_relays_publish_each_event_once(
    db: tuple[str, sa.Engine], private_aws: Any, sns_client_for: Any
) -> None:
    """Two relays draining one outbox concurrently publish every event exactly once."""
    url, engine = db
    events = make_outbox_rows(engine, 600)
    topic_arn, queue_url = private_aws.topic_with_queue()
    reader = private_aws.reader(queue_url)
    relays = [
        OutboxRelay(
            sa.create_engine(url),
            sender_for(private_aws, topic_arn, sns_client_for),
            batch_size=20,
        )
        for _ in range(2)
    ]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def drain(relay: OutboxRelay) -> None:
        start.wait()
        try:
            while outbox_counts(relay.engine)[0]:
                relay.drain()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    for relay in relays:
        relay.engine.dispose()
    assert errors == []
    assert sum(relay.totals["published"] for relay in relays) == 600
    received = reader.wait(expected=600).event_ids()
    assert len(received) == 600
    assert sorted(received) == sorted(str(e.event_id) for e in events)
    assert outbox_counts(engine) == (0, 0)


def test_relay_killed_before_delete_only_duplicates(
    db: tuple[str, sa.Engine], private_aws: Any, sns_client_for: Any, tmp_path: Path
) -> None:
    """A relay SIGKILLed after publishing re-sends that batch; the store keeps each event once.

    The rows hold 100-event transactions (layout 2): the killed pass took one row."""
    url, engine = db
    events = make_outbox_rows(engine, 200)
    topic_arn, queue_url = private_aws.topic_with_queue()
    reader = private_aws.reader(queue_url)
    child = run_child(tmp_path, RELAY, url, private_aws.endpoint, topic_arn, "1")
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["published", "100"]
    assert outbox_counts(engine) == (200, 0)  # the killed relay's transaction rolled back

    relay = OutboxRelay(engine, sender_for(private_aws, topic_arn, sns_client_for))
    assert relay.drain().published == 200
    received = reader.wait(expected=300)
    ids = received.event_ids()
    assert len(ids) == 300
    assert set(ids) == {str(e.event_id) for e in events}
    duplicated = {i for i in ids if ids.count(i) == 2}
    assert duplicated == {str(e.event_id) for e in events[:100]}

    store = MemoryStore()
    decoder = Decoder()
    for body in received.bodies:
        for event in decoder.decode(body):
            record = record_for_event(event)
            assert record is not None
            store.write([record])
    assert len(store.records) == 200
    assert sorted(str(r.event_id) for r in store.records) == sorted(str(e.event_id) for e in events)
