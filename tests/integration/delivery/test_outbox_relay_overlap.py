"""Overlapped relay passes on PostgreSQL and MariaDB: a pass that SNS did not take stops the
relay before the prefetched pass is sent, and nothing is lost or reordered."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from consumer.testing import make_event
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_table, outbox_tally
from sqla_audit.outbox.relay import OutboxRelay
from sqla_audit.publishers.sns import SNSSender
from sqla_audit.retry import RetryPolicy

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05)


@pytest.fixture(params=["postgres", "mariadb"])
def engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """A fresh PostgreSQL or MariaDB database with an empty outbox table."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    made = sa.create_engine(url)
    outbox_table().drop(made, checkfirst=True)
    create_outbox_table(made)
    yield made
    made.dispose()


def transactions(engine: sa.Engine, count: int, size: int) -> list[list[ChangeEvent]]:
    written = []
    for t in range(count):
        batch = [
            make_event(operation=Operation.INSERT, record_id=f"{t}-{i}", sequence=i)
            for i in range(size)
        ]
        with engine.begin() as connection:
            OutboxWriter().write(connection, batch)
        written.append(batch)
    return written


def payloads(engine: sa.Engine) -> list[tuple[int, str]]:
    table = outbox_table()
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.select(table.c.id, table.c.payload))]


def test_a_pass_sns_did_not_take_drops_the_prefetched_one(
    engine: sa.Engine,
    private_aws: Any,
    sns_proxy: Any,
    sns_client_for: Callable[[str], Any],
) -> None:
    """With SNS down, an overlapped drain tries one pass, rolls the prefetched one back
    unsent and leaves every row as it was; once SNS is back all events go out once."""
    written = transactions(engine, 6, 5)
    before = payloads(engine)
    topic_arn, queue_url = private_aws.topic_with_queue()
    sender = SNSSender(topic_arn, client=sns_client_for(sns_proxy.url), retry=FAST)
    relay = OutboxRelay(engine, sender, batch_size=2)
    assert relay.overlap
    sns_proxy.stop()
    result = relay.drain()
    assert (result.published, result.deferred) == (0, 10)  # one pass: 2 rows of 5 events
    assert payloads(engine) == before
    assert outbox_tally(engine) == (30, 0, 6, 0)
    sns_proxy.start()
    reader = private_aws.reader(queue_url)
    assert relay.drain().published == 30
    received = reader.wait(expected=30).event_ids()
    assert sorted(received) == sorted(str(e.event_id) for batch in written for e in batch)
    assert outbox_tally(engine) == (0, 0, 0, 0)
