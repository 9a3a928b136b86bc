"""Model-based capture test on PostgreSQL and MariaDB: the events replay to the database."""

from __future__ import annotations

from capture_model import model_test
from sqlalchemy.engine import Engine


def test_replayed_events_reproduce_postgres(postgres_engine: Engine) -> None:
    """Random ORM, bulk and savepoint work on PostgreSQL: the events replay to its tables."""
    model_test(postgres_engine)()


def test_replayed_events_reproduce_mariadb(mariadb_engine: Engine) -> None:
    """Random ORM, bulk and savepoint work on MariaDB: the events replay to its tables."""
    model_test(mariadb_engine)()
