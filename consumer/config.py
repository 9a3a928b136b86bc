"""Consumer configuration: the frozen, typed config objects and their constants.

Every setting has a command-line flag (:mod:`consumer.arguments`) and an environment
variable (the flag wins); the container image is configured by environment alone.
:func:`consumer.settings.load_consumer_config` turns both into the objects below and reports
every problem as a :class:`~sqla_audit.errors.ConfigurationError` naming the flag and the
variable, before anything connects anywhere. Nothing reads the environment at import time.

AWS credentials are deliberately *not* settings: boto3 finds them itself (``AWS_*``
variables, profiles, instance or task roles). The region and endpoint can be given
explicitly for local endpoints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from sqla_audit.limits import (
    SQS_MAX_RECEIVE_MESSAGES,
    SQS_MAX_WAIT_SECONDS,
)
from sqla_audit.outbox.table import DEFAULT_TABLE_NAME
from sqla_audit.signing import Keyring

T = TypeVar("T")

CONSISTENCY_LEVELS: Final = (
    "ANY",
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
)
REPLICATION_CLASSES: Final = ("SimpleStrategy", "NetworkTopologyStrategy")
TIME_BUCKETS: Final = ("none", "year", "month", "day", "hour")
TIMELINE_BUCKETS: Final = ("minute", "hour", "day")
#: Partition buckets of the by-actor view (docs/cql.md, "Partition sizes").
ACTOR_BUCKETS: Final = ("hour", "day", "week", "month")
_IDENTIFIER: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

TimeBucket = Literal["none", "year", "month", "day", "hour"]
TimelineBucket = Literal["minute", "hour", "day"]
ActorBucket = Literal["hour", "day", "week", "month"]
StoreKind = Literal["cassandra", "sqlite"]
SourceKind = Literal["sqs", "outbox"]
LogFormat = Literal["text", "json"]
#: The consumer's signature policies (see :mod:`consumer.verification`).
SignaturePolicy = Literal["require", "verify", "off"]
SIGNATURE_POLICIES: Final = ("require", "verify", "off")


# --------------------------------------------------------------------------- config objects


@dataclass(frozen=True, slots=True)
class CassandraSchemaConfig:
    """What ``schema cql`` / ``schema apply`` create, and what the store expects to find."""

    keyspace: str = "sqla_audit"
    replication_class: str = "SimpleStrategy"
    replication_factor: int = 1
    #: ``NetworkTopologyStrategy`` only: datacenter -> replicas.
    datacenters: Mapping[str, int] = field(default_factory=dict)
    #: Seconds after which Cassandra expires audit rows (``default_time_to_live``); 0 keeps
    #: them forever.
    ttl_seconds: int = 0
    #: Adds a time bucket to the primary table's partition key (see docs/consumer.md).
    time_bucket: TimeBucket = "none"
    #: The secondary views (``--views``; see :data:`consumer.sinks.base.VIEWS`). ``None``:
    #: ``schema apply`` creates the default set and a store uses what the keyspace records.
    views: frozenset[str] | None = None
    #: Time bucket of the table timeline (``changes_by_table``) partitions.
    timeline_bucket: TimelineBucket = "hour"
    #: Shards per timeline bucket (a stable hash of the record id), for hot tables.
    timeline_shards: int = 1
    #: Time bucket of the by-actor view (``changes_by_actor``) partitions; ``day`` with one
    #: shard is the ``(actor_id, day)`` table, anything else a table of its own.
    actor_bucket: ActorBucket = "day"
    #: Shards per actor bucket (a stable hash of the event id), for service accounts.
    actor_shards: int = 1


@dataclass(frozen=True, slots=True)
class CassandraTlsConfig:
    """Client-to-node TLS: whom to trust, who we are, and whether the host name must match."""

    #: PEM bundle of the CAs that sign the nodes' certificates; ``None``: the system's CAs.
    ca_file: str | None = None
    #: Client certificate (PEM) for nodes that require one, and its unencrypted key.
    cert_file: str | None = None
    key_file: str | None = None
    #: The node's certificate must name the address or host name we connect to.
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class CassandraConfig:
    """How to reach Cassandra and how to write to it."""

    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    local_dc: str = "datacenter1"
    consistency: str = "LOCAL_QUORUM"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol_version: int = 4
    connect_timeout: float = 10.0
    request_timeout: float = 10.0
    #: Most write requests in flight at once, across all pollers.
    max_in_flight: int = 64
    schema: CassandraSchemaConfig = field(default_factory=CassandraSchemaConfig)
    #: ``None``: plain connections.
    tls: CassandraTlsConfig | None = None


@dataclass(frozen=True, slots=True)
class SqsConfig:
    """The queue to consume and how to poll it."""

    queue_url: str
    region: str | None = None
    endpoint_url: str | None = None
    #: Where undecodable messages go; ``None`` leaves them to the queue's redrive policy.
    dlq_url: str | None = None
    wait_seconds: int = SQS_MAX_WAIT_SECONDS
    batch_size: int = SQS_MAX_RECEIVE_MESSAGES
    visibility_timeout: int = 60


@dataclass(frozen=True, slots=True)
class OutboxSourceConfig:
    """The embedded source: the outbox table in the application's database."""

    db_url: str = field(repr=False)  # may hold a password
    table: str = DEFAULT_TABLE_NAME
    schema: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How the worker runs: pollers, backoff, shutdown, metrics, logs."""

    concurrency: int = 4
    max_backoff: float = 30.0
    shutdown_timeout: float = 30.0
    metrics_host: str = "127.0.0.1"
    #: ``None`` disables the metrics and health endpoint.
    metrics_port: int | None = 9108
    log_format: LogFormat = "text"


@dataclass(frozen=True, slots=True)
class SignatureConfig:
    """The signature policy (:mod:`consumer.verification`) and the verifying keys."""

    policy: SignaturePolicy = "off"
    #: every key that may have signed an event (``None`` with policy ``off``)
    keyring: Keyring | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """Everything ``sqla-audit consume`` needs, validated."""

    source: SourceKind
    #: The queue with ``--source sqs``; with ``outbox`` only its polling settings (wait,
    #: batch size, visibility) apply and ``queue_url`` is empty.
    sqs: SqsConfig
    store: StoreKind
    cassandra: CassandraConfig
    sqlite_path: str | None
    worker: WorkerConfig
    outbox: OutboxSourceConfig | None = None
    signatures: SignatureConfig = field(default_factory=SignatureConfig)


#: The SNS topic the relay and the demo publish to.
TOPIC_ENV: Final = "SQLA_AUDIT_TOPIC_ARN"


__all__ = [
    "ACTOR_BUCKETS",
    "CONSISTENCY_LEVELS",
    "REPLICATION_CLASSES",
    "SIGNATURE_POLICIES",
    "TIMELINE_BUCKETS",
    "TIME_BUCKETS",
    "TOPIC_ENV",
    "ActorBucket",
    "CassandraConfig",
    "CassandraSchemaConfig",
    "CassandraTlsConfig",
    "ConsumerConfig",
    "LogFormat",
    "OutboxSourceConfig",
    "SignatureConfig",
    "SignaturePolicy",
    "SourceKind",
    "SqsConfig",
    "StoreKind",
    "TimeBucket",
    "TimelineBucket",
    "WorkerConfig",
]
