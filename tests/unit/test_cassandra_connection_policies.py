"""How the consumer's driver cluster reconnects and retries slow reads (no Cassandra needed)."""

from __future__ import annotations

import itertools
from typing import Any

from consumer.config import CassandraConfig
from consumer.sinks.cassandra import connection
from consumer.sinks.cassandra.reads import CassandraReads


def test_reconnection_never_gives_up_on_a_node() -> None:
    """A node down for hours is still retried every few seconds (the driver's default
    schedule stops after 64 attempts, about two minutes here, and never reconnects)."""
    schedule = connection.reconnection_policy().new_schedule()
    delays = list(itertools.islice(schedule, 5000))
    assert len(delays) == 5000
    assert max(delays) <= connection.RECONNECT_MAX_DELAY


def test_reads_may_go_to_a_second_replica_when_the_first_is_slow() -> None:
    """The profile sends a read to another replica after READ_SPECULATION_DELAY (reads are
    idempotent); writes are not marked idempotent, so they are never sent twice at once."""
    from cassandra.policies import ConstantSpeculativeExecutionPolicy  # noqa: PLC0415

    profile = connection.execution_profile(CassandraConfig())
    policy = profile.speculative_execution_policy
    assert isinstance(policy, ConstantSpeculativeExecutionPolicy)
    assert policy.delay == connection.READ_SPECULATION_DELAY
    assert policy.max_attempts == 1


class _Session:
    def __init__(self) -> None:
        self.executed: list[Any] = []

    def execute(self, statement: Any, timeout: float | None = None) -> list[Any]:
        self.executed.append(statement)
        return []


class _Prepared:
    def bind(self, params: tuple[Any, ...]) -> Any:
        from cassandra.query import SimpleStatement  # noqa: PLC0415

        return SimpleStatement("SELECT 1")


def test_every_read_is_marked_idempotent() -> None:
    """Bound read statements carry is_idempotent, the condition for speculative execution."""
    reads = CassandraReads.__new__(CassandraReads)
    session = _Session()
    reads._session = session
    reads._timeout = 1.0
    reads._execute(_Prepared(), (), 10)
    assert session.executed[0].is_idempotent is True


class _FailingSession(_Session):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def execute(self, statement: Any, timeout: float | None = None) -> list[Any]:
        from cassandra import ReadFailure  # noqa: PLC0415

        self.executed.append(statement)
        if self.failures:
            self.failures -= 1
            raise ReadFailure("Operation failed - received 1 responses and 1 failures")
        return ["row"]


def _reads(session: _Session) -> CassandraReads:
    reads = CassandraReads.__new__(CassandraReads)
    reads._session = session
    reads._timeout = 1.0
    return reads


def test_a_replica_failure_is_read_again() -> None:
    """A ReadFailure (a replica that has just restarted fails the read; the driver never
    retries that error) is asked again, and the second answer returned."""
    session = _FailingSession(failures=1)
    assert _reads(session)._execute(_Prepared(), (), 10) == ["row"]
    assert len(session.executed) == 2


def test_a_replica_failing_every_time_is_a_store_error() -> None:
    """A read that keeps failing ends as the store's retryable StoreError, after a few tries."""
    import pytest  # noqa: PLC0415

    from sqla_audit.errors import StoreError  # noqa: PLC0415

    session = _FailingSession(failures=100)
    with pytest.raises(StoreError, match="ReadFailure"):
        _reads(session)._execute(_Prepared(), (), 10)
    assert len(session.executed) == connection.READ_ATTEMPTS
