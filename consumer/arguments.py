"""The consumer's command-line flags for Cassandra and for ``consume`` (argparse).

Each flag names its environment variable in its help; :mod:`consumer.settings` reads them
and :mod:`consumer.config` holds the validated result.
"""

from __future__ import annotations

import argparse

from consumer.config import (
    CONSISTENCY_LEVELS,
)
from sqla_audit.outbox.table import DEFAULT_TABLE_NAME

# --------------------------------------------------------------------------- argparse


def add_cassandra_arguments(
    parser: argparse.ArgumentParser, *, connection: bool = True, writes: bool = True
) -> None:
    """Flags for the Cassandra schema and (with ``connection``) how to reach it.

    ``writes=False`` (the query commands) leaves out what only matters when creating or
    writing the keyspace -- replication, TTL, buckets, views, timeline shards, write
    concurrency: a reader takes them from the keyspace itself.
    """
    group = parser.add_argument_group("Cassandra")
    if connection:
        group.add_argument(
            "--cassandra-hosts",
            help="contact points, comma-separated (default: 127.0.0.1) "
            "[SQLA_AUDIT_CASSANDRA_HOSTS]",
        )
        group.add_argument(
            "--cassandra-port", help="native port (default: 9042) [SQLA_AUDIT_CASSANDRA_PORT]"
        )
        group.add_argument(
            "--local-dc", help="local datacenter (default: datacenter1) [SQLA_AUDIT_LOCAL_DC]"
        )
        group.add_argument(
            "--consistency",
            help=f"consistency level, one of {', '.join(CONSISTENCY_LEVELS)} "
            "(default: LOCAL_QUORUM) [SQLA_AUDIT_CONSISTENCY]",
        )
        group.add_argument("--cassandra-username", help="user name [SQLA_AUDIT_CASSANDRA_USERNAME]")
        group.add_argument(
            "--cassandra-password",
            help="password; prefer the environment variable [SQLA_AUDIT_CASSANDRA_PASSWORD]",
        )
        group.add_argument(
            "--cassandra-ssl",
            help="on: connect with TLS (on as soon as a CA, certificate or key is given; "
            "without a CA file the system's CAs are trusted) [SQLA_AUDIT_CASSANDRA_SSL]",
        )
        group.add_argument(
            "--cassandra-ssl-ca",
            help="PEM file of the CAs that sign the nodes' certificates "
            "[SQLA_AUDIT_CASSANDRA_SSL_CA]",
        )
        group.add_argument(
            "--cassandra-ssl-cert",
            help="client certificate (PEM), for nodes that require one "
            "[SQLA_AUDIT_CASSANDRA_SSL_CERT]",
        )
        group.add_argument(
            "--cassandra-ssl-key",
            help="the client certificate's unencrypted key (PEM) [SQLA_AUDIT_CASSANDRA_SSL_KEY]",
        )
        group.add_argument(
            "--cassandra-ssl-check-hostname",
            help="on (default) or off: the node's certificate must name the host connected to "
            "[SQLA_AUDIT_CASSANDRA_SSL_CHECK_HOSTNAME]",
        )
        group.add_argument(
            "--protocol-version",
            help="native protocol version, 3, 4 or 5 (default: 4) [SQLA_AUDIT_PROTOCOL_VERSION]",
        )
        if writes:
            group.add_argument(
                "--max-in-flight",
                help="most concurrent write requests, 1-10000 (default: 64) "
                "[SQLA_AUDIT_MAX_IN_FLIGHT]",
            )
        group.add_argument(
            "--cassandra-timeout",
            help="request timeout in seconds, 0.1-300 (default: 10) [SQLA_AUDIT_CASSANDRA_TIMEOUT]",
        )
    group.add_argument("--keyspace", help="keyspace (default: sqla_audit) [SQLA_AUDIT_KEYSPACE]")
    if not writes:
        return
    group.add_argument(
        "--replication-class",
        help="SimpleStrategy (default) or NetworkTopologyStrategy [SQLA_AUDIT_REPLICATION_CLASS]",
    )
    group.add_argument(
        "--replication-factor",
        help="SimpleStrategy replicas, 1-100 (default: 1) [SQLA_AUDIT_REPLICATION_FACTOR]",
    )
    group.add_argument(
        "--datacenters",
        help="NetworkTopologyStrategy replicas, e.g. dc1:3,dc2:3 [SQLA_AUDIT_DATACENTERS]",
    )
    group.add_argument(
        "--ttl", help="row TTL in seconds, 0 = keep forever (default: 0) [SQLA_AUDIT_TTL]"
    )
    group.add_argument(
        "--time-bucket",
        help="bucket hot records' partitions: none (default), year, month, day or hour "
        "[SQLA_AUDIT_TIME_BUCKET]",
    )
    group.add_argument(
        "--views",
        help="secondary views besides the always-on history, comma-separated from "
        "actor,transaction,request,trace,table (default: all; 'history' alone: none); "
        "Cassandra: chosen by schema apply, SQLite: by consume [SQLA_AUDIT_VIEWS]",
    )
    group.add_argument(
        "--timeline-bucket",
        help="partition of the table timeline: minute, hour (default) or day "
        "[SQLA_AUDIT_TIMELINE_BUCKET]",
    )
    group.add_argument(
        "--timeline-shards",
        help="partitions per timeline bucket, 1-256 (default: 1) [SQLA_AUDIT_TIMELINE_SHARDS]",
    )
    group.add_argument(
        "--actor-bucket",
        help="partition of the by-actor view: hour, day (default), week or month "
        "[SQLA_AUDIT_ACTOR_BUCKET]",
    )
    group.add_argument(
        "--actor-shards",
        help="partitions per actor bucket, 1-256 (default: 1), for service accounts "
        "[SQLA_AUDIT_ACTOR_SHARDS]",
    )


def add_consumer_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``consume`` flag; each falls back to the environment variable in brackets."""
    source = parser.add_argument_group("source")
    source.add_argument(
        "--source", help="where events come from: sqs or outbox [SQLA_AUDIT_SOURCE]"
    )
    source.add_argument("--db", help="--source outbox: SQLAlchemy database URL [SQLA_AUDIT_DB_URL]")
    # --table/--schema as in `relay` and `outbox` (which also accept the long forms)
    source.add_argument(
        "--table",
        "--outbox-table",
        dest="outbox_table",
        help=f"--source outbox: outbox table name (default: {DEFAULT_TABLE_NAME}) "
        "[SQLA_AUDIT_OUTBOX_TABLE]",
    )
    source.add_argument(
        "--schema",
        "--outbox-schema",
        dest="outbox_schema",
        help="--source outbox: schema of the outbox table [SQLA_AUDIT_OUTBOX_SCHEMA]",
    )
    source.add_argument("--queue-url", help="SQS queue URL [SQLA_AUDIT_QUEUE_URL]")
    source.add_argument("--dlq-url", help="dead-letter queue for undecodable messages")
    source.add_argument("--region", help="AWS region [AWS_REGION, AWS_DEFAULT_REGION]")
    source.add_argument("--endpoint-url", help="AWS endpoint override [AWS_ENDPOINT_URL]")
    source.add_argument("--wait-seconds", help="long-poll wait, 0-20 [SQLA_AUDIT_WAIT_SECONDS]")
    source.add_argument("--batch-size", help="messages per receive, 1-10 [SQLA_AUDIT_BATCH_SIZE]")
    source.add_argument(
        "--visibility-timeout",
        help="seconds a received message stays hidden [SQLA_AUDIT_VISIBILITY_TIMEOUT]",
    )
    store = parser.add_argument_group("store")
    store.add_argument("--store", help="cassandra or sqlite [SQLA_AUDIT_STORE]")
    store.add_argument("--store-url", help="SQLite file for --store sqlite [SQLA_AUDIT_STORE_URL]")
    add_cassandra_arguments(parser)
    worker = parser.add_argument_group("worker")
    worker.add_argument("--concurrency", help="parallel pollers [SQLA_AUDIT_CONCURRENCY]")
    worker.add_argument(
        "--max-backoff", help="longest pause while the store is down [SQLA_AUDIT_MAX_BACKOFF]"
    )
    worker.add_argument(
        "--shutdown-timeout",
        help="seconds to finish in-flight work on SIGTERM [SQLA_AUDIT_SHUTDOWN_TIMEOUT]",
    )
    worker.add_argument("--metrics-host", help="metrics bind address [SQLA_AUDIT_METRICS_HOST]")
    worker.add_argument(
        "--metrics-port", help="metrics/health port, 0 = off [SQLA_AUDIT_METRICS_PORT]"
    )
    worker.add_argument("--log-format", help="text or json [SQLA_AUDIT_LOG_FORMAT]")
    add_signature_arguments(parser)


def add_signature_arguments(parser: argparse.ArgumentParser, *, policy: bool = True) -> None:
    """The signature policy and where the verifying keys are (``consume``, ``verify``)."""
    group = parser.add_argument_group("signatures")
    if policy:
        group.add_argument(
            "--signatures",
            help="require, verify or off (default): which events to accept [SQLA_AUDIT_SIGNATURES]",
        )
    group.add_argument(
        "--signing-keys-file",
        help="file of verifying keys, kid=BASE64 separated by commas or lines "
        "[SQLA_AUDIT_SIGNING_KEYS_FILE; or the keys in SQLA_AUDIT_SIGNING_KEYS]",
    )


__all__ = ["add_cassandra_arguments", "add_consumer_arguments", "add_signature_arguments"]
