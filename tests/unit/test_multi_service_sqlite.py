"""Two services, one audit trail, on the SQLite store (tests/multi_service_support.py)."""

from __future__ import annotations

from pathlib import Path

from multi_service_support import check_store, produce, records_of

from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore


def test_two_services_never_mix_on_sqlite(tmp_path: Path) -> None:
    """Same table, same ids, two services: history, as_of, request view and table timeline
    answer per service and in commit order on SQLite."""
    events = produce(tmp_path)
    store = SQLiteStore(tmp_path / "audit.db")
    try:
        store.write(records_of(events))
        check_store(store, events)
    finally:
        store.close()


def test_two_services_never_mix_in_memory(tmp_path: Path) -> None:
    """The same scenario on the in-memory store."""
    events = produce(tmp_path)
    store = MemoryStore()
    store.write(records_of(events))
    check_store(store, events)
