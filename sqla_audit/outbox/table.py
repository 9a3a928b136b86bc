"""The outbox table: where outbox mode stores change events inside the application's database.

Exposed as SQLAlchemy :class:`~sqlalchemy.Table` metadata so it can join the application's own
``MetaData`` and be created by its Alembic migrations (``outbox_table(Base.metadata)``), or be
created standalone with ``sqla-audit outbox create-table --db URL``.

Columns (one row per transaction, or per change event in layout 1):

==================  ======================  ===================================================
column              type                    meaning
==================  ======================  ===================================================
``id``              BIGINT, autoincrement   publication order: rows are relayed by ascending id
``event_id``        VARCHAR(36)             the (first) event's time-ordered UUID
``transaction_id``  VARCHAR(36)             shared by the events of one commit
``table_name``      VARCHAR(255)            the (first) event's table (schema-qualified)
``record_id``       TEXT                    the (first) event's canonical record id
``payload``         TEXT / LONGTEXT         layout 1: the event's JSON, exactly the SNS body;
                                            layout 2: a JSON array of the events' JSON texts
``created_at``      TIMESTAMP (UTC)         when the row was written (in the transaction)
``failed_at``       TIMESTAMP (UTC), null   set when SNS refused the event for good
``last_error``      TEXT, null              why it was refused
``layout``          SMALLINT, default 1     1: one event per row; 2: an array of events
``event_count``     INTEGER, default 1      how many events the row holds
==================  ======================  ===================================================

Layout 2 (:data:`LAYOUT_BATCH`, written by default) holds the events of one transaction --
or of one chunk of a large one -- in one row: ``[e1,e2,...]`` where each ``eN`` is the
event's wire text byte for byte, in ``sequence`` order. Layout 1 (:data:`LAYOUT_EVENT`) is
the original one-row-per-event layout; rows written by an older producer have it (the
columns' server defaults), and readers handle both. A parked row always holds one event
(readers split a row when one of its events is refused), except a layout-2 row whose array
cannot be read at all.

A row with ``failed_at`` set is *parked*: relays skip it, an operator reads ``last_error``
and requeues it (``sqla-audit outbox requeue --db URL``) once the cause is fixed. Rows are
deleted as soon as SNS accepted them, so the table stays small in normal operation.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
)
from sqlalchemy.dialects import mysql

#: Default name of the outbox table.
DEFAULT_TABLE_NAME: Final = "sqla_audit_outbox"

#: ``layout`` of a row holding one event: ``payload`` is that event's JSON (the original
#: layout; the column's default, so rows of older producers have it).
LAYOUT_EVENT: Final = 1
#: ``layout`` of a row holding a JSON array of ``event_count`` events' JSON texts.
LAYOUT_BATCH: Final = 2


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps the zone (``timestamptz``); MySQL/MariaDB and SQLite have no zone, so
    values are stored as naive UTC and come back marked UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("outbox timestamps must be timezone-aware")
        value = value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


#: PostgreSQL: keep ``payload`` out of line *uncompressed*. A layout-2 payload (tens to
#: hundreds of KB) is above the TOAST threshold, and compressing it with the default pglz
#: cost more than the INSERT itself (measured: 160 KB, 16.6 ms with pglz, 6.9 ms without --
#: lz4 is as quick). Rows live for seconds, so the space does not matter. Run by
#: ``create_outbox_table`` / ``sqla-audit outbox create-table``; with Alembic, add it to the
#: migration (``op.execute``).
PAYLOAD_STORAGE_DDL: Final = DDL(  # type: ignore[no-untyped-call]
    "ALTER TABLE %(fullname)s ALTER COLUMN payload SET STORAGE EXTERNAL"
)


def outbox_table(
    metadata: MetaData | None = None,
    name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> Table:
    """The outbox :class:`~sqlalchemy.Table`, added to ``metadata`` (a new one by default).

    Calling it again with the same metadata, name and schema returns the same table.
    """
    metadata = MetaData() if metadata is None else metadata
    key = f"{schema}.{name}" if schema else name
    existing = metadata.tables.get(key)
    if existing is not None:
        return existing
    table = Table(
        name,
        metadata,
        Column(
            "id",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("event_id", String(36), nullable=False),
        Column("transaction_id", String(36), nullable=False),
        Column("table_name", String(255), nullable=False),
        Column("record_id", Text(), nullable=False),
        Column(
            "payload", Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False
        ),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("failed_at", UTCDateTime(), nullable=True),
        Column("last_error", Text(), nullable=True),
        Column("layout", SmallInteger(), nullable=False, server_default=str(LAYOUT_EVENT)),
        Column("event_count", Integer(), nullable=False, server_default="1"),
        schema=schema,
        comment="sqla-audit outbox: change events waiting to be relayed to SNS",
    )
    event.listen(table, "after_create", PAYLOAD_STORAGE_DDL.execute_if(dialect="postgresql"))
    return table


__all__ = [
    "DEFAULT_TABLE_NAME",
    "LAYOUT_BATCH",
    "LAYOUT_EVENT",
    "PAYLOAD_STORAGE_DDL",
    "UTCDateTime",
    "outbox_table",
]
