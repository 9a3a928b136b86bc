"""The consumer and the query commands against a Cassandra node that requires TLS (with client
certificates) and password authentication (``scripts/services up cassandra-secure``):
``schema apply --roles`` creates the writer and reader roles, the consumer writes as the
writer, ``history`` reads as the reader, the reader cannot write, and a wrong CA, a missing
client certificate or a wrong password each end a command with one line and exit status 2."""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumer.config import CassandraConfig, CassandraSchemaConfig, CassandraTlsConfig
from consumer.failures import EXIT_UNAVAILABLE, EXIT_USAGE
from consumer.sinks.cassandra import CassandraStore
from consumer.sinks.cassandra.connection import CassandraAccessDenied, connect
from consumer.sinks.cassandra.roles import READ_ONLY_TABLES
from consumer.testing import make_event, make_record
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import Operation
from tests.integration.conftest import SnsToSqs, unique_name
from tests.net_support import SwitchableProxy
from tests.service_policy import require_service

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]

SECURE_ENV = "SQLA_AUDIT_TEST_CASSANDRA_SECURE"
WRITER_PASSWORD = "writer-" + uuid.uuid4().hex[:10]
READER_PASSWORD = "reader-" + uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class SecureNode:
    """Where the secure node is and the files and superuser to reach it."""

    host: str
    port: int
    ca: str
    cert: str
    key: str
    admin: str
    admin_password: str

    def flags(self, keyspace: str, user: str, password: str, *, ca: str | None = None) -> list[str]:
        """Command-line flags reaching the node as ``user`` (the password goes to the env)."""
        del password  # passed through the environment, never on the command line
        return [
            *["--cassandra-hosts", self.host, "--cassandra-port", str(self.port)],
            *["--local-dc", "datacenter1", "--protocol-version", "5", "--keyspace", keyspace],
            *["--consistency", "LOCAL_ONE", "--cassandra-username", user],
            *["--cassandra-ssl-ca", ca or self.ca],
            *["--cassandra-ssl-cert", self.cert, "--cassandra-ssl-key", self.key],
        ]

    def config(self, keyspace: str, user: str, password: str) -> CassandraConfig:
        return CassandraConfig(
            hosts=(self.host,),
            port=self.port,
            local_dc="datacenter1",
            consistency="LOCAL_ONE",
            protocol_version=5,
            username=user,
            password=password,
            schema=CassandraSchemaConfig(keyspace=keyspace),
            tls=CassandraTlsConfig(ca_file=self.ca, cert_file=self.cert, key_file=self.key),
        )


@pytest.fixture(scope="module")
def secure() -> SecureNode:
    """The secure node's settings (a failure under CI=true when it is not running)."""
    contact = require_service("cassandra-secure", SECURE_ENV)
    host, _, port = contact.rpartition(":")
    env = os.environ
    return SecureNode(
        host=host,
        port=int(port),
        ca=env[f"{SECURE_ENV}_CA"],
        cert=env[f"{SECURE_ENV}_CLIENT_CERT"],
        key=env[f"{SECURE_ENV}_CLIENT_KEY"],
        admin=env[f"{SECURE_ENV}_USERNAME"],
        admin_password=env[f"{SECURE_ENV}_PASSWORD"],
    )


def _cli(
    argv: list[str], password: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLA_AUDIT_")}
    env.update({"SQLA_AUDIT_CASSANDRA_PASSWORD": password, **(extra_env or {})})
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


@dataclass(frozen=True)
class Roles:
    keyspace: str
    writer: str
    reader: str


@pytest.fixture(scope="module")
def roles(secure: SecureNode) -> Iterator[Roles]:
    """A keyspace and its writer and reader roles made by ``schema apply --roles`` as the
    superuser (dropped after)."""
    keyspace = unique_name()
    suffix = keyspace.rsplit("_", 1)[-1]
    made = Roles(keyspace, f"writer_{suffix}", f"reader_{suffix}")
    argv = ["schema", "apply", *secure.flags(keyspace, secure.admin, secure.admin_password)]
    argv += ["--roles", "--writer-role", made.writer, "--reader-role", made.reader]
    role_env = {
        "SQLA_AUDIT_WRITER_PASSWORD": WRITER_PASSWORD,
        "SQLA_AUDIT_READER_PASSWORD": READER_PASSWORD,
    }
    done = _cli(argv, secure.admin_password, role_env)
    assert done.returncode == 0, done.stderr
    assert WRITER_PASSWORD not in done.stdout + done.stderr
    again = _cli(argv, secure.admin_password, role_env)  # idempotent
    assert again.returncode == 0, again.stderr
    yield made
    cluster = connect(secure.config(keyspace, secure.admin, secure.admin_password))
    try:
        session = cluster.connect()
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        for role in (made.writer, made.reader):
            session.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        cluster.shutdown()


def _permissions(secure: SecureNode, role: str) -> set[tuple[str, str]]:
    cluster = connect(secure.config("system", secure.admin, secure.admin_password))
    try:
        rows = cluster.connect().execute(f"LIST ALL PERMISSIONS OF {role} NORECURSIVE")
        return {(row["resource"], row["permission"]) for row in rows}
    finally:
        cluster.shutdown()


def test_roles_hold_exactly_the_documented_permissions(secure: SecureNode, roles: Roles) -> None:
    """The writer may MODIFY the audit tables (not schema_info) and SELECT only schema_info
    and event_digests; the reader may only SELECT the keyspace."""
    cluster = connect(secure.config(roles.keyspace, secure.admin, secure.admin_password))
    try:
        rows = cluster.connect().execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (roles.keyspace,),
        )
        tables = {row["table_name"] for row in rows}
    finally:
        cluster.shutdown()
    ks = roles.keyspace
    expected_writer = {
        (f"<table {ks}.{table}>", "MODIFY") for table in tables - READ_ONLY_TABLES
    } | {(f"<table {ks}.schema_info>", "SELECT"), (f"<table {ks}.event_digests>", "SELECT")}
    assert _permissions(secure, roles.writer) == expected_writer
    assert _permissions(secure, roles.reader) == {(f"<keyspace {ks}>", "SELECT")}


def test_consumer_writes_as_writer_and_history_reads_as_reader_over_tls(
    secure: SecureNode, roles: Roles, sns_to_sqs: SnsToSqs, aws_endpoint: str, tmp_path: Path
) -> None:
    """consume --until-empty stores SQS events as the writer over TLS; history shows them and
    verify checks them when run as the reader over TLS."""
    import boto3  # noqa: PLC0415

    _topic, queue_url = sns_to_sqs(raw=True)
    sqs = boto3.client(
        "sqs",
        endpoint_url=aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    record_id = "tls-" + uuid.uuid4().hex[:8]
    start = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
    for i, operation in enumerate((Operation.INSERT, Operation.UPDATE)):
        event = make_event(
            operation=operation, record_id=record_id, committed_at=start + dt.timedelta(seconds=i)
        )
        sqs.send_message(QueueUrl=queue_url, MessageBody=event.to_json())
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    consume = [
        *["consume", "--queue-url", queue_url, "--endpoint-url", aws_endpoint],
        *["--wait-seconds", "1", "--metrics-port", "0", "--until-empty", "--store", "cassandra"],
        *secure.flags(roles.keyspace, roles.writer, WRITER_PASSWORD),
    ]
    done = _cli(consume, WRITER_PASSWORD, aws)
    assert done.returncode == 0, done.stderr
    assert "stored 2" in done.stdout, done.stdout
    assert WRITER_PASSWORD not in done.stdout + done.stderr

    history = ["history", "accounts", record_id, "--format", "json"]
    history += secure.flags(roles.keyspace, roles.reader, READER_PASSWORD)
    shown = _cli(history, READER_PASSWORD)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(record_id) >= 2, shown.stdout
    assert '"insert"' in shown.stdout.lower()
    assert '"update"' in shown.stdout.lower()

    verify = ["verify", "record", "accounts", record_id, "--allow-unsigned", "--json"]
    verify += secure.flags(roles.keyspace, roles.reader, READER_PASSWORD)
    keys = {"SQLA_AUDIT_SIGNING_KEYS": "k1=" + base64.b64encode(b"k" * 32).decode()}
    checked = _cli(verify, READER_PASSWORD, keys)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_reader_role_cannot_write(secure: SecureNode, roles: Roles) -> None:
    """A store opened as the reader reads, but its writes are refused (not authorized)."""
    store = CassandraStore.connect(secure.config(roles.keyspace, roles.reader, READER_PASSWORD))
    try:
        records = [make_record(record_id="reader-write")]
        with pytest.raises(CassandraAccessDenied, match="not authorized") as info:
            store.write(records)
        assert "MODIFY" in str(info.value)
        assert READER_PASSWORD not in str(info.value)
    finally:
        store.close()


def test_writer_role_cannot_change_the_layout_record(secure: SecureNode, roles: Roles) -> None:
    """The writer may read schema_info but not rewrite it (no MODIFY there)."""
    from cassandra import Unauthorized  # noqa: PLC0415

    cluster = connect(secure.config(roles.keyspace, roles.writer, WRITER_PASSWORD))
    try:
        session = cluster.connect()
        assert session.execute(f"SELECT layout FROM {roles.keyspace}.schema_info").one()
        with pytest.raises(Unauthorized):
            session.execute(f"DELETE FROM {roles.keyspace}.schema_info WHERE name = 'audit'")
    finally:
        cluster.shutdown()


def _other_ca(tmp_path: Path) -> str:
    """A CA certificate that did not sign the node's certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _one_line_failure(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_USAGE, done.stderr
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["history", "consume"])
def test_wrong_ca_fails_with_one_line(
    secure: SecureNode, roles: Roles, tmp_path: Path, command: str
) -> None:
    """A CA bundle that does not trust the node: one line about the TLS handshake, exit 2."""
    flags = secure.flags(roles.keyspace, roles.reader, READER_PASSWORD, ca=_other_ca(tmp_path))
    argv = (
        ["history", "accounts", "1", *flags]
        if command == "history"
        else ["consume", "--queue-url", "http://127.0.0.1:1/1/q", "--metrics-port", "0", *flags]
    )
    line = _one_line_failure(
        _cli(argv, READER_PASSWORD), "TLS handshake", "certificate verify failed"
    )
    assert "--cassandra-ssl-ca" in line


@pytest.mark.parametrize("command", ["history", "consume"])
def test_wrong_password_fails_with_one_line(secure: SecureNode, roles: Roles, command: str) -> None:
    """A wrong password: one line naming the user and the settings (not the password), exit 2."""
    flags = secure.flags(roles.keyspace, roles.reader, "wrong")
    argv = (
        ["history", "accounts", "1", *flags]
        if command == "history"
        else ["consume", "--queue-url", "http://127.0.0.1:1/1/q", "--metrics-port", "0", *flags]
    )
    line = _one_line_failure(
        _cli(argv, "wrong-password-123"), "refused the credentials", repr(roles.reader)
    )
    assert "wrong-password-123" not in line


def test_missing_client_certificate_fails_with_one_line(secure: SecureNode, roles: Roles) -> None:
    """The node requires a client certificate: without one, one line naming the flags, exit 2."""
    flags = secure.flags(roles.keyspace, roles.reader, READER_PASSWORD)
    cut = flags.index("--cassandra-ssl-cert")
    del flags[cut : cut + 4]
    _one_line_failure(
        _cli(["history", "accounts", "1", *flags], READER_PASSWORD),
        "TLS handshake",
        "--cassandra-ssl-cert",
    )


@pytest.fixture
def other_address(secure: SecureNode) -> Iterator[SwitchableProxy]:
    """The secure node reached through 127.0.0.1 (an address its certificate does not name)."""
    proxy = SwitchableProxy((secure.host, secure.port))
    proxy.start()
    yield proxy
    proxy.stop()


def test_hostname_check_refuses_an_address_the_certificate_does_not_name(
    secure: SecureNode, roles: Roles, other_address: SwitchableProxy
) -> None:
    """Connecting by an address missing from the node's certificate fails the handshake."""
    config = replace(
        secure.config(roles.keyspace, roles.reader, READER_PASSWORD),
        hosts=("127.0.0.1",),
        port=other_address.port,
    )
    with pytest.raises(ConfigurationError, match="TLS handshake") as info:
        CassandraStore.connect(config)
    assert "127.0.0.1" in str(info.value)


def test_hostname_check_off_accepts_a_trusted_certificate_for_another_name(
    secure: SecureNode, roles: Roles, other_address: SwitchableProxy
) -> None:
    """With the host name check off, a certificate from the trusted CA is enough."""
    config = secure.config(roles.keyspace, roles.reader, READER_PASSWORD)
    assert config.tls is not None
    config = replace(
        config,
        hosts=("127.0.0.1",),
        port=other_address.port,
        tls=replace(config.tls, check_hostname=False),
    )
    store = CassandraStore.connect(config)
    store.close()


def test_plain_connection_to_the_tls_node_hints_at_tls(secure: SecureNode, roles: Roles) -> None:
    """history without TLS settings against the TLS node: one line suggesting the CA flag
    (exit 3: a reset connection may also be a node going down)."""
    flags = secure.flags(roles.keyspace, roles.reader, READER_PASSWORD)
    cut = flags.index("--cassandra-ssl-ca")
    del flags[cut : cut + 6]
    done = _cli(["history", "accounts", "1", *flags], READER_PASSWORD)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert len(lines) == 1, done.stderr
    assert "if the node requires TLS, set --cassandra-ssl-ca" in lines[0]
