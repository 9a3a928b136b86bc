"""Consumer fuzzing: hostile messages mixed with valid ones, through the worker, into the
memory and SQLite stores, from the SQS double and from the outbox source.

The budget is ``SQLA_AUDIT_FUZZ_EXAMPLES`` examples per test (a few seconds by default).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from consumer_fuzz import FUZZ_EXAMPLES, DictFetcher, Sent, mixes, run_mix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.sinks.base import AuditStore
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.sources.memory import MemorySource
from consumer.sources.outbox import OutboxSource
from sqla_audit.events import utcnow
from sqla_audit.outbox import create_outbox_table, outbox_table

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _store(kind: str, directory: Path) -> AuditStore:
    if kind == "memory":
        return MemoryStore()
    return SQLiteStore(directory / f"audit-{uuid.uuid4().hex}.db")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@FUZZ
@given(data=st.data())
def test_worker_survives_hostile_messages_from_the_queue(
    kind: str, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """From the SQS double: the worker never raises or stalls, every valid message is acked
    and stored exactly once, every hostile one is rejected with a reason."""
    fetcher = DictFetcher()
    sent: list[Sent] = data.draw(mixes(fetcher))
    source = MemorySource(dlq=True)
    store = _store(kind, tmp_path_factory.mktemp("fuzz"))
    try:
        run_mix(sent, source, source.send, store, fetcher)
        assert len(source.dead_letters) == sum(not s.valid for s in sent)
        assert source.released == []
    finally:
        store.close()


@FUZZ
@given(data=st.data())
def test_worker_survives_hostile_rows_from_the_outbox(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """From the outbox source (SQLite): the same outcomes; rejected rows are parked."""
    directory = tmp_path_factory.mktemp("outbox")
    engine = sa.create_engine(f"sqlite:///{directory / 'app.db'}")
    create_outbox_table(engine)
    table = outbox_table()
    fetcher = DictFetcher()
    sent: list[Sent] = data.draw(mixes(fetcher, raw_text=False))
    source = OutboxSource(engine, poll_interval=0.01)
    store = _store("sqlite", directory)

    def send(body: str) -> str:
        message_id = str(uuid.uuid4())  # the source's message id is the row's event_id
        with engine.begin() as connection:
            connection.execute(
                table.insert(),
                {
                    "event_id": message_id,
                    "transaction_id": str(uuid.uuid4()),
                    "table_name": "fuzz",
                    "record_id": "1",
                    "payload": body,
                    "created_at": utcnow(),
                },
            )
        return message_id

    try:
        run_mix(sent, source, send, store, fetcher)
        with engine.connect() as connection:
            parked = connection.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.failed_at.is_not(None))
            ).scalar_one()
            pending = connection.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.failed_at.is_(None))
            ).scalar_one()
        assert parked == sum(not s.valid for s in sent)
        assert pending == 0
    finally:
        store.close()
        source.close()
        engine.dispose()
