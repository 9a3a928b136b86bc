"""Connecting to Cassandra, and what its errors mean to the store.

:func:`connect` builds a driver ``Cluster`` from a :class:`~consumer.config.CassandraConfig`
(explicit protocol version, token-aware DC-local routing, quick reconnection). Driver errors
are sorted into the sqla-audit tree: :func:`classify` turns Cassandra's ``InvalidRequest``
into a permanent :class:`~consumer.sinks.errors.RecordRejected` (that record's problem) and
everything else (no host, timeouts, unavailable, overloaded) into a retryable
:class:`~sqla_audit.errors.StoreError` (:func:`store_error`); a request Cassandra refuses for
lack of permission is a :class:`CassandraAccessDenied`. With TLS the cluster connects through
the context of :mod:`~consumer.sinks.cassandra.tls`; refused credentials or a failed TLS
handshake stop :func:`connect` with a :class:`~sqla_audit.errors.ConfigurationError`
(:func:`classify_connect_failure`) instead of an outage to wait for.
"""

from __future__ import annotations

from typing import Any, Final

from consumer.config import CassandraConfig
from consumer.sinks.cassandra.tls import refusal, ssl_context, tls_hint
from consumer.sinks.errors import RecordRejected
from sqla_audit.errors import ConfigurationError, StoreError

#: Longest pause between the driver's attempts to reconnect to a node it lost. A worker
#: holding batches through an outage writes as soon as the driver has a connection again,
#: so this bounds how long after the node returns the worker resumes (the driver's default
#: is 600 s). A reconnection attempt is one TCP connect: cheap even every 2 s.
RECONNECT_MAX_DELAY: Final = 2.0

#: Seconds a read waits for its replica before the same read also goes to the next one
#: (speculative execution; reads only -- see :func:`execution_profile`).
READ_SPECULATION_DELAY: Final = 0.5

#: Times a read is sent when replicas answer with a failure (``ReadFailure``: e.g. a replica
#: that has just restarted and cannot serve the table yet). The driver's retry policy never
#: sees that error, so the store asks again itself, 0.1 s later (reads are idempotent).
READ_ATTEMPTS: Final = 3
#: Seconds between those attempts.
READ_RETRY_DELAY: Final = 0.1


class CassandraAccessDenied(StoreError):
    """Cassandra refused a request because the role lacks a permission (``Unauthorized``).

    A :class:`StoreError`, so a worker holds its messages and retries until the permission
    is granted; a command ends with exit status 2 (see :mod:`consumer.failures`).
    """


def reconnection_policy() -> Any:
    """Reconnect to a lost node after 0.5 s, doubling to :data:`RECONNECT_MAX_DELAY`, and
    never give up: the driver's default stops after 64 attempts (about two minutes at this
    pace) and then never reconnects to that node, so a node down a little longer would be
    lost to the worker for good -- on a three-node cluster, two such nodes and writes at
    ``LOCAL_QUORUM`` could never succeed again."""
    from cassandra.policies import ExponentialReconnectionPolicy  # noqa: PLC0415

    return ExponentialReconnectionPolicy(
        base_delay=0.5, max_delay=RECONNECT_MAX_DELAY, max_attempts=None
    )


def execution_profile(config: CassandraConfig) -> Any:
    """The default execution profile: token-aware, DC-local routing at the configured
    consistency, and speculative execution for reads.

    A read still unanswered after :data:`READ_SPECULATION_DELAY` is sent once more, to the
    next replica, and the first answer wins: a replica that is restarting, in a long GC
    pause or just killed then costs half a second instead of the request timeout. The
    driver speculates only on statements marked idempotent, and only reads are
    (:mod:`~consumer.sinks.cassandra.reads`): writes are idempotent too, but a slow write
    usually means an overloaded cluster, where a second copy of every slow write adds load;
    the worker retries a failed batch itself. Retries stay the driver's default policy (one
    retry on another node for ``Unavailable``, a read timeout retried once when enough
    replicas answered, write timeouts not retried: the worker's batch retry covers them).
    """
    from cassandra import ConsistencyLevel  # noqa: PLC0415
    from cassandra.cluster import ExecutionProfile  # noqa: PLC0415
    from cassandra.policies import (  # noqa: PLC0415
        ConstantSpeculativeExecutionPolicy,
        DCAwareRoundRobinPolicy,
        TokenAwarePolicy,
    )
    from cassandra.query import dict_factory  # noqa: PLC0415

    return ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[config.consistency],
        request_timeout=config.request_timeout,
        row_factory=dict_factory,
        speculative_execution_policy=ConstantSpeculativeExecutionPolicy(
            delay=READ_SPECULATION_DELAY, max_attempts=1
        ),
    )


def connect(config: CassandraConfig) -> Any:
    """A connected driver ``Cluster`` (call ``.shutdown()``), configured from ``config``.

    Explicit protocol version and ``DCAwareRoundRobinPolicy(local_dc)`` (token aware) keep
    the driver from guessing (and warning); reconnection is quick (0.5 s doubling to
    :data:`RECONNECT_MAX_DELAY`) so a worker resumes soon after Cassandra comes back.
    """
    from cassandra import UnresolvableContactPoints  # noqa: PLC0415 - heavy, optional
    from cassandra.auth import PlainTextAuthProvider  # noqa: PLC0415
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster  # noqa: PLC0415

    profile = execution_profile(config)
    auth = (
        PlainTextAuthProvider(username=config.username, password=config.password)
        if config.username is not None
        else None
    )
    context = ssl_context(config.tls) if config.tls is not None else None
    try:
        cluster = Cluster(
            contact_points=list(config.hosts),
            port=config.port,
            protocol_version=config.protocol_version,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            auth_provider=auth,
            connect_timeout=config.connect_timeout,
            reconnection_policy=reconnection_policy(),
            idle_heartbeat_interval=5,
            ssl_context=context,
        )
    except UnresolvableContactPoints as exc:  # the driver resolves the names right here
        hosts = ", ".join(config.hosts)
        raise StoreError(
            f"none of the Cassandra hosts ({hosts}) resolves to an address; check the host names"
        ) from exc
    try:
        cluster.connect()
    except Exception as exc:
        cluster.shutdown()
        refused = classify_connect_failure(config, exc)
        if refused is not None:
            raise refused from exc
        raise store_error("cannot connect to Cassandra" + tls_hint(config, exc), exc) from exc
    return cluster


def classify_connect_failure(
    config: CassandraConfig, exc: BaseException
) -> ConfigurationError | None:
    """A :class:`ConfigurationError` when the connection failed because a node refused the
    credentials or the TLS handshake (``None``: an outage, worth retrying)."""
    errors = getattr(exc, "errors", None)
    return refusal(config, errors.values() if isinstance(errors, dict) else [exc])


def store_error(what: str, exc: BaseException) -> StoreError:
    if type(exc).__name__ == "Unauthorized":
        detail = str(exc).split("message=", 1)[-1].strip().strip('"')
        return CassandraAccessDenied(
            f"{what}: Cassandra refused it: not authorized ({detail}); grant the role its "
            "permissions (sqla-audit schema apply --roles, see docs/security.md)"
        )
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


def classify(exc: BaseException) -> Exception:
    """Driver errors -> the sqla-audit tree: invalid requests are permanent, rest retryable."""
    from cassandra import InvalidRequest  # noqa: PLC0415

    if isinstance(exc, RecordRejected):
        return exc
    if isinstance(exc, InvalidRequest):
        return RecordRejected(f"Cassandra rejected a record: {exc}")
    return store_error("Cassandra write failed", exc)


__all__ = [
    "READ_ATTEMPTS",
    "READ_RETRY_DELAY",
    "READ_SPECULATION_DELAY",
    "RECONNECT_MAX_DELAY",
    "CassandraAccessDenied",
    "classify",
    "classify_connect_failure",
    "connect",
    "execution_profile",
    "reconnection_policy",
    "store_error",
]
