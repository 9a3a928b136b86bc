"""Model-based capture test on PostgreSQL and MariaDB: the events replay to the database."""

from __future__ import annotations

import pytest
from capture_model import model_test
from sqlalchemy.engine import Engine

SESSION_MODES = pytest.mark.parametrize(
    "reuse_session", [False, True], ids=["session-per-transaction", "kept-session"]
)


@SESSION_MODES
def test_replayed_events_reproduce_postgres(postgres_engine: Engine, reuse_session: bool) -> None:
    """Random ORM, bulk and savepoint work on PostgreSQL: the events replay to its tables."""
    model_test(postgres_engine, reuse_session=reuse_session)()


@SESSION_MODES
def test_replayed_events_reproduce_mariadb(mariadb_engine: Engine, reuse_session: bool) -> None:
    """Random ORM, bulk and savepoint work on MariaDB: the events replay to its tables."""
    model_test(mariadb_engine, reuse_session=reuse_session)()
