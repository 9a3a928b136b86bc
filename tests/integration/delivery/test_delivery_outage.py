"""Fault injection: SNS goes down, 1,000 changes are committed, SNS comes back -- nothing is lost.

Direct mode recovers through the publisher's spool; outbox mode through the relay. The SNS
endpoint is a switchable proxy in front of this folder's private moto server (see conftest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_audit import install_audit, uninstall_audit
from sqla_audit.outbox import OutboxWriter, create_outbox_table, outbox_counts, outbox_table
from sqla_audit.outbox.relay import OutboxRelay
from sqla_audit.publishers.sns import SNSHttpClient, SNSPublisher, SNSSender, build_publish_client
from sqla_audit.publishers.spool import EventSpool
from sqla_audit.retry import RetryPolicy

pytestmark = [pytest.mark.aws, pytest.mark.slow]

CHANGES = 1000
FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05)
OUTAGE = RetryPolicy(max_attempts=10**9, base_delay=0.05, max_delay=0.5)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "outage_items"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(50))
    version: Mapped[int]


def commit_changes(maker: sessionmaker[Session], count: int) -> set[str]:
    """Commit ``count`` changes: inserts, then updates of the same rows; return record ids."""
    inserts = count // 2
    for start in range(0, inserts, 50):
        with maker.begin() as session:
            session.add_all(
                Item(id=i, name=f"item {i}", version=0) for i in range(start, start + 50)
            )
    for start in range(0, count - inserts, 50):
        with maker.begin() as session:
            for item in session.scalars(
                sa.select(Item).where(Item.id >= start, Item.id < start + 50)
            ):
                item.version += 1
    return {str(i) for i in range(inserts)}


def lean_client_for(endpoint: str) -> SNSHttpClient:
    """The lean HTTP client for the test endpoint (dummy credentials)."""
    import boto3  # noqa: PLC0415

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    client = build_publish_client(endpoint_url=endpoint, region_name="us-east-1", session=session)
    assert isinstance(client, SNSHttpClient)
    return client


@pytest.mark.parametrize("transport", ["lean", "boto3"])
def test_direct_mode_spools_during_the_outage(
    private_aws: Any,
    sns_proxy: Any,
    sns_client_for: Callable[[str], Any],
    tmp_path: Path,
    transport: str,
) -> None:
    """With SNS unreachable, 1,000 committed changes go to the spool and all arrive later."""
    topic_arn, queue_url = private_aws.topic_with_queue()
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    maker = sessionmaker(engine)
    client = (
        lean_client_for(sns_proxy.url) if transport == "lean" else sns_client_for(sns_proxy.url)
    )
    publisher = SNSPublisher(
        topic_arn,
        client=client,
        spool=EventSpool(tmp_path / "spool"),
        retry=FAST,
        outage_retry=OUTAGE,
        register_atexit=False,
    )
    install_audit(maker, publisher=publisher, service="shop")
    try:
        sns_proxy.stop()
        record_ids = commit_changes(maker, CHANGES)
        assert not publisher.flush(1.0)
        stats = publisher.stats()
        assert stats.delivered == 0
        assert stats.spooled + stats.queued == CHANGES
        reader = private_aws.reader(queue_url)
        sns_proxy.start()
        assert publisher.flush(120)
        stats = publisher.stats()
        assert (stats.delivered, stats.dropped, stats.rejected) == (CHANGES, 0, 0)
        assert stats.spooled > 0
        assert stats.spool_bytes == 0
    finally:
        uninstall_audit(maker)
        publisher.close(timeout=5)
        engine.dispose()
    events = reader.wait(expected=CHANGES).events()
    assert len(events) == CHANGES
    assert len({e["event_id"] for e in events}) == CHANGES
    assert {e["record_id"] for e in events} == record_ids
    assert sorted(e["operation"] for e in events) == ["insert"] * 500 + ["update"] * 500


@pytest.fixture(params=["postgres", "mariadb"])
def outbox_engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """An engine on a fresh PostgreSQL or MariaDB database with the app and outbox tables."""
    url = request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(url)
    Base.metadata.drop_all(engine)
    outbox_table().drop(engine, checkfirst=True)
    Base.metadata.create_all(engine)
    create_outbox_table(engine)
    yield engine
    engine.dispose()


def test_outbox_mode_relays_after_the_outage(
    outbox_engine: sa.Engine,
    private_aws: Any,
    sns_proxy: Any,
    sns_client_for: Callable[[str], Any],
) -> None:
    """With SNS unreachable, 1,000 changes wait in the outbox; the relay sends all of them."""
    topic_arn, queue_url = private_aws.topic_with_queue()
    maker = sessionmaker(outbox_engine)
    install_audit(maker, outbox=OutboxWriter(), service="shop")
    try:
        sns_proxy.stop()
        record_ids = commit_changes(maker, CHANGES)
    finally:
        uninstall_audit(maker)
    assert outbox_counts(outbox_engine) == (CHANGES, 0)
    sender = SNSSender(topic_arn, client=sns_client_for(sns_proxy.url), retry=FAST)
    relay = OutboxRelay(outbox_engine, sender, batch_size=4)  # rows of 50 events each
    first = relay.run_once()
    assert (first.published, first.deferred) == (0, 200)
    assert outbox_counts(outbox_engine) == (CHANGES, 0)
    reader = private_aws.reader(queue_url)
    sns_proxy.start()
    result = relay.drain()
    assert (result.published, result.deferred) == (CHANGES, 0)
    assert outbox_counts(outbox_engine) == (0, 0)
    events = reader.wait(expected=CHANGES).events()
    assert len(events) == CHANGES
    assert len({e["event_id"] for e in events}) == CHANGES
    assert {e["record_id"] for e in events} == record_ids
