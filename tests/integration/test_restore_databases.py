"""Restoring records through the audited session on PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import restore_support as rs
from sqlalchemy.engine import Engine

from consumer.sinks.sqlite import SQLiteStore


@pytest.fixture
def shop(db_engine: Engine, tmp_path: Path) -> Iterator[rs.Shop]:
    store = SQLiteStore(tmp_path / "audit.db")
    made = rs.Shop(db_engine, store)
    try:
        yield made
    finally:
        made.close()
        store.close()


@pytest.mark.parametrize("scenario", rs.SCENARIOS, ids=lambda s: s.__name__)
def test_restore_scenario(shop: rs.Shop, scenario: Callable[[rs.Shop], None]) -> None:
    """Each restore scenario (its docstring says which) holds on the real database."""
    scenario(shop)
