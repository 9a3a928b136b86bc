"""End to end: an application on PostgreSQL with install_audit, SNS, SQS, the worker, Cassandra."""

from __future__ import annotations

import decimal
import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from cassandra_support import cassandra_config, wait_for
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from consumer.config import SqsConfig
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.sources.sqs import SqsSource
from consumer.worker import Worker
from sqla_audit import install_audit, uninstall_audit
from sqla_audit.context import audit_context
from sqla_audit.publishers.sns import SNSPublisher

if TYPE_CHECKING:
    from cassandra.cluster import Session as CassandraSession
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from sqlalchemy.engine import Engine


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "e2e_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(sa.String(50))
    balance: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(12, 2))
    settings: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


@pytest.fixture
def store(cassandra_contact: str, cassandra_keyspace: str) -> Iterator[CassandraStore]:
    config = cassandra_config(cassandra_contact, cassandra_keyspace)
    apply_schema(config)
    made = CassandraStore.connect(config)
    yield made
    made.close()


def test_application_changes_reach_cassandra(
    postgres_engine: Engine,
    sns_to_sqs: Any,
    sns_client: SNSClient,
    sqs_client: SQSClient,
    store: CassandraStore,
    cassandra_session: CassandraSession,
    cassandra_keyspace: str,
) -> None:
    """Insert, updates and delete on PostgreSQL are readable from Cassandra by record id."""
    Base.metadata.create_all(postgres_engine)
    topic_arn, queue_url = sns_to_sqs(raw=False)
    publisher = SNSPublisher(topic_arn, client=sns_client, register_atexit=False)
    maker = sessionmaker(postgres_engine, expire_on_commit=False)
    install_audit(maker, publisher=publisher, service="billing")
    try:
        with audit_context(actor="alice", request_id="req-1"), maker() as session:
            session.add(Account(id=1, owner="alice", balance=decimal.Decimal("10.00")))
            session.commit()
        with audit_context(actor="bob"), maker() as session:
            account = session.get(Account, 1)
            assert account is not None
            account.balance = decimal.Decimal("25.50")
            account.settings = {"alerts": ["email"]}
            session.add(Account(id=2, owner="bob", balance=decimal.Decimal("0.00")))
            session.commit()
        with audit_context(actor="bob"), maker() as session:
            account = session.get(Account, 1)
            assert account is not None
            account.owner = "carol"
            session.commit()
        with audit_context(actor="carol"), maker() as session:
            account = session.get(Account, 1)
            assert account is not None
            session.delete(account)
            session.commit()
        assert publisher.flush(30)
    finally:
        uninstall_audit(maker)
        publisher.close()

    source = SqsSource(SqsConfig(queue_url=queue_url, wait_seconds=1), client=sqs_client)
    worker = Worker(source, store, concurrency=2, wait_seconds=1)

    def rows(record_id: str) -> list[Any]:
        return list(
            cassandra_session.execute(
                f"SELECT * FROM {cassandra_keyspace}.changes_by_service_record "
                "WHERE service = %s AND table_name = %s AND record_id = %s",
                ("billing", "e2e_accounts", record_id),
            )
        )

    worker.start()
    try:
        wait_for(lambda: len(rows("1")) == 4 and len(rows("2")) == 1, 60, "five records")
    finally:
        worker.stop()
        assert worker.join(30)

    delete, rename, update, insert = rows("1")
    assert [r.operation for r in (insert, update, rename, delete)] == [
        "insert",
        "update",
        "update",
        "delete",
    ]
    assert [r.actor_id for r in (insert, update, rename, delete)] == [
        "alice",
        "bob",
        "bob",
        "carol",
    ]
    assert insert.request_id == "req-1"
    assert json.loads(insert.changes)["owner"] == {"old": None, "new": "alice"}
    update_changes = json.loads(update.changes)
    assert set(update_changes) == {"balance", "settings"}
    assert update_changes["balance"]["new"] == {"$type": "decimal", "v": "25.50"}
    assert json.loads(rename.changes) == {"owner": {"old": "alice", "new": "carol"}}
    assert json.loads(delete.changes)["owner"] == {"old": "carol", "new": None}
    assert json.loads(delete.before)["owner"] == "carol"
    # the update of account 1 and the insert of account 2 were one transaction
    (other,) = rows("2")
    assert other.transaction_id == update.transaction_id
    assert {other.sequence, update.sequence} == {0, 1}
    assert len({insert.transaction_id, update.transaction_id, rename.transaction_id}) == 3
    together = store.by_transaction(uuid.UUID(str(update.transaction_id)))
    assert [r.sequence for r in together] == [0, 1]
    assert sorted((r.record_id, r.operation.value) for r in together) == [
        ("1", "update"),
        ("2", "insert"),
    ]
