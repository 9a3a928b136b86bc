"""Smoke tests: each service the integration tests rely on answers and behaves as expected."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

if TYPE_CHECKING:
    from collections.abc import Callable

    from cassandra.cluster import Session as CassandraSession
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef
    from sqlalchemy.engine import Engine


class Base(DeclarativeBase):
    pass


class Widget(Base):
    __tablename__ = "smoke_widget"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    price: Mapped[int]


def _orm_round_trip(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            session.add(Widget(id=1, name="sprocket", price=7))
            session.commit()
        with Session(engine) as session:
            widget = session.get(Widget, 1)
            assert widget is not None
            widget.price = 9
            session.commit()
        with Session(engine) as session:
            stored = session.scalars(sa.select(Widget)).one()
            assert (stored.id, stored.name, stored.price) == (1, "sprocket", 9)
    finally:
        Base.metadata.drop_all(engine)


@pytest.mark.postgres
def test_orm_round_trip_on_postgresql(postgres_engine: Engine) -> None:
    """A row inserted and updated through the ORM on PostgreSQL reads back with the new value."""
    _orm_round_trip(postgres_engine)


@pytest.mark.mariadb
def test_orm_round_trip_on_mariadb(mariadb_engine: Engine) -> None:
    """A row inserted and updated through the ORM on MariaDB reads back with the new value."""
    _orm_round_trip(mariadb_engine)


@pytest.mark.aws
def test_sns_publish_reaches_subscribed_sqs_queue(
    sns_to_sqs: Callable[..., tuple[str, str]], sns_client: SNSClient, sqs_client: SQSClient
) -> None:
    """A message published to an SNS topic arrives, in the SNS envelope, on the subscribed queue."""
    topic_arn, queue_url = sns_to_sqs()
    payload = json.dumps({"probe": uuid.uuid4().hex})

    message_id = sns_client.publish(TopicArn=topic_arn, Message=payload)["MessageId"]

    deadline = time.monotonic() + 20
    messages: list[MessageTypeDef] = []
    while not messages and time.monotonic() < deadline:
        received = sqs_client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2
        )
        messages = list(received.get("Messages", []))
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    assert envelope["Type"] == "Notification"
    assert envelope["TopicArn"] == topic_arn
    assert envelope["MessageId"] == message_id
    assert envelope["Message"] == payload


@pytest.mark.cassandra
def test_cassandra_keyspace_table_insert_select(
    cassandra_session: CassandraSession, cassandra_keyspace: str
) -> None:
    """A row written to a new Cassandra table in a fresh keyspace is read back unchanged."""
    table = f"{cassandra_keyspace}.smoke"
    cassandra_session.execute(
        f"CREATE TABLE {table} (pk text, ck timeuuid, value int, PRIMARY KEY (pk, ck))"
        " WITH CLUSTERING ORDER BY (ck DESC)"
    )
    first, second = uuid.uuid1(), uuid.uuid1()
    insert = cassandra_session.prepare(f"INSERT INTO {table} (pk, ck, value) VALUES (?, ?, ?)")
    cassandra_session.execute(insert, ("widget:1", first, 1))
    cassandra_session.execute(insert, ("widget:1", second, 2))

    rows = list(
        cassandra_session.execute(f"SELECT ck, value FROM {table} WHERE pk = %s", ["widget:1"])
    )

    assert [(row.ck, row.value) for row in rows] == [(second, 2), (first, 1)]
