"""Consumer configuration: flags and environment, read in one place, validated once.

Every setting has a command-line flag and an environment variable (the flag wins); the
container image is configured by environment alone. :func:`load_consumer_config` turns
both into frozen, typed config objects and reports every problem as a
:class:`~sqla_audit.errors.ConfigurationError` naming the flag and the variable, before
anything connects anywhere. Nothing here reads the environment at import time.

AWS credentials are deliberately *not* settings: boto3 finds them itself (``AWS_*``
variables, profiles, instance or task roles). The region and endpoint can be given
explicitly for local endpoints.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar, cast

from consumer.sinks.base import parse_views
from sqla_audit.errors import ConfigurationError
from sqla_audit.limits import (
    SQS_MAX_RECEIVE_MESSAGES,
    SQS_MAX_VISIBILITY_SECONDS,
    SQS_MAX_WAIT_SECONDS,
)
from sqla_audit.outbox.table import DEFAULT_TABLE_NAME

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
TIME_BUCKETS: Final = ("none", "year", "month", "day")
TIMELINE_BUCKETS: Final = ("minute", "hour", "day")
_IDENTIFIER: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

TimeBucket = Literal["none", "year", "month", "day"]
TimelineBucket = Literal["minute", "hour", "day"]
StoreKind = Literal["cassandra", "sqlite"]
SourceKind = Literal["sqs", "outbox"]
LogFormat = Literal["text", "json"]


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


# --------------------------------------------------------------------------- parsing helpers

#: The SNS topic the relay and the demo publish to.
TOPIC_ENV: Final = "SQLA_AUDIT_TOPIC_ARN"


def _from_env(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of the environment variables ``names`` that is set and not blank, as
    ``(name, stripped value)``; ``None`` if there is none."""
    for name in names:
        text = env.get(name, "").strip()
        if text:
            return name, text
    return None


def setting(flag: object, env: Mapping[str, str], *names: str) -> str | None:
    """A command's setting: the flag's value, else the first of the environment variables
    ``names`` that is set and not blank (stripped); ``None`` if neither gives one.

    An empty flag (``--x ""``) counts as not given.
    """
    if flag is not None and flag != "":
        return str(flag)
    found = _from_env(env, names)
    return None if found is None else found[1]


@dataclass(frozen=True, slots=True)
class _Lookup:
    args: argparse.Namespace
    env: Mapping[str, str]

    def raw(self, dest: str, env_names: tuple[str, ...]) -> tuple[str | None, str]:
        """The raw value and a description of where it came from."""
        flag = "--" + dest.replace("_", "-")
        value = getattr(self.args, dest, None)
        if value is not None:
            return str(value), flag
        found = _from_env(self.env, env_names)
        if found is not None:
            return found[1], f"{found[0]} (environment)"
        where = " / ".join((flag, *env_names))
        return None, where

    def get(
        self,
        dest: str,
        env_names: tuple[str, ...],
        parse: Callable[[str], T],
        default: T,
        explain: str,
    ) -> T:
        text, where = self.raw(dest, env_names)
        if text is None:
            return default
        try:
            return parse(text)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{where} must be {explain}, got {text!r}") from exc


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.upper() if upper else text
        if value not in options:
            raise ValueError(text)
        return value

    return parse


def _hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(part.strip() for part in text.split(",") if part.strip())
    if not hosts or any(" " in host for host in hosts):
        raise ValueError(text)
    return hosts


def _identifier(text: str) -> str:
    if not _IDENTIFIER.match(text):
        raise ValueError(text)
    return text


def _datacenters(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in text.split(","):
        name, sep, count = part.strip().partition(":")
        if not sep or not name or not re.match(r"^[A-Za-z0-9_.-]+$", name):
            raise ValueError(text)
        out[name] = _int_in(1, 100)(count)
    if not out:
        raise ValueError(text)
    return out


_VIEWS_EXPLAINED: Final = (
    "a comma-separated list of actor, transaction, request, trace, table (or history, all)"
)


def _views(text: str) -> frozenset[str] | None:
    return parse_views(text)


def _url(text: str) -> str:
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError(text)
    return text


def _port_or_off(text: str) -> int | None:
    if text.lower() in {"0", "off", "none", "disabled"}:
        return None
    return _int_in(1, 65535)(text)


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
        help="bucket hot records' partitions: none (default), year, month or day "
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


# --------------------------------------------------------------------------- loaders


def load_schema_config(args: argparse.Namespace, env: Mapping[str, str]) -> CassandraSchemaConfig:
    """The schema settings from flags and environment."""
    look = _Lookup(args, env)
    replication_class = look.get(
        "replication_class",
        ("SQLA_AUDIT_REPLICATION_CLASS",),
        _choice(REPLICATION_CLASSES),
        "SimpleStrategy",
        "SimpleStrategy or NetworkTopologyStrategy",
    )
    no_datacenters: dict[str, int] = {}
    datacenters = look.get(
        "datacenters", ("SQLA_AUDIT_DATACENTERS",), _datacenters, no_datacenters, "like dc1:3,dc2:3"
    )
    if replication_class == "NetworkTopologyStrategy" and not datacenters:
        raise ConfigurationError(
            "NetworkTopologyStrategy needs --datacenters / SQLA_AUDIT_DATACENTERS (e.g. dc1:3)"
        )
    if replication_class == "SimpleStrategy" and datacenters:
        raise ConfigurationError(
            "--datacenters / SQLA_AUDIT_DATACENTERS only applies to NetworkTopologyStrategy"
        )
    bucket = look.get(
        "time_bucket",
        ("SQLA_AUDIT_TIME_BUCKET",),
        _choice(TIME_BUCKETS),
        "none",
        "one of none, year, month, day",
    )
    views = look.get("views", ("SQLA_AUDIT_VIEWS",), _views, None, _VIEWS_EXPLAINED)
    timeline_bucket = look.get(
        "timeline_bucket",
        ("SQLA_AUDIT_TIMELINE_BUCKET",),
        _choice(TIMELINE_BUCKETS),
        "hour",
        "one of minute, hour, day",
    )
    return CassandraSchemaConfig(
        views=views,
        timeline_bucket=cast("TimelineBucket", timeline_bucket),
        timeline_shards=look.get(
            "timeline_shards",
            ("SQLA_AUDIT_TIMELINE_SHARDS",),
            _int_in(1, 256),
            1,
            "an integer from 1 to 256",
        ),
        keyspace=look.get(
            "keyspace",
            ("SQLA_AUDIT_KEYSPACE",),
            _identifier,
            "sqla_audit",
            "a CQL identifier (a letter, then letters, digits or _; at most 48)",
        ),
        replication_class=replication_class,
        replication_factor=look.get(
            "replication_factor",
            ("SQLA_AUDIT_REPLICATION_FACTOR",),
            _int_in(1, 100),
            1,
            "an integer from 1 to 100",
        ),
        datacenters=datacenters,
        ttl_seconds=look.get(
            "ttl",
            ("SQLA_AUDIT_TTL",),
            _int_in(0, 630_720_000),
            0,
            "seconds from 0 (forever) to 630720000 (20 years, Cassandra's limit)",
        ),
        time_bucket=cast("TimeBucket", bucket),
    )


def load_cassandra_config(args: argparse.Namespace, env: Mapping[str, str]) -> CassandraConfig:
    """Connection and schema settings from flags and environment."""
    look = _Lookup(args, env)
    username = look.raw("cassandra_username", ("SQLA_AUDIT_CASSANDRA_USERNAME",))[0]
    password = look.raw("cassandra_password", ("SQLA_AUDIT_CASSANDRA_PASSWORD",))[0]
    if (username is None) != (password is None):
        raise ConfigurationError(
            "Cassandra credentials need both SQLA_AUDIT_CASSANDRA_USERNAME and "
            "SQLA_AUDIT_CASSANDRA_PASSWORD (or --cassandra-username/--cassandra-password)"
        )
    return CassandraConfig(
        hosts=look.get(
            "cassandra_hosts",
            ("SQLA_AUDIT_CASSANDRA_HOSTS",),
            _hosts,
            ("127.0.0.1",),
            "comma-separated host names or addresses",
        ),
        port=look.get(
            "cassandra_port",
            ("SQLA_AUDIT_CASSANDRA_PORT",),
            _int_in(1, 65535),
            9042,
            "a port number",
        ),
        local_dc=look.get(
            "local_dc",
            ("SQLA_AUDIT_LOCAL_DC",),
            lambda t: t,
            "datacenter1",
            "a datacenter name",
        ),
        consistency=look.get(
            "consistency",
            ("SQLA_AUDIT_CONSISTENCY",),
            _choice(CONSISTENCY_LEVELS, upper=True),
            "LOCAL_QUORUM",
            "one of " + ", ".join(CONSISTENCY_LEVELS),
        ),
        username=username,
        password=password,
        protocol_version=look.get(
            "protocol_version",
            ("SQLA_AUDIT_PROTOCOL_VERSION",),
            _int_in(3, 5),
            4,
            "3, 4 or 5",
        ),
        request_timeout=look.get(
            "cassandra_timeout",
            ("SQLA_AUDIT_CASSANDRA_TIMEOUT",),
            _float_in(0.1, 300),
            10.0,
            "seconds from 0.1 to 300",
        ),
        max_in_flight=look.get(
            "max_in_flight",
            ("SQLA_AUDIT_MAX_IN_FLIGHT",),
            _int_in(1, 10_000),
            64,
            "an integer from 1 to 10000",
        ),
        schema=load_schema_config(args, env),
    )


def load_consumer_config(args: argparse.Namespace, env: Mapping[str, str]) -> ConsumerConfig:
    """Validate every ``consume`` setting; raises :class:`ConfigurationError` on the first
    problem, naming the flag or environment variable to fix."""
    look = _Lookup(args, env)
    source = look.get(
        "source", ("SQLA_AUDIT_SOURCE",), _choice(("sqs", "outbox")), "sqs", "sqs or outbox"
    )
    queue_url = look.get("queue_url", ("SQLA_AUDIT_QUEUE_URL",), _url, "", "an http(s) URL")
    if source == "sqs" and not queue_url:
        raise ConfigurationError("the SQS source needs --queue-url / SQLA_AUDIT_QUEUE_URL")
    outbox = None
    if source == "outbox":
        db_url = look.raw("db", ("SQLA_AUDIT_DB_URL",))[0]
        if not db_url:
            raise ConfigurationError("--source outbox needs --db / SQLA_AUDIT_DB_URL")
        outbox = OutboxSourceConfig(
            db_url=db_url,
            table=look.raw("outbox_table", ("SQLA_AUDIT_OUTBOX_TABLE",))[0] or DEFAULT_TABLE_NAME,
            schema=look.raw("outbox_schema", ("SQLA_AUDIT_OUTBOX_SCHEMA",))[0],
        )
    endpoint = look.get(
        "endpoint_url",
        ("SQLA_AUDIT_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"),
        _url,
        None,
        "an http(s) URL",
    )
    region = look.get(
        "region", ("AWS_REGION", "AWS_DEFAULT_REGION"), lambda t: t, None, "an AWS region"
    )
    wait = look.get(
        "wait_seconds",
        ("SQLA_AUDIT_WAIT_SECONDS",),
        _int_in(0, SQS_MAX_WAIT_SECONDS),
        SQS_MAX_WAIT_SECONDS,
        f"an integer from 0 to {SQS_MAX_WAIT_SECONDS}",
    )
    visibility = look.get(
        "visibility_timeout",
        ("SQLA_AUDIT_VISIBILITY_TIMEOUT",),
        _int_in(5, SQS_MAX_VISIBILITY_SECONDS),
        60,
        f"seconds from 5 to {SQS_MAX_VISIBILITY_SECONDS}",
    )
    sqs = SqsConfig(
        queue_url=queue_url,
        region=region,
        endpoint_url=endpoint,
        dlq_url=look.get("dlq_url", ("SQLA_AUDIT_DLQ_URL",), _url, None, "an http(s) URL"),
        wait_seconds=wait,
        batch_size=look.get(
            "batch_size",
            ("SQLA_AUDIT_BATCH_SIZE",),
            _int_in(1, SQS_MAX_RECEIVE_MESSAGES),
            SQS_MAX_RECEIVE_MESSAGES,
            f"an integer from 1 to {SQS_MAX_RECEIVE_MESSAGES}",
        ),
        visibility_timeout=visibility,
    )
    store = look.get(
        "store",
        ("SQLA_AUDIT_STORE",),
        _choice(("cassandra", "sqlite")),
        "cassandra",
        "cassandra or sqlite",
    )
    sqlite_path = look.raw("store_url", ("SQLA_AUDIT_STORE_URL",))[0]
    if store == "sqlite" and not sqlite_path:
        raise ConfigurationError("--store sqlite needs --store-url / SQLA_AUDIT_STORE_URL (a file)")
    shutdown = look.get(
        "shutdown_timeout",
        ("SQLA_AUDIT_SHUTDOWN_TIMEOUT",),
        _float_in(1, 3600),
        30.0,
        "seconds from 1 to 3600",
    )
    worker = WorkerConfig(
        concurrency=look.get(
            "concurrency",
            ("SQLA_AUDIT_CONCURRENCY",),
            _int_in(1, 64),
            4,
            "an integer from 1 to 64",
        ),
        max_backoff=look.get(
            "max_backoff",
            ("SQLA_AUDIT_MAX_BACKOFF",),
            _float_in(0.1, 600),
            30.0,
            "seconds from 0.1 to 600",
        ),
        shutdown_timeout=shutdown,
        metrics_host=look.get(
            "metrics_host", ("SQLA_AUDIT_METRICS_HOST",), lambda t: t, "127.0.0.1", "an address"
        ),
        metrics_port=look.get(
            "metrics_port",
            ("SQLA_AUDIT_METRICS_PORT",),
            _port_or_off,
            cast("int | None", 9108),
            "a port number, or 0 to disable",
        ),
        log_format=cast(
            "LogFormat",
            look.get(
                "log_format",
                ("SQLA_AUDIT_LOG_FORMAT",),
                _choice(("text", "json")),
                "text",
                "text or json",
            ),
        ),
    )
    return ConsumerConfig(
        source=cast("SourceKind", source),
        sqs=sqs,
        store=cast("StoreKind", store),
        cassandra=load_cassandra_config(args, env),
        sqlite_path=sqlite_path,
        worker=worker,
        outbox=outbox,
    )


__all__ = [
    "CONSISTENCY_LEVELS",
    "TOPIC_ENV",
    "CassandraConfig",
    "CassandraSchemaConfig",
    "ConsumerConfig",
    "OutboxSourceConfig",
    "SqsConfig",
    "WorkerConfig",
    "add_cassandra_arguments",
    "add_consumer_arguments",
    "load_cassandra_config",
    "load_consumer_config",
    "load_schema_config",
    "setting",
]
