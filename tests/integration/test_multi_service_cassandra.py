"""Two services, one audit trail, on a real Cassandra node: the multi-service scenario
(tests/multi_service_support.py) on a layout-2 keyspace, and a layout-1 keyspace holding the
same rows migrated by ``schema migrate``."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cassandra_support import cassandra_config
from multi_service_support import check_store, produce, records_of

from consumer.config import CassandraConfig
from consumer.records import AuditRecord, record_to_row
from consumer.sinks.base import ViewDisabled
from consumer.sinks.cassandra import _NAMES, CassandraStore, apply_schema
from consumer.sinks.migrate import layout_1_statements, migrate
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import ChangeEvent

if TYPE_CHECKING:
    from cassandra.cluster import Session


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[ChangeEvent]:
    return produce(tmp_path_factory.mktemp("services"))


@pytest.fixture
def keyspace(cassandra_session: Session) -> Iterator[str]:
    name = f"sqla_audit_ms_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {name}")


def _config(contact: str, keyspace: str, shards: int = 1) -> CassandraConfig:
    config = cassandra_config(contact, keyspace)
    return dataclasses.replace(
        config, schema=dataclasses.replace(config.schema, timeline_shards=shards)
    )


@pytest.mark.parametrize("shards", [1, 3])
def test_two_services_never_mix_on_cassandra(
    events: list[ChangeEvent], keyspace: str, cassandra_contact: str, shards: int
) -> None:
    """Same table, same ids, two services: history, as_of, the request view (two installs)
    and the table timeline over several hour buckets answer per service, in commit order,
    across page boundaries."""
    config = _config(cassandra_contact, keyspace, shards)
    apply_schema(config)
    store = CassandraStore.connect(config)
    try:
        store.write(records_of(events))
        check_store(store, events)
    finally:
        store.close()


def _write_layout_1(session: Session, keyspace: str, records: list[AuditRecord]) -> None:
    """Rows as a layout-1 consumer wrote them, into a keyspace built from the old CQL."""
    session.execute(
        f"CREATE KEYSPACE {keyspace} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    for statement in layout_1_statements(keyspace):
        session.execute(statement)
    names = ", ".join(_NAMES)
    insert = session.prepare(
        f"INSERT INTO {keyspace}.changes_by_record ({names}) "
        f"VALUES ({', '.join('?' for _ in _NAMES)})"
    )
    for record in records:
        row = record_to_row(record)
        row["event_time"] = row["event_time_us"] // 1000
        row["occurred_at"] = row["occurred_at_us"] // 1000
        session.execute(insert, tuple(row[name] for name in _NAMES))


def test_a_layout_1_keyspace_is_refused_then_migrated(
    events: list[ChangeEvent],
    keyspace: str,
    cassandra_contact: str,
    cassandra_session: Session,
    tmp_path: Path,
) -> None:
    """A layout-1 keyspace stops the store and schema apply with one line naming schema
    migrate; an interrupted migration resumes; afterwards history, as_of and every view
    answer as on a fresh keyspace, and migrating again does nothing."""
    records = records_of(events)
    _write_layout_1(cassandra_session, keyspace, records)
    config = _config(cassandra_contact, keyspace, shards=2)
    for attempt in (lambda: CassandraStore.connect(config), lambda: apply_schema(config)):
        with pytest.raises(ConfigurationError) as refused:
            attempt()
        assert "holds audit layout 1; run `sqla-audit schema migrate" in str(refused.value)
        assert "\n" not in str(refused.value)

    lines: list[str] = []

    def interrupt(line: str) -> None:
        lines.append(line)
        if line == "copied 14 records":
            raise KeyboardInterrupt  # the operator stops it after two pages

    with pytest.raises(KeyboardInterrupt):
        migrate(config, progress=interrupt, page_size=7)
    with pytest.raises(ConfigurationError, match="layout 1"):
        CassandraStore.connect(config)  # not done: still refused
    lines.clear()
    result = migrate(config, progress=lines.append, page_size=7)
    assert lines[0] == "resuming after 14 records"
    assert result.total == len(records)
    assert result.copied == len(records) - 14
    assert "at audit layout 2" in lines[-1]

    store = CassandraStore.connect(config)
    try:
        check_store(store, events)
    finally:
        store.close()
    again = migrate(config, progress=lines.append)
    assert again.already_done
    assert lines[-1] == f"keyspace {keyspace!r} is already at audit layout 2"


def test_a_newer_layout_asks_to_upgrade(
    keyspace: str, cassandra_contact: str, cassandra_session: Session
) -> None:
    """A keyspace recording a newer layout stops the store with 'upgrade sqla-audit'."""
    config = _config(cassandra_contact, keyspace)
    apply_schema(config)
    cassandra_session.execute(f"UPDATE {keyspace}.schema_info SET layout = 3 WHERE name = 'audit'")
    with pytest.raises(ConfigurationError, match=r"layout 3, newer .*: upgrade sqla-audit"):
        CassandraStore.connect(config)


def test_a_disabled_view_is_a_clear_error(
    keyspace: str, cassandra_contact: str, events: list[ChangeEvent]
) -> None:
    """A keyspace applied with --views request keeps no actor, trace or table view: reading
    one names the view and the flag; a consumer asking other views is refused at start."""
    config = _config(cassandra_contact, keyspace)
    narrow = dataclasses.replace(
        config, schema=dataclasses.replace(config.schema, views=frozenset({"request"}))
    )
    apply_schema(narrow)
    store = CassandraStore.connect(config)  # no --views: what the keyspace records
    try:
        store.write(records_of(events))
        assert store.by_request("req-shared-7f3a").items
        with pytest.raises(ViewDisabled, match=r"table view is not enabled.*--views"):
            store.by_table("billing", "users", since=events[0].committed_at)
        with pytest.raises(ViewDisabled, match="actor view"):
            store.by_actor("billing-user", since=events[0].committed_at)
    finally:
        store.close()
    wider = dataclasses.replace(
        config, schema=dataclasses.replace(config.schema, views=frozenset({"request", "table"}))
    )
    with pytest.raises(ConfigurationError, match="schema apply --views request,table"):
        CassandraStore.connect(wider)
