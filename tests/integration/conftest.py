"""Fixtures for the integration tests: real PostgreSQL, MariaDB, SNS/SQS/S3 endpoint, Cassandra.

Every fixture gets its service through ``require_service`` (environment variable, else
testcontainers, else skip -- or fail under ``CI=true``). Databases, schemas and keyspaces are
fresh per test module and dropped afterwards; SNS topics and SQS queues are unique per test.

Every test under tests/integration is marked ``integration``; a test that uses a service's
fixtures also gets that service's marker (``postgres``, ``mariadb``, ``aws``, ``cassandra``),
so ``-m "not cassandra"`` deselects it even if the marker was forgotten.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from cassandra_support import CASSANDRA_LOCAL_DC, split_contact
from service_policy import (
    AWS_ENV,
    CASSANDRA_ENV,
    MARIADB_ENV,
    POSTGRES_ENV,
    require_service,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

_HERE = Path(__file__).resolve().parent

#: fixture name -> marker of the service it needs
_SERVICE_FIXTURES = {
    "postgres_server_url": "postgres",
    "mariadb_server_url": "mariadb",
    "aws_endpoint": "aws",
    "cassandra_contact": "cassandra",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration ``integration`` (plus its service markers)."""
    for item in items:
        if _HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.integration)
        fixturenames = getattr(item, "fixturenames", ())
        for fixture, marker in _SERVICE_FIXTURES.items():
            if fixture in fixturenames:
                item.add_marker(marker)


def unique_name(prefix: str = "sqla_audit_t") -> str:
    """A database/keyspace/queue name that no other test (or test run) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------------------
# Relational databases


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of the PostgreSQL server's base database (the one fresh databases are made from)."""
    return require_service("postgres", POSTGRES_ENV)


@pytest.fixture(scope="session")
def mariadb_server_url() -> str:
    """URL of the MariaDB server's base database."""
    return require_service("mariadb", MARIADB_ENV)


@contextlib.contextmanager
def _fresh_database(server_url: str, create: str, drop: str) -> Iterator[str]:
    base = make_url(server_url)
    name = unique_name()
    admin = sa.create_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(create.format(name=name)))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(drop.format(name=name)))
    finally:
        admin.dispose()


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database for this test module (dropped after)."""
    with _fresh_database(
        postgres_server_url,
        'CREATE DATABASE "{name}"',
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    ) as url:
        yield url


@pytest.fixture(scope="module")
def mariadb_url(mariadb_server_url: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh MariaDB database for this test module (dropped after)."""
    with _fresh_database(
        mariadb_server_url,
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        "DROP DATABASE IF EXISTS `{name}`",
    ) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """Engine on this module's fresh PostgreSQL database."""
    engine = sa.create_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def mariadb_engine(mariadb_url: str) -> Iterator[Engine]:
    """Engine on this module's fresh MariaDB database."""
    engine = sa.create_engine(mariadb_url, pool_recycle=3600)
    yield engine
    engine.dispose()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
    ],
)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh database URL for this module on SQLite (file), PostgreSQL and MariaDB in turn."""
    backend: str = request.param
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        return f"sqlite+pysqlite:///{path}"
    url: str = request.getfixturevalue(f"{backend}_url")
    return url


@pytest.fixture(scope="module")
def db_engine(db_url: str) -> Iterator[Engine]:
    """Engine for :func:`db_url` (one per backend and module)."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# SNS / SQS / S3 (moto server locally)


def _aws_client(service: str, endpoint: str) -> Any:
    import boto3  # noqa: PLC0415

    # Explicit endpoint and dummy credentials: these fixtures never reach a real AWS account.
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="session")
def aws_endpoint() -> str:
    """URL of the SNS/SQS/S3 endpoint (moto server or a container)."""
    return require_service("aws", AWS_ENV)


@pytest.fixture(scope="session")
def sns_client(aws_endpoint: str) -> SNSClient:
    """boto3 SNS client on the test endpoint."""
    client: SNSClient = _aws_client("sns", aws_endpoint)
    return client


@pytest.fixture(scope="session")
def sqs_client(aws_endpoint: str) -> SQSClient:
    """boto3 SQS client on the test endpoint."""
    client: SQSClient = _aws_client("sqs", aws_endpoint)
    return client


@pytest.fixture(scope="session")
def s3_client(aws_endpoint: str) -> S3Client:
    """boto3 S3 client on the test endpoint."""
    client: S3Client = _aws_client("s3", aws_endpoint)
    return client


SnsToSqs = Callable[..., tuple[str, str]]


@pytest.fixture
def sns_to_sqs(sns_client: SNSClient, sqs_client: SQSClient) -> Iterator[SnsToSqs]:
    """Factory ``sns_to_sqs(fifo=False, raw=False) -> (topic_arn, queue_url)``.

    Creates a unique SNS topic and an SQS queue subscribed to it (with the queue policy that
    lets the topic send), FIFO on both sides when ``fifo``, raw message delivery when ``raw``.
    Everything it created is deleted after the test.
    """
    created: list[tuple[str, str, str]] = []

    def make(*, fifo: bool = False, raw: bool = False) -> tuple[str, str]:
        name = unique_name("sqla-audit").replace("_", "-")
        suffix = ".fifo" if fifo else ""
        topic_attributes = {"FifoTopic": "true"} if fifo else {}
        topic_arn = sns_client.create_topic(Name=name + suffix, Attributes=topic_attributes)[
            "TopicArn"
        ]
        queue_attributes: dict[QueueAttributeNameType, str] = {"FifoQueue": "true"} if fifo else {}
        queue_url = sqs_client.create_queue(QueueName=name + suffix, Attributes=queue_attributes)[
            "QueueUrl"
        ]
        queue_arn = sqs_client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AllowTopicToSend",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        sqs_client.set_queue_attributes(
            QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)}
        )
        subscription_arn = sns_client.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true" if raw else "false"},
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        created.append((topic_arn, queue_url, subscription_arn))
        return topic_arn, queue_url

    yield make

    from botocore.exceptions import ClientError  # noqa: PLC0415

    for topic_arn, queue_url, subscription_arn in reversed(created):
        with contextlib.suppress(ClientError):
            sns_client.unsubscribe(SubscriptionArn=subscription_arn)
        with contextlib.suppress(ClientError):
            sns_client.delete_topic(TopicArn=topic_arn)
        with contextlib.suppress(ClientError):
            sqs_client.delete_queue(QueueUrl=queue_url)


# ---------------------------------------------------------------------------------------------
# Cassandra


def make_cassandra_cluster(contact: str) -> Cluster:
    """A driver ``Cluster`` for *contact* with the protocol and load balancing set explicitly.

    Setting both avoids the driver's warnings (which the suite turns into errors); the policy is
    given through the default execution profile, the non-deprecated way.
    """
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # noqa: PLC0415
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy  # noqa: PLC0415

    host, port = split_contact(contact)
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(
            DCAwareRoundRobinPolicy(local_dc=CASSANDRA_LOCAL_DC)
        ),
        request_timeout=30,
    )
    return Cluster(
        [host],
        port=port,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=10,
    )


@pytest.fixture(scope="session")
def cassandra_contact() -> str:
    """``host:port`` of the Cassandra native transport."""
    return require_service("cassandra", CASSANDRA_ENV)


@pytest.fixture(scope="session")
def cassandra_session(cassandra_contact: str) -> Iterator[Session]:
    """A cassandra-driver session (no keyspace set); the cluster is shut down at the end."""
    cluster = make_cassandra_cluster(cassandra_contact)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def cassandra_keyspace(cassandra_session: Session) -> Iterator[str]:
    """Name of a fresh keyspace (SimpleStrategy, RF 1) for this test module, dropped after."""
    keyspace = unique_name()
    cassandra_session.execute(
        f"CREATE KEYSPACE {keyspace} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    try:
        yield keyspace
    finally:
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
