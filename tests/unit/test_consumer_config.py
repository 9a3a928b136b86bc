"""Consumer configuration: flags over environment, defaults, and clear errors."""

from __future__ import annotations

import argparse

import pytest

from consumer.arguments import add_consumer_arguments
from consumer.settings import load_consumer_config
from sqla_audit.errors import ConfigurationError

QUEUE = "http://127.0.0.1:5123/123456789012/audit"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_consumer_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_with_only_a_queue() -> None:
    """With only a queue URL every other setting has its documented default."""
    config = load_consumer_config(parse("--queue-url", QUEUE), {})
    assert config.sqs.queue_url == QUEUE
    assert config.sqs.wait_seconds == 20
    assert config.sqs.batch_size == 10
    assert config.sqs.visibility_timeout == 60
    assert config.store == "cassandra"
    assert config.cassandra.hosts == ("127.0.0.1",)
    assert config.cassandra.port == 9042
    assert config.cassandra.consistency == "LOCAL_QUORUM"
    assert config.cassandra.schema.keyspace == "sqla_audit"
    assert config.worker.concurrency == 4
    assert config.worker.metrics_port == 9108
    assert config.worker.metrics_host == "127.0.0.1"


def test_environment_fills_in_settings() -> None:
    """Every setting can come from its environment variable."""
    env = {
        "SQLA_AUDIT_QUEUE_URL": QUEUE,
        "SQLA_AUDIT_CASSANDRA_HOSTS": "127.0.0.1, 127.0.0.2",
        "SQLA_AUDIT_CASSANDRA_PORT": "9043",
        "SQLA_AUDIT_KEYSPACE": "audit_test",
        "SQLA_AUDIT_LOCAL_DC": "dc-east",
        "SQLA_AUDIT_CONSISTENCY": "local_one",
        "SQLA_AUDIT_CASSANDRA_USERNAME": "cassandra",
        "SQLA_AUDIT_CASSANDRA_PASSWORD": "secret",
        "SQLA_AUDIT_CONCURRENCY": "8",
        "SQLA_AUDIT_BATCH_SIZE": "5",
        "SQLA_AUDIT_VISIBILITY_TIMEOUT": "120",
        "SQLA_AUDIT_METRICS_PORT": "0",
        "SQLA_AUDIT_TTL": "86400",
        "SQLA_AUDIT_TIME_BUCKET": "month",
        "SQLA_AUDIT_LOG_FORMAT": "json",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5123",
    }
    config = load_consumer_config(parse(), env)
    assert config.cassandra.hosts == ("127.0.0.1", "127.0.0.2")
    assert config.cassandra.port == 9043
    assert config.cassandra.local_dc == "dc-east"
    assert config.cassandra.consistency == "LOCAL_ONE"
    assert config.cassandra.username == "cassandra"
    assert config.cassandra.password == "secret"
    assert "secret" not in repr(config)
    assert config.cassandra.schema.keyspace == "audit_test"
    assert config.cassandra.schema.ttl_seconds == 86400
    assert config.cassandra.schema.time_bucket == "month"
    assert config.worker.concurrency == 8
    assert config.sqs.batch_size == 5
    assert config.sqs.visibility_timeout == 120
    assert config.sqs.region == "eu-west-1"
    assert config.sqs.endpoint_url == "http://127.0.0.1:5123"
    assert config.worker.metrics_port is None
    assert config.worker.log_format == "json"


def test_flags_win_over_environment() -> None:
    """A flag overrides the environment variable of the same setting."""
    config = load_consumer_config(
        parse("--queue-url", QUEUE, "--batch-size", "3"),
        {"SQLA_AUDIT_QUEUE_URL": "http://127.0.0.1:1/other", "SQLA_AUDIT_BATCH_SIZE": "7"},
    )
    assert config.sqs.queue_url == QUEUE
    assert config.sqs.batch_size == 3


def test_sqlite_store() -> None:
    """--store sqlite takes its file from --store-url."""
    config = load_consumer_config(
        parse("--queue-url", QUEUE, "--store", "sqlite", "--store-url", "audit.db"), {}
    )
    assert config.store == "sqlite"
    assert config.sqlite_path == "audit.db"


def test_network_topology_replication() -> None:
    """NetworkTopologyStrategy takes per-datacenter replica counts."""
    config = load_consumer_config(
        parse(
            "--queue-url",
            QUEUE,
            "--replication-class",
            "NetworkTopologyStrategy",
            "--datacenters",
            "dc1:3,dc2:2",
        ),
        {},
    )
    assert dict(config.cassandra.schema.datacenters) == {"dc1": 3, "dc2": 2}


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ((), {}, "needs --queue-url / SQLA_AUDIT_QUEUE_URL"),
        (("--queue-url", "sqs://nope"), {}, "--queue-url must be an http"),
        (("--batch-size", "11"), {}, "--batch-size must be an integer from 1 to 10"),
        ((), {"SQLA_AUDIT_BATCH_SIZE": "x"}, "SQLA_AUDIT_BATCH_SIZE \\(environment\\)"),
        (("--wait-seconds", "21"), {}, "from 0 to 20"),
        (("--visibility-timeout", "1"), {}, "from 5 to 43200"),
        (("--concurrency", "0"), {}, "from 1 to 64"),
        (("--cassandra-port", "70000"), {}, "port number"),
        (("--consistency", "MOST"), {}, "LOCAL_QUORUM"),
        (("--keyspace", "bad-name"), {}, "CQL identifier"),
        (("--time-bucket", "week"), {}, "none, year, month, day"),
        (("--replication-class", "NetworkTopologyStrategy"), {}, "needs --datacenters"),
        (("--datacenters", "dc1:3"), {}, "only applies to NetworkTopologyStrategy"),
        (("--replication-class", "Everywhere"), {}, "SimpleStrategy or"),
        (("--store", "mongo"), {}, "cassandra or sqlite"),
        (("--store", "sqlite"), {}, "needs --store-url"),
        (("--source", "kafka"), {}, "--source must be sqs"),
        (("--cassandra-username", "u"), {}, "both"),
        (("--ttl", "-1"), {}, "--ttl must be seconds"),
        (("--metrics-port", "http"), {}, "port number, or 0"),
        (("--log-format", "xml"), {}, "text or json"),
        (("--cassandra-hosts", " , "), {}, "comma-separated"),
    ],
)
def test_invalid_settings_raise_clear_errors(
    argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    """Each invalid setting raises ConfigurationError naming the flag or variable."""
    if "--queue-url" not in argv and message != "needs --queue-url / SQLA_AUDIT_QUEUE_URL":
        argv = ("--queue-url", QUEUE, *argv)
    with pytest.raises(ConfigurationError, match=message):
        load_consumer_config(parse(*argv), env)


def test_config_is_frozen() -> None:
    """Config objects cannot be changed after validation."""
    config = load_consumer_config(parse("--queue-url", QUEUE), {})
    with pytest.raises(AttributeError):
        config.store = "sqlite"  # type: ignore[misc]
