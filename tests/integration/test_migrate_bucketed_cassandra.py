"""``schema migrate`` of a layout-1 keyspace created with a time bucket, on a real Cassandra
node: history partitioned by month (``changes_by_record`` with ``bucket``, ``record_buckets``)
copied into layout 2's bucketed history and ``service_record_buckets``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from cassandra_support import cassandra_config
from multi_service_support import check_store, produce, records_of

from consumer.config import CassandraConfig
from consumer.query import AuditQuery
from consumer.records import AuditRecord, record_to_row
from consumer.sinks.cassandra import _NAMES, CassandraStore, bucket_of
from consumer.sinks.migrate import layout_1_statements, migrate
from consumer.testing import make_record
from sqla_audit.errors import ConfigurationError
from sqla_audit.events import ChangeEvent

if TYPE_CHECKING:
    from cassandra.cluster import Session

#: Months the ``ledger`` rows' histories span (one bucket each).
MONTHS = tuple(dt.datetime(2026, m, 3, 8, 0, tzinfo=dt.UTC) for m in (1, 2, 3, 4))
LEDGER_TIMES = [month + dt.timedelta(days=day) for month in MONTHS for day in (0, 9, 20)]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[ChangeEvent]:
    return produce(tmp_path_factory.mktemp("services"))


@pytest.fixture
def keyspace(cassandra_session: Session) -> Iterator[str]:
    name = f"sqla_audit_mb_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {name}")


def _ledger() -> list[AuditRecord]:
    """Two services' ``ledger`` row 9, changed three times a month for four months."""
    out = []
    for service in ("billing", "crm"):
        for n, moment in enumerate(LEDGER_TIMES):
            out.append(
                make_record(
                    table="ledger",
                    record_id="9",
                    before={"id": "9", "balance": n},
                    after={"id": "9", "balance": n + 1},
                    committed_at=moment + dt.timedelta(seconds=1 if service == "crm" else 0),
                    service=service,
                )
            )
    return out


def _write_layout_1_bucketed(session: Session, keyspace: str, records: list[AuditRecord]) -> None:
    """Rows as a layout-1 consumer with ``--time-bucket month`` wrote them."""
    session.execute(
        f"CREATE KEYSPACE {keyspace} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    for statement in layout_1_statements(keyspace, bucketed=True):
        session.execute(statement)
    names = (*_NAMES, "bucket")
    insert = session.prepare(
        f"INSERT INTO {keyspace}.changes_by_record ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )
    insert_bucket = session.prepare(
        f"INSERT INTO {keyspace}.record_buckets (table_name, record_id, bucket) VALUES (?, ?, ?)"
    )
    for record in records:
        row = record_to_row(record)
        row["event_time"] = row["event_time_us"] // 1000
        row["occurred_at"] = row["occurred_at_us"] // 1000
        bucket = bucket_of(record.event_time, "month")
        session.execute(insert, (*(row[name] for name in _NAMES), bucket))
        session.execute(insert_bucket, (record.table, record.record_id, bucket))


def _config(contact: str, keyspace: str) -> CassandraConfig:
    return cassandra_config(contact, keyspace, time_bucket="month")


def test_a_bucketed_layout_1_keyspace_is_migrated(
    events: list[ChangeEvent],
    keyspace: str,
    cassandra_contact: str,
    cassandra_session: Session,
) -> None:
    """A month-bucketed layout-1 keyspace is refused, then migrated (resuming after an
    interruption) only with the same time bucket; afterwards each service's history walks
    its month buckets newest first across pages, as_of finds the state inside an older
    bucket, the multi-service answers hold, and migrating again does nothing."""
    ledger = _ledger()
    records = [*records_of(events), *ledger]
    _write_layout_1_bucketed(cassandra_session, keyspace, records)
    config = _config(cassandra_contact, keyspace)
    with pytest.raises(ConfigurationError, match="holds audit layout 1; run `sqla-audit schema"):
        CassandraStore.connect(config)
    unbucketed = dataclasses.replace(
        config, schema=dataclasses.replace(config.schema, time_bucket="none")
    )
    with pytest.raises(ConfigurationError, match="created with a time bucket") as refused:
        migrate(unbucketed, progress=lambda _: None)
    assert "\n" not in str(refused.value)

    lines: list[str] = []

    def interrupt(line: str) -> None:
        lines.append(line)
        if line == "copied 7 records":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        migrate(config, progress=interrupt, page_size=7)
    lines.clear()
    result = migrate(config, progress=lines.append, page_size=7)
    assert lines[0] == "resuming after 7 records"
    assert (result.total, result.copied) == (len(records), len(records) - 7)
    assert "changes_by_record and record_buckets are kept" in lines[-1]

    store = CassandraStore.connect(config)
    try:
        check_store(store, events)
        query = AuditQuery(store)
        for service in ("billing", "crm"):
            own = sorted(
                (r for r in ledger if r.service == service), key=lambda r: r.sort_key, reverse=True
            )
            got = list(query.iter_history("ledger", "9", service=service, page_size=4))
            assert [r.event_id for r in got] == [r.event_id for r in own]
            buckets = cassandra_session.execute(
                f"SELECT bucket FROM {keyspace}.service_record_buckets "
                "WHERE service = %s AND table_name = 'ledger' AND record_id = '9'",
                (service,),
            )
            assert [row.bucket for row in buckets] == [202604, 202603, 202602, 202601]
            february = LEDGER_TIMES[5] + dt.timedelta(seconds=5)  # after the last February change
            state = query.as_of("ledger", "9", february, service=service)
            assert state.values == {"id": "9", "balance": 6}
        assert query.services_of("ledger", "9") == ["billing", "crm"]
    finally:
        store.close()
    again = migrate(config, progress=lines.append)
    assert again.already_done
