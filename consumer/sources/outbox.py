"""The embedded source: the consumer reads the outbox table of the application's database.

Why. In outbox mode the change events are already durable rows of the application's own
database (:mod:`sqla_audit.outbox`), written in the same transaction as the data. On one
machine -- a small deployment, a development laptop, ``sqla-audit demo`` -- the consumer can
read those rows directly and skip SNS and SQS altogether::

    sqla-audit consume --source outbox --db sqlite:///app.db --store sqlite --store-url audit.db

Moving to SNS/SQS later is configuration only: run ``sqla-audit relay`` on the same outbox
and ``sqla-audit consume --queue-url ...`` on the queue; the events are the same bytes (a
row's ``payload`` is exactly the body the relay publishes), so the same decoder reads both.

The :class:`~consumer.sources.base.MessageSource` contract, on a table:

* ``receive`` returns pending rows (``failed_at IS NULL``) in ``id`` order, one message per
  row. The rows a call returns form a *lease*: they are not handed out again while the
  lease lasts, and the lease ends when every message of it is settled.
* ``ack`` deletes the rows -- the worker calls it only after the store wrote every record
  of the message, so a row disappears only once its audit record is durable.
* ``release`` leaves the rows pending; this source does not hand them out again for
  ``visibility`` seconds.
* ``reject`` *parks* a row (``failed_at``, ``last_error``), exactly as the relay parks rows
  SNS refused: ``sqla-audit outbox status`` counts it and ``sqla-audit outbox requeue``
  makes it pending again once the cause is fixed.
* ``extend`` has nothing to do: a lease does not time out.

Several consumers. On PostgreSQL and MySQL/MariaDB a lease is a database transaction that
selected its rows ``FOR UPDATE SKIP LOCKED`` and stays open until the lease ends (deletes
and parks run inside it, then it commits). Other consumers -- other processes, or the other
pollers of one worker -- skip locked rows, so each row goes to one consumer; a consumer that
dies holding a lease loses its connection, the transaction rolls back and the rows are
pending again (at-least-once, never lost). As with the relay, MySQL/MariaDB transactions
run at ``READ COMMITTED`` so the lease takes no gap locks that would make the
application's own outbox inserts wait. Deletes and parks address one row each by primary
key (``executemany``): on MySQL/MariaDB an ``id IN (...)`` list over a small table runs as
a scan, which waits for -- and deadlocks with -- the rows other consumers hold.

SQLite has no row locks and one writer at a time: an open transaction would block the
application's commits for the length of a batch. There a lease holds no transaction: rows
are read by one short statement, and ``ack``/``reject`` write in their own short
transactions. The pollers of one process still never share a row (the source skips the rows
its open leases hold), but two *processes* would: run one consuming process per SQLite
database. Duplicates would be harmless anyway -- store writes are idempotent by event id.

Errors. A database that cannot be reached raises :class:`~sqla_audit.errors.TransportError`
from ``receive`` (the worker backs off and retries); a failed delete or park is logged and
the row is simply delivered again later. :meth:`OutboxSource.check` tells a missing table
(:class:`~sqla_audit.errors.ConfigurationError`, with the command that creates it) from an
unreachable database.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    bindparam,
    create_engine,
    delete,
    inspect,
)
from sqlalchemy.engine import RootTransaction, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from consumer.sources.base import Message, clean_reason
from sqla_audit.errors import ConfigurationError, TransportError
from sqla_audit.events import utcnow
from sqla_audit.outbox import DEFAULT_TABLE_NAME, outbox_table
from sqla_audit.outbox.rows import (
    outbox_connection,
    park_statement,
    park_values,
    select_pending,
)

log = logging.getLogger(__name__)

#: Longest a single ``receive`` waits for rows (the worker simply polls again).
MAX_WAIT_SECONDS: Final = 1.0
#: Above this many delivery counts, those of rows no longer leased or hidden are dropped.
_MAX_TRACKED: Final = 10_000


@dataclass(slots=True)
class _Lease:
    """The rows handed out by one ``receive`` call, until each is settled."""

    lease_id: int
    #: Open connection and transaction holding the row locks (``None`` on SQLite).
    connection: Connection | None
    transaction: RootTransaction | None
    outstanding: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class OutboxSource:
    """A :class:`~consumer.sources.base.MessageSource` over the outbox table (see the module)."""

    def __init__(
        self,
        engine: Engine,
        *,
        table: Table | None = None,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        dispose_engine: bool = False,
    ) -> None:
        if poll_interval <= 0:
            raise ConfigurationError("poll_interval must be positive")
        self.engine = engine
        self.table = outbox_table() if table is None else table
        self.poll_interval = poll_interval
        self._clock = clock
        self._dispose_engine = dispose_engine
        #: True where leases keep a transaction with row locks (everything but SQLite).
        self.locks_rows = engine.dialect.name != "sqlite"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._lease_ids = itertools.count(1)
        self._leases: dict[int, _Lease] = {}
        self._hidden: dict[int, float] = {}  # row id -> monotonic time it may come back
        self._deliveries: dict[int, int] = {}  # row id -> times handed out by this source
        self.closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        poll_interval: float = 0.5,
    ) -> OutboxSource:
        """A source on the database at ``url`` (it owns, and on close disposes, the engine)."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(f"invalid database URL for the outbox: {exc}") from exc
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            raise ConfigurationError(
                "an in-memory SQLite database is private to the process that opened it; "
                "point --db at the application's database file (sqlite:///path/app.db)"
            )
        try:
            engine = create_engine(parsed)
        except (ArgumentError, ImportError, ValueError) as exc:
            raise ConfigurationError(f"cannot use database URL for the outbox: {exc}") from exc
        table = outbox_table(MetaData(), name=table_name, schema=schema)
        return cls(engine, table=table, poll_interval=poll_interval, dispose_engine=True)

    # -- checks ------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`ConfigurationError` if the outbox table is missing,
        :class:`TransportError` if the database cannot be reached."""
        try:
            with self.engine.connect() as connection:
                exists = inspect(connection).has_table(self.table.name, schema=self.table.schema)
        except SQLAlchemyError as exc:
            raise TransportError(f"cannot reach the outbox database: {exc}") from exc
        if not exists:
            url = self.engine.url.render_as_string(hide_password=True)
            raise ConfigurationError(
                f"the outbox table {self.table.fullname} does not exist in {url}; create it "
                "with `sqla-audit outbox create-table --db URL` (or your migrations)"
            )

    # -- receiving ---------------------------------------------------------------------------

    def _select(self, limit: int, excluded: set[int]) -> Any:
        c = self.table.c
        query = select_pending(
            self.table, limit, c.id, c.event_id, c.table_name, c.record_id, c.payload
        )
        if excluded:
            query = query.where(c.id.not_in(sorted(excluded)))
        return query

    def _leased_locked(self) -> set[int]:
        """Row ids of every open lease not settled yet (``self._lock`` held)."""
        return set().union(*(lease.outstanding for lease in self._leases.values()))

    def _take(self, max_messages: int) -> list[Message]:
        now = self._clock()
        with self._lock:
            leased = self._leased_locked()
            self._hidden = {row: until for row, until in self._hidden.items() if until > now}
            if len(self._deliveries) > _MAX_TRACKED:  # rows another consumer took meanwhile
                self._deliveries = {
                    row: count
                    for row, count in self._deliveries.items()
                    if row in leased or row in self._hidden
                }
            excluded = leased | set(self._hidden)
        connection: Connection | None = None
        transaction: RootTransaction | None = None
        try:
            connection = outbox_connection(self.engine)
            transaction = connection.begin()
            rows = connection.execute(self._select(max_messages, excluded)).all()
            if not rows or not self.locks_rows:
                transaction.commit()
                connection.close()
                connection = transaction = None
        except SQLAlchemyError as exc:
            if connection is not None:
                with contextlib.suppress(SQLAlchemyError):
                    connection.close()
            raise TransportError(f"reading the outbox failed: {exc}") from exc
        if not rows:
            return []
        with self._lock:
            # Two pollers of one process may have read the same rows (SQLite): the first
            # to get here keeps them.
            leased = self._leased_locked()
            rows = [row for row in rows if row.id not in leased]
            lease = _Lease(next(self._lease_ids), connection, transaction)
            lease.outstanding = {row.id for row in rows}
            if rows:
                self._leases[lease.lease_id] = lease
            messages = []
            for row in rows:
                count = self._deliveries.get(row.id, 0) + 1
                self._deliveries[row.id] = count
                messages.append(
                    Message(
                        message_id=str(row.event_id),
                        body=row.payload,
                        handle=(lease.lease_id, row.id),
                        receive_count=count,
                        attributes={
                            "outbox_id": str(row.id),
                            "table": row.table_name,
                            "record_id": row.record_id,
                        },
                    )
                )
        if not rows:
            self._end(lease, commit=False)
        return messages

    def receive(self, max_messages: int, wait: float) -> list[Message]:
        """Up to ``max_messages`` pending rows, polling every ``poll_interval``.

        Waits at most ``wait`` seconds, and never more than :data:`MAX_WAIT_SECONDS`: a poll
        is a cheap query, and a short wait lets a stopping worker exit quickly.
        """
        deadline = self._clock() + min(max(0.0, wait), MAX_WAIT_SECONDS)
        while not self.closed:
            messages = self._take(max(1, max_messages))
            remaining = deadline - self._clock()
            if messages or remaining <= 0:
                return messages
            self._wake.wait(min(self.poll_interval, remaining))
        return []

    # -- settling ----------------------------------------------------------------------------

    def _by_lease(self, messages: Sequence[Message]) -> list[tuple[_Lease, list[int]]]:
        """The messages' row ids grouped by the lease still holding them (others dropped)."""
        grouped: dict[int, tuple[_Lease, list[int]]] = {}
        with self._lock:
            for message in messages:
                handle = message.handle
                if not (isinstance(handle, tuple) and len(handle) == 2):
                    continue
                lease = self._leases.get(handle[0])
                if lease is None or handle[1] not in lease.outstanding:
                    continue  # settled already, or a stale handle: like an old SQS receipt
                grouped.setdefault(lease.lease_id, (lease, []))[1].append(handle[1])
        return list(grouped.values())

    def _write(self, lease: _Lease, statement: Any, rows: list[dict[str, Any]]) -> None:
        """Run ``statement`` once per row (executemany), in the lease's transaction or, on
        SQLite, in a short one of its own."""
        if lease.connection is not None:
            lease.connection.execute(statement, rows)
            return
        with outbox_connection(self.engine) as connection, connection.begin():
            connection.execute(statement, rows)

    def _settle(
        self, messages: Sequence[Message], what: str, statement: Any, values: dict[str, Any]
    ) -> None:
        for lease, row_ids in self._by_lease(messages):
            with lease.lock:
                if lease.lease_id not in self._leases:
                    continue  # ended meanwhile (close)
                try:
                    self._write(lease, statement, [{"row_id": row, **values} for row in row_ids])
                except (SQLAlchemyError, ValueError) as exc:  # ValueError: text the driver
                    # cannot encode; either way the lease ends so its rows are not held forever
                    log.warning(
                        "outbox %s of %d row(s) failed; they will be delivered again: %s",
                        what,
                        len(row_ids),
                        exc,
                    )
                    self._end(lease, commit=False, locked=True)
                    continue
                self._done(lease, row_ids)

    def _done(self, lease: _Lease, row_ids: Sequence[int], *, forget: bool = True) -> None:
        """Mark rows of ``lease`` settled; end the lease when none is left (lease locked)."""
        with self._lock:
            lease.outstanding.difference_update(row_ids)
            if forget:
                for row in row_ids:
                    self._deliveries.pop(row, None)
            finished = not lease.outstanding
        if finished:
            self._end(lease, commit=True, locked=True)

    def _end(self, lease: _Lease, *, commit: bool, locked: bool = False) -> None:
        """Commit (or roll back) and close the lease's transaction; free its unsettled rows."""
        with contextlib.nullcontext() if locked else lease.lock:
            if lease.connection is not None and lease.transaction is not None:
                try:
                    if commit:
                        lease.transaction.commit()
                    else:
                        lease.transaction.rollback()
                except SQLAlchemyError as exc:
                    log.warning(
                        "outbox: ending a batch failed; its rows will be delivered again: %s", exc
                    )
                finally:
                    with contextlib.suppress(SQLAlchemyError):
                        lease.connection.close()
                lease.connection = lease.transaction = None
            with self._lock:
                self._leases.pop(lease.lease_id, None)
                lease.outstanding.clear()

    def ack(self, messages: Sequence[Message]) -> None:
        """Delete the rows: their records are in the store."""
        table = self.table
        statement = delete(table).where(table.c.id == bindparam("row_id"))
        self._settle(messages, "delete", statement, {})

    def release(self, messages: Sequence[Message], visibility: int = 0) -> None:
        """Leave the rows pending; hand them out again after ``visibility`` seconds."""
        until = self._clock() + max(0, visibility)
        for lease, row_ids in self._by_lease(messages):
            with lease.lock:
                if lease.lease_id not in self._leases:
                    continue
                if visibility > 0:
                    with self._lock:
                        for row in row_ids:
                            self._hidden[row] = until
                self._done(lease, row_ids, forget=False)

    def reject(self, messages: Sequence[Message], reason: str) -> None:
        """Park the rows (``failed_at``, ``last_error``) like the relay parks refused rows.

        The reason is stored as :func:`~consumer.sources.base.clean_reason` makes it (a lone
        surrogate or a NUL would make the park itself fail on some databases)."""
        values = park_values(clean_reason(reason), utcnow())
        self._settle(messages, "park", park_statement(self.table), values)

    def extend(self, messages: Sequence[Message], seconds: int) -> None:
        """Nothing to do: a lease keeps its rows until they are settled."""

    def close(self) -> None:
        """Roll back open leases (their unsettled rows stay pending) and release the engine."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            leases = list(self._leases.values())
        self._wake.set()
        for lease in leases:
            self._end(lease, commit=False)
        if self._dispose_engine:
            self.engine.dispose()


__all__ = ["MAX_WAIT_SECONDS", "OutboxSource"]
