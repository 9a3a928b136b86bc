"""Restoring records through the audited session, on SQLite, over the memory and SQLite stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import restore_support as rs
import sqlalchemy as sa

from consumer.sinks.base import AuditStore
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[rs.Shop]:
    store: AuditStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "audit.db")
    )
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'app.db'}")
    made = rs.Shop(engine, store)
    try:
        yield made
    finally:
        made.close()
        store.close()
        engine.dispose()


@pytest.mark.parametrize("scenario", rs.SCENARIOS, ids=lambda s: s.__name__)
def test_restore_scenario(shop: rs.Shop, scenario: Callable[[rs.Shop], None]) -> None:
    """Each restore scenario (its docstring says which) holds on SQLite."""
    scenario(shop)
