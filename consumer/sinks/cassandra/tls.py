"""Client-to-node TLS for Cassandra: the ``ssl.SSLContext`` the driver connects with, and
what a refused handshake or refused credentials mean.

:func:`ssl_context` builds the context from a :class:`~consumer.config.CassandraTlsConfig`:
TLS 1.2 or later, the node's certificate verified against the CA bundle (or the system's
CAs), its host name checked unless turned off, and an optional client certificate. A file
that is missing or unreadable is a :class:`~sqla_audit.errors.ConfigurationError` naming the
flag, before anything connects.

:func:`refusal` looks at the errors of a failed connection: a node that refused the user
name and password, or a TLS handshake that failed (an untrusted certificate, a name that
does not match, a node that wants a client certificate or does not speak TLS), is a
configuration problem -- one line naming the settings to fix, never the password -- where
a node that does not answer is an outage to wait for.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Final

from consumer.config import CassandraConfig, CassandraTlsConfig
from sqla_audit.errors import ConfigurationError

_CA: Final = "--cassandra-ssl-ca / SQLA_AUDIT_CASSANDRA_SSL_CA"
_CERT: Final = (
    "--cassandra-ssl-cert/--cassandra-ssl-key (SQLA_AUDIT_CASSANDRA_SSL_CERT/"
    "SQLA_AUDIT_CASSANDRA_SSL_KEY)"
)
_CREDENTIALS: Final = (
    "--cassandra-username/--cassandra-password (SQLA_AUDIT_CASSANDRA_USERNAME/"
    "SQLA_AUDIT_CASSANDRA_PASSWORD)"
)


def ssl_context(tls: CassandraTlsConfig) -> ssl.SSLContext:
    """A client ``SSLContext`` for ``tls``; a bad file is a :class:`ConfigurationError`."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{_CA}: no such file {tls.ca_file!r}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{_CA}: cannot read CA certificates from {tls.ca_file!r} "
            f"({exc.strerror or exc}); it must hold PEM certificates"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.check_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except FileNotFoundError as exc:
            raise ConfigurationError(f"{_CERT}: no such file {exc.filename!r}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{_CERT}: cannot load the client certificate {tls.cert_file!r} with key "
                f"{tls.key_file!r} ({exc.strerror or exc}); they must be PEM files of one "
                "pair and the key unencrypted"
            ) from exc
    return context


def _tls_failure(error: BaseException) -> bool:
    if isinstance(error, ssl.SSLError):
        return True
    text = str(error)
    return "[SSL" in text or "certificate verify failed" in text


def _handshake_detail(error: BaseException) -> str:
    """The useful part of a handshake error (the driver prefixes it with the addresses)."""
    text = str(error.args[1]) if isinstance(error, OSError) and len(error.args) > 1 else str(error)
    return text.split("Last error: ", 1)[-1].strip() or type(error).__name__


def refusal(config: CassandraConfig, errors: Iterable[BaseException]) -> ConfigurationError | None:
    """A :class:`ConfigurationError` when a node refused the credentials or the TLS
    handshake failed (of the per-host ``errors`` of a connection attempt); else ``None``."""
    from cassandra import AuthenticationFailed  # noqa: PLC0415 - heavy, optional dependency

    where = f"{', '.join(config.hosts)} port {config.port}"
    for error in errors:
        if isinstance(error, AuthenticationFailed):
            user = f"user {config.username!r}" if config.username else "no user name"
            return ConfigurationError(
                f"Cassandra at {where} refused the credentials ({user}): bad user name or "
                f"password, or the role may not log in; check {_CREDENTIALS}"
            )
    for error in errors:
        if _tls_failure(error):
            detail = _handshake_detail(error)
            if "certificate verify failed" in detail or "CERTIFICATE_VERIFY" in detail:
                hint = (
                    f"the node's certificate is not signed by a CA of {_CA}, or does not "
                    "name the host connected to (--cassandra-ssl-check-hostname)"
                )
            else:
                hint = (
                    f"the node may require a client certificate ({_CERT}) or may not speak "
                    "TLS on this port; check its client_encryption_options"
                )
            return ConfigurationError(
                f"TLS handshake with Cassandra at {where} failed: {detail}; {hint}"
            )
    return None


def tls_hint(config: CassandraConfig, exc: BaseException) -> str:
    """A hint for a plain connection the node reset (a node that requires TLS does that to a
    client speaking plain CQL); ``""`` otherwise. The failure itself stays retryable: a node
    shutting down resets connections too."""
    errors = getattr(exc, "errors", None)
    found = errors.values() if isinstance(errors, dict) else [exc]
    if config.tls is None and any(isinstance(e, ConnectionResetError) for e in found):
        return (
            " (if the node requires TLS, set --cassandra-ssl-ca / SQLA_AUDIT_CASSANDRA_SSL_CA "
            "or --cassandra-ssl on)"
        )
    return ""


__all__ = ["refusal", "ssl_context", "tls_hint"]
