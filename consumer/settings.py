"""Reading the consumer's settings: flags and environment, in one place, validated once.

Each setting comes from its command-line flag, else from its environment variables (the
first one set and not blank); :func:`load_consumer_config`, :func:`load_cassandra_config`
and :func:`load_schema_config` build the frozen config objects of :mod:`consumer.config`
and report every problem as a :class:`~sqla_audit.errors.ConfigurationError` naming the
flag and the variable. :func:`setting` is the same flag-else-environment rule for the
commands' own options.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar, cast

from consumer.config import (
    _IDENTIFIER,
    ACTOR_BUCKETS,
    CONSISTENCY_LEVELS,
    REPLICATION_CLASSES,
    SIGNATURE_POLICIES,
    TIME_BUCKETS,
    TIMELINE_BUCKETS,
    ActorBucket,
    CassandraConfig,
    CassandraSchemaConfig,
    CassandraTlsConfig,
    ConsumerConfig,
    LogFormat,
    OutboxSourceConfig,
    SignatureConfig,
    SignaturePolicy,
    SourceKind,
    SqsConfig,
    StoreKind,
    TimeBucket,
    TimelineBucket,
    WorkerConfig,
)
from consumer.sinks.base import parse_views
from sqla_audit.errors import ConfigurationError
from sqla_audit.limits import (
    SQS_MAX_RECEIVE_MESSAGES,
    SQS_MAX_VISIBILITY_SECONDS,
    SQS_MAX_WAIT_SECONDS,
)
from sqla_audit.outbox.table import DEFAULT_TABLE_NAME
from sqla_audit.signing import KEYS_ENV, Keyring, keyring_from_env, parse_keyring

T = TypeVar("T")


# --------------------------------------------------------------------------- parsing helpers


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


def _on_off(text: str) -> bool:
    value = text.lower()
    if value in {"on", "true", "yes", "1"}:
        return True
    if value in {"off", "false", "no", "0"}:
        return False
    raise ValueError(text)


def _port_or_off(text: str) -> int | None:
    if text.lower() in {"0", "off", "none", "disabled"}:
        return None
    return _int_in(1, 65535)(text)


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
        "one of none, year, month, day, hour",
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
        actor_bucket=cast(
            "ActorBucket",
            look.get(
                "actor_bucket",
                ("SQLA_AUDIT_ACTOR_BUCKET",),
                _choice(ACTOR_BUCKETS),
                "day",
                "one of hour, day, week, month",
            ),
        ),
        actor_shards=look.get(
            "actor_shards",
            ("SQLA_AUDIT_ACTOR_SHARDS",),
            _int_in(1, 256),
            1,
            "an integer from 1 to 256",
        ),
    )


def load_tls_config(args: argparse.Namespace, env: Mapping[str, str]) -> CassandraTlsConfig | None:
    """Client-to-node TLS from flags and environment; ``None`` when TLS is not asked for.

    TLS is on with ``--cassandra-ssl on`` or as soon as a CA, certificate or key is given.
    """
    look = _Lookup(args, env)
    enabled = look.get("cassandra_ssl", ("SQLA_AUDIT_CASSANDRA_SSL",), _on_off, None, "on or off")
    ca_file = look.raw("cassandra_ssl_ca", ("SQLA_AUDIT_CASSANDRA_SSL_CA",))[0]
    cert_file = look.raw("cassandra_ssl_cert", ("SQLA_AUDIT_CASSANDRA_SSL_CERT",))[0]
    key_file = look.raw("cassandra_ssl_key", ("SQLA_AUDIT_CASSANDRA_SSL_KEY",))[0]
    check_hostname = look.get(
        "cassandra_ssl_check_hostname",
        ("SQLA_AUDIT_CASSANDRA_SSL_CHECK_HOSTNAME",),
        _on_off,
        True,
        "on or off",
    )
    files = (ca_file, cert_file, key_file)
    if enabled is False:
        if any(files):
            raise ConfigurationError(
                "--cassandra-ssl / SQLA_AUDIT_CASSANDRA_SSL is off but a CA, certificate or "
                "key is given (--cassandra-ssl-ca/-cert/-key): remove one or the other"
            )
        return None
    if (cert_file is None) != (key_file is None):
        raise ConfigurationError(
            "a client certificate needs both --cassandra-ssl-cert / SQLA_AUDIT_CASSANDRA_SSL_CERT "
            "and --cassandra-ssl-key / SQLA_AUDIT_CASSANDRA_SSL_KEY"
        )
    if enabled is None and not any(files):
        return None
    return CassandraTlsConfig(
        ca_file=ca_file, cert_file=cert_file, key_file=key_file, check_hostname=check_hostname
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
        tls=load_tls_config(args, env),
    )


def load_signature_config(
    args: argparse.Namespace, env: Mapping[str, str], *, keys_required: bool = False
) -> SignatureConfig:
    """The signature policy (``--signatures``, default ``off``) and the verifying keys: the
    file ``--signing-keys-file`` / ``SQLA_AUDIT_SIGNING_KEYS_FILE``, else the variable
    ``SQLA_AUDIT_SIGNING_KEYS`` (``kid=BASE64,...``; never a flag, which ``ps`` would show).
    Keys are needed unless the policy is ``off`` (``keys_required``: always)."""
    look = _Lookup(args, env)
    policy = look.get(
        "signatures",
        ("SQLA_AUDIT_SIGNATURES",),
        _choice(SIGNATURE_POLICIES),
        "off",
        " or ".join(SIGNATURE_POLICIES),
    )
    path, where = look.raw("signing_keys_file", ("SQLA_AUDIT_SIGNING_KEYS_FILE",))
    keyring = None
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read {where} {path!r}: {exc.strerror}") from exc
        entries = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
        keyring = parse_keyring(",".join(entries), signing_key_id=None)
    elif _from_env(env, (KEYS_ENV,)) is not None:
        keyring = keyring_from_env(env, signing_key_id=None)
    if keyring is not None:
        keyring = Keyring(signing_key_id=None, keys=keyring.keys)  # verifying only
    if keyring is None and (policy != "off" or keys_required):
        raise ConfigurationError(
            f"signature policy {policy!r} needs the verifying keys: set {KEYS_ENV} "
            "(kid=BASE64,...) or --signing-keys-file / SQLA_AUDIT_SIGNING_KEYS_FILE"
            if policy != "off"
            else f"verifying needs the keys: set {KEYS_ENV} (kid=BASE64,...) or "
            "--signing-keys-file / SQLA_AUDIT_SIGNING_KEYS_FILE"
        )
    return SignatureConfig(policy=cast("SignaturePolicy", policy), keyring=keyring)


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
        signatures=load_signature_config(args, env),
        source=cast("SourceKind", source),
        sqs=sqs,
        store=cast("StoreKind", store),
        cassandra=load_cassandra_config(args, env),
        sqlite_path=sqlite_path,
        worker=worker,
        outbox=outbox,
    )


__all__ = [
    "load_cassandra_config",
    "load_consumer_config",
    "load_schema_config",
    "load_tls_config",
    "setting",
]
