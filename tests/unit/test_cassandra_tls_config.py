"""Cassandra TLS and authentication settings: flags and environment, the SSL context, and
the one-line errors for refused credentials, refused handshakes and missing permissions."""

from __future__ import annotations

import argparse
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cassandra import AuthenticationFailed
from cassandra.cluster import NoHostAvailable
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumer.arguments import add_cassandra_arguments, add_consumer_arguments
from consumer.cli import build_parser
from consumer.config import CassandraConfig, CassandraTlsConfig
from consumer.failures import EXIT_UNAVAILABLE, EXIT_USAGE, classify
from consumer.settings import load_cassandra_config
from consumer.sinks.cassandra.connection import CassandraAccessDenied, classify_connect_failure
from consumer.sinks.cassandra.tls import ssl_context, tls_hint
from sqla_audit.errors import ConfigurationError, StoreError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cassandra_arguments(parser)
    return parser.parse_args(list(argv))


def _write_cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM files) for ``name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / f"{name}.pem"
    key_path = tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --------------------------------------------------------------------------- settings


def test_no_tls_setting_means_plain_connections() -> None:
    """Without any TLS flag or variable the connection stays unencrypted (tls is None)."""
    assert load_cassandra_config(parse(), {}).tls is None


def test_tls_flags_build_the_tls_settings() -> None:
    """--cassandra-ssl-ca/-cert/-key/-check-hostname fill CassandraTlsConfig."""
    config = load_cassandra_config(
        parse(
            "--cassandra-ssl-ca",
            "/etc/ca.pem",
            "--cassandra-ssl-cert",
            "/etc/client.pem",
            "--cassandra-ssl-key",
            "/etc/client.key",
            "--cassandra-ssl-check-hostname",
            "off",
        ),
        {},
    )
    assert config.tls == CassandraTlsConfig(
        ca_file="/etc/ca.pem",
        cert_file="/etc/client.pem",
        key_file="/etc/client.key",
        check_hostname=False,
    )


def test_tls_settings_come_from_the_environment() -> None:
    """Each TLS setting has an SQLA_AUDIT_CASSANDRA_SSL_* environment variable."""
    env = {
        "SQLA_AUDIT_CASSANDRA_SSL_CA": "/etc/ca.pem",
        "SQLA_AUDIT_CASSANDRA_SSL_CERT": "/etc/client.pem",
        "SQLA_AUDIT_CASSANDRA_SSL_KEY": "/etc/client.key",
    }
    tls = load_cassandra_config(parse(), env).tls
    assert tls == CassandraTlsConfig(
        ca_file="/etc/ca.pem", cert_file="/etc/client.pem", key_file="/etc/client.key"
    )
    assert tls.check_hostname is True


def test_ssl_on_alone_uses_the_system_trust_store() -> None:
    """--cassandra-ssl on without a CA file turns TLS on with the system's CAs."""
    tls = load_cassandra_config(parse("--cassandra-ssl", "on"), {}).tls
    assert tls == CassandraTlsConfig()


def test_ssl_off_with_a_ca_is_refused() -> None:
    """TLS files with --cassandra-ssl off contradict each other: a configuration error."""
    with pytest.raises(ConfigurationError, match="--cassandra-ssl"):
        load_cassandra_config(parse("--cassandra-ssl", "off", "--cassandra-ssl-ca", "/x"), {})


def test_client_certificate_needs_its_key() -> None:
    """A client certificate without its key (or the reverse) names both settings."""
    with pytest.raises(ConfigurationError, match="--cassandra-ssl-key"):
        load_cassandra_config(parse("--cassandra-ssl-cert", "/etc/client.pem"), {})


def test_bad_check_hostname_value_names_the_setting() -> None:
    """An unreadable on/off value names the flag and the variable."""
    with pytest.raises(ConfigurationError, match="SQLA_AUDIT_CASSANDRA_SSL_CHECK_HOSTNAME"):
        load_cassandra_config(parse(), {"SQLA_AUDIT_CASSANDRA_SSL_CHECK_HOSTNAME": "maybe"})


def test_password_is_not_in_the_config_repr() -> None:
    """The password never shows in a config's repr (logs, tracebacks)."""
    config = load_cassandra_config(
        parse("--cassandra-username", "writer", "--cassandra-password", "s3cr3t-pw"), {}
    )
    assert config.password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(config)


@pytest.mark.parametrize(
    "argv",
    [
        ["consume", "--help"],
        ["history", "--help"],
        ["schema", "apply", "--help"],
    ],
)
def test_tls_flags_are_offered_by_consume_queries_and_schema(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """consume, the query commands and schema apply all take the TLS flags."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    out = capsys.readouterr().out
    for flag in ("--cassandra-ssl-ca", "--cassandra-ssl-cert", "--cassandra-ssl-key"):
        assert flag in out


def test_consume_arguments_include_tls() -> None:
    """add_consumer_arguments carries the TLS flags through to the config."""
    parser = argparse.ArgumentParser()
    add_consumer_arguments(parser)
    args = parser.parse_args(["--cassandra-ssl-ca", "/ca.pem"])
    assert load_cassandra_config(args, {}).tls == CassandraTlsConfig(ca_file="/ca.pem")


# --------------------------------------------------------------------------- SSL context


def test_ssl_context_verifies_the_node_and_its_name(tmp_path: Path) -> None:
    """The context requires a certificate chain to the CA and checks the host name."""
    ca, _ = _write_cert(tmp_path, "ca")
    context = ssl_context(CassandraTlsConfig(ca_file=str(ca)))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_ssl_context_without_hostname_check_still_verifies_the_chain(tmp_path: Path) -> None:
    """check_hostname off keeps the chain verification on."""
    ca, _ = _write_cert(tmp_path, "ca")
    context = ssl_context(CassandraTlsConfig(ca_file=str(ca), check_hostname=False))
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_ssl_context_loads_a_client_certificate(tmp_path: Path) -> None:
    """A matching client certificate and key load without error."""
    ca, _ = _write_cert(tmp_path, "ca")
    cert, key = _write_cert(tmp_path, "client")
    context = ssl_context(
        CassandraTlsConfig(ca_file=str(ca), cert_file=str(cert), key_file=str(key))
    )
    assert isinstance(context, ssl.SSLContext)


def test_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A CA path that does not exist names --cassandra-ssl-ca and the path."""
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigurationError, match="--cassandra-ssl-ca") as info:
        ssl_context(CassandraTlsConfig(ca_file=str(missing)))
    assert str(missing) in str(info.value)


def test_ca_file_that_is_no_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    """A CA file without a PEM certificate is refused with one line naming the flag."""
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="--cassandra-ssl-ca"):
        ssl_context(CassandraTlsConfig(ca_file=str(bogus)))


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    """A client key of another certificate names --cassandra-ssl-cert/--cassandra-ssl-key."""
    ca, _ = _write_cert(tmp_path, "ca")
    cert, _ = _write_cert(tmp_path, "client")
    _, other_key = _write_cert(tmp_path, "other")
    with pytest.raises(ConfigurationError, match="--cassandra-ssl-key"):
        ssl_context(
            CassandraTlsConfig(ca_file=str(ca), cert_file=str(cert), key_file=str(other_key))
        )


# --------------------------------------------------------------------------- refusals


def _no_host(error: BaseException) -> Exception:
    return NoHostAvailable("Unable to connect to any servers", {"10.0.0.1:9142": error})


def _config() -> CassandraConfig:
    return CassandraConfig(
        hosts=("10.0.0.1",),
        port=9142,
        username="writer",
        password="s3cr3t-pw",
        tls=CassandraTlsConfig(ca_file="/etc/ca.pem"),
    )


def test_bad_credentials_are_a_configuration_error_without_the_password() -> None:
    """Refused credentials: one line naming the user and the settings, never the password."""
    error = classify_connect_failure(
        _config(),
        _no_host(AuthenticationFailed("Provided username writer and/or password are incorrect")),
    )
    assert isinstance(error, ConfigurationError)
    text = str(error)
    assert "'writer'" in text
    assert "SQLA_AUDIT_CASSANDRA_PASSWORD" in text
    assert "s3cr3t-pw" not in text
    failure = classify(error)
    assert failure.code == EXIT_USAGE
    assert "\n" not in failure.message


def test_refused_certificate_is_a_configuration_error() -> None:
    """A certificate the CA bundle does not trust: one line naming the CA setting."""
    error = classify_connect_failure(
        _config(),
        _no_host(
            PermissionError(
                1,
                "Tried connecting to [('10.0.0.1', 9142)]. Last error: [SSL: "
                "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
            )
        ),
    )
    assert isinstance(error, ConfigurationError)
    assert "TLS handshake" in str(error)
    assert "certificate verify failed" in str(error)
    assert "--cassandra-ssl-ca" in str(error)
    assert classify(error).code == EXIT_USAGE


def test_handshake_cut_by_the_node_mentions_the_client_certificate() -> None:
    """A node that drops the handshake (no client certificate) is a TLS configuration error."""
    error = classify_connect_failure(
        _config(), _no_host(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    )
    assert isinstance(error, ConfigurationError)
    assert "--cassandra-ssl-cert" in str(error)


def test_unreachable_node_is_left_to_the_retry_policy() -> None:
    """A refused TCP connection is not a refusal of credentials or TLS: None (retryable)."""
    assert (
        classify_connect_failure(_config(), _no_host(ConnectionRefusedError(111, "refused")))
        is None
    )


def test_access_denied_is_a_store_error_with_usage_exit_status() -> None:
    """Missing permissions keep a worker retrying (StoreError) but end a command with 2."""
    denied = CassandraAccessDenied("Cassandra refused the write: not authorized")
    assert isinstance(denied, StoreError)
    assert classify(denied).code == EXIT_USAGE
    assert classify(StoreError("down")).code == EXIT_UNAVAILABLE


def test_reset_plain_connection_hints_at_tls() -> None:
    """Without TLS settings, a node resetting the connection gets a hint to set the CA (the
    failure stays retryable: a node going down resets connections too)."""
    plain = CassandraConfig(hosts=("10.0.0.1",), port=9142)
    reset = _no_host(ConnectionResetError(104, "Connection reset by peer"))
    assert classify_connect_failure(plain, reset) is None
    assert "--cassandra-ssl-ca" in tls_hint(plain, reset)
    assert tls_hint(_config(), reset) == ""
    assert tls_hint(plain, _no_host(ConnectionRefusedError(111, "refused"))) == ""
