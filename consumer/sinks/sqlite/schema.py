"""The store's table, indexes and settings as SQL, and a record as a row of parameters."""

from __future__ import annotations

from typing import Any, Final

from consumer.records import AuditRecord, record_from_row, record_to_row, to_millis
from sqla_audit.tracing import TRACE_ID_KEY

COLUMNS: Final = (
    "event_id",
    "table_name",
    "record_id",
    "event_ms",
    "event_time_us",
    "occurred_at_us",
    "operation",
    "service",
    "transaction_id",
    "sequence",
    "actor_id",
    "actor_attributes",
    "request_id",
    "previous_record_id",
    "masked_columns",
    "changes",
    "before",
    "after",
    "metadata",
)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit_records (
    event_id TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event_ms INTEGER NOT NULL,
    event_time_us INTEGER NOT NULL,
    occurred_at_us INTEGER NOT NULL,
    operation TEXT NOT NULL,
    service TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    actor_id TEXT,
    actor_attributes TEXT NOT NULL,
    request_id TEXT,
    previous_record_id TEXT,
    masked_columns TEXT NOT NULL,
    changes TEXT NOT NULL,
    "before" TEXT,
    "after" TEXT,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_by_record
    ON audit_records (table_name, record_id, event_ms DESC, event_id DESC);
CREATE INDEX IF NOT EXISTS audit_records_by_service_record
    ON audit_records (service, table_name, record_id, event_ms DESC, event_id DESC);
CREATE TABLE IF NOT EXISTS audit_seals (
    event_id TEXT PRIMARY KEY,
    seal TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

#: The layout this version writes (``PRAGMA user_version``); 1 is the layout before
#: records were identified by service (``user_version`` 0 there).
LAYOUT_VERSION: Final = 2

#: SQL of the trace id of a row: the metadata's ``otel.trace_id`` when it is a string.
TRACE_EXPR: Final = f"json_extract(metadata, '$.\"{TRACE_ID_KEY}\"')"

#: The index each secondary view needs.
VIEW_INDEXES: Final = {
    "actor": "CREATE INDEX IF NOT EXISTS audit_records_by_actor ON audit_records "
    "(actor_id, event_ms DESC, event_id DESC) WHERE actor_id IS NOT NULL",
    "transaction": "CREATE INDEX IF NOT EXISTS audit_records_by_transaction ON audit_records "
    "(transaction_id, sequence, event_id)",
    "request": "CREATE INDEX IF NOT EXISTS audit_records_by_request ON audit_records "
    "(request_id, event_time_us, sequence, event_id) WHERE request_id IS NOT NULL",
    "trace": f"CREATE INDEX IF NOT EXISTS audit_records_by_trace ON audit_records "
    f"({TRACE_EXPR}, event_time_us, sequence, event_id)",
    "table": "CREATE INDEX IF NOT EXISTS audit_records_by_table ON audit_records "
    "(service, table_name, event_time_us, sequence, event_id)",
}

QUOTED: Final = ", ".join('"' + c + '"' for c in COLUMNS)
INSERT: Final = (
    f"INSERT OR IGNORE INTO audit_records ({QUOTED}) VALUES ({', '.join('?' for _ in COLUMNS)})"
)
SELECT: Final = f"SELECT {QUOTED} FROM audit_records"
INSERT_SEAL: Final = "INSERT OR IGNORE INTO audit_seals (event_id, seal) VALUES (?, ?)"

#: Most event ids looked up in one ``IN (...)`` (below SQLite's bound-parameter limit).
LOOKUP_CHUNK: Final = 500


def to_params(record: AuditRecord) -> tuple[Any, ...]:
    row = record_to_row(record)
    row["event_id"] = str(record.event_id)
    row["transaction_id"] = str(record.transaction_id)
    row["event_ms"] = to_millis(record.event_time)
    return tuple(row[c] for c in COLUMNS)


def from_tuple(values: tuple[Any, ...]) -> AuditRecord:
    return record_from_row(dict(zip(COLUMNS, values, strict=True)))
