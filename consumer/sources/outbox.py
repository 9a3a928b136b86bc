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

* ``receive`` takes up to ``max_messages`` pending rows (``failed_at IS NULL``) in ``id``
  order and returns one message per *event*: a row of layout 2 holds the events of one
  transaction, so a call may return more messages than ``max_messages`` (every event of
  the rows it took; a row is never split between two calls). Each body is the event's text
  as the producer wrote it. The rows a call takes form a *lease*: they are not handed out
  again while the lease lasts, and the lease ends when every message of it is settled.
* ``ack`` marks events stored; a row is deleted once all its events are -- the worker acks
  only after the store wrote every record of the message, so a row disappears only once
  the audit records of all its events are durable.
* ``release`` leaves the events pending; their row is not handed out again for
  ``visibility`` seconds, and keeps only the events not stored or parked yet.
* ``reject`` *parks* an event, exactly as the relay parks events SNS refused: a one-event
  row in place (``failed_at``, ``last_error``), an event of a several-event row in a parked
  row of its own, so its neighbours are stored and leave. ``sqla-audit outbox status``
  counts it and ``sqla-audit outbox requeue`` makes it pending again once the cause is
  fixed. A row whose payload cannot be cut into events is handed out whole, as one message
  the decoder refuses, and parked whole.
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
import datetime as dt
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Engine, MetaData, Row, Table, create_engine, inspect
from sqlalchemy.engine import RootTransaction, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from consumer.sources.base import Message, clean_reason
from sqla_audit.errors import ConfigurationError, DecodeError, TransportError
from sqla_audit.events import utcnow
from sqla_audit.outbox import DEFAULT_TABLE_NAME, outbox_table
from sqla_audit.outbox.payloads import event_field
from sqla_audit.outbox.rows import outbox_connection, select_pending
from sqla_audit.outbox.settle import (
    HeldRow,
    RowOutcome,
    Settlement,
    apply_settlement,
    held_columns,
    hold,
    plan_settlement,
)
from sqla_audit.outbox.table import LAYOUT_EVENT

log = logging.getLogger(__name__)

#: Longest a single ``receive`` waits for rows (the worker simply polls again).
MAX_WAIT_SECONDS: Final = 1.0
#: Above this many delivery counts, those of rows no longer leased or hidden are dropped.
_MAX_TRACKED: Final = 10_000


def _held(row: Row[Any]) -> HeldRow:
    """The row cut into its events; a row that cannot be cut is handed out whole, as one
    message (the decoder says what is wrong with it, and rejecting it parks the row)."""
    try:
        return hold(row)
    except DecodeError:
        return HeldRow(
            id=row.id,
            event_id=row.event_id,
            transaction_id=row.transaction_id,
            table_name=row.table_name,
            record_id=row.record_id,
            created_at=row.created_at,
            texts=[row.payload],
            values=[None],
        )


@dataclass(slots=True)
class _Lease:
    """The rows handed out by one ``receive`` call, until each is settled."""

    lease_id: int
    #: Open connection and transaction holding the row locks (``None`` on SQLite).
    connection: Connection | None
    transaction: RootTransaction | None
    #: row ids not settled yet
    outstanding: set[int] = field(default_factory=set)
    #: row id -> the fate of its events so far
    outcomes: dict[int, RowOutcome] = field(default_factory=dict)
    #: row id -> indexes of its events not settled yet
    unsettled: dict[int, set[int]] = field(default_factory=dict)
    #: row ids with an event released (the row comes back, maybe hidden)
    released: set[int] = field(default_factory=set)
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
        query = select_pending(self.table, limit, *held_columns(self.table))
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
                held = _held(row)
                lease.outcomes[row.id] = RowOutcome(held)
                lease.unsettled[row.id] = set(range(len(held.texts)))
                one_event = getattr(row, "layout", LAYOUT_EVENT) in (None, LAYOUT_EVENT)
                for index, (text, value) in enumerate(zip(held.texts, held.values, strict=True)):
                    # A layout-1 row's message id is its event_id column, as it always was
                    # (two rows holding one event each stay two messages, whatever they hold);
                    # an event of a transaction row is named by its own event id.
                    message_id = (
                        row.event_id
                        if one_event
                        else event_field(value, "event_id") or f"{row.event_id}#{index}"
                    )
                    messages.append(
                        Message(
                            message_id=message_id,
                            body=text,
                            handle=(lease.lease_id, row.id, index),
                            receive_count=count,
                            attributes={
                                "outbox_id": str(row.id),
                                "table": event_field(value, "table") or row.table_name,
                                "record_id": event_field(value, "record_id") or row.record_id,
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

    def _by_lease(self, messages: Sequence[Message]) -> list[tuple[_Lease, list[tuple[int, int]]]]:
        """The messages' (row id, index) grouped by the lease still holding them (others,
        already settled or foreign, dropped)."""
        grouped: dict[int, tuple[_Lease, list[tuple[int, int]]]] = {}
        with self._lock:
            for message in messages:
                handle = message.handle
                if not (isinstance(handle, tuple) and len(handle) == 3):
                    continue
                lease = self._leases.get(handle[0])
                if lease is None or handle[2] not in lease.unsettled.get(handle[1], ()):
                    continue  # settled already, or a stale handle: like an old SQS receipt
                grouped.setdefault(lease.lease_id, (lease, []))[1].append((handle[1], handle[2]))
        return list(grouped.values())

    def _apply(self, lease: _Lease, plan: Settlement, now: dt.datetime) -> None:
        """Run ``plan`` in the lease's transaction or, on SQLite, in a short one of its own."""
        if lease.connection is not None:
            apply_settlement(lease.connection, self.table, plan, now)
            return
        with outbox_connection(self.engine) as connection, connection.begin():
            apply_settlement(connection, self.table, plan, now)

    def _settle(
        self,
        messages: Sequence[Message],
        what: str,
        mark: Callable[[_Lease, int, int], None],
    ) -> None:
        """Mark each message's event (``mark``); write back the rows whose events are all
        settled now (delete, park, split: :mod:`sqla_audit.outbox.settle`)."""
        for lease, events in self._by_lease(messages):
            with lease.lock:
                if lease.lease_id not in self._leases:
                    continue  # ended meanwhile (close)
                finished: list[int] = []
                with self._lock:
                    for row_id, index in events:
                        unsettled = lease.unsettled.get(row_id)
                        if unsettled is None or index not in unsettled:
                            continue
                        mark(lease, row_id, index)
                        unsettled.discard(index)
                        if not unsettled:
                            finished.append(row_id)
                if not finished:
                    continue
                now = utcnow()
                plan = plan_settlement((lease.outcomes[row] for row in finished), now)
                try:
                    self._apply(lease, plan, now)
                except (SQLAlchemyError, ValueError) as exc:  # ValueError: text the driver
                    # cannot encode; either way the lease ends so its rows are not held forever
                    log.warning(
                        "outbox %s of %d row(s) failed; they will be delivered again: %s",
                        what,
                        len(finished),
                        exc,
                    )
                    self._end(lease, commit=False, locked=True)
                    continue
                self._done(lease, finished)

    def _done(self, lease: _Lease, row_ids: Sequence[int]) -> None:
        """Mark rows of ``lease`` settled; end the lease when none is left (lease locked)."""
        with self._lock:
            lease.outstanding.difference_update(row_ids)
            for row in row_ids:
                if row not in lease.released:
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
                lease.unsettled.clear()

    def ack(self, messages: Sequence[Message]) -> None:
        """The events are in the store: a row is deleted once all its events are."""

        def done(lease: _Lease, row_id: int, index: int) -> None:
            lease.outcomes[row_id].done.add(index)

        self._settle(messages, "delete", done)

    def release(self, messages: Sequence[Message], visibility: int = 0) -> None:
        """Leave the events pending; their rows come back after ``visibility`` seconds (a
        row keeps only its events not stored or parked yet)."""
        until = self._clock() + max(0, visibility)

        def left(lease: _Lease, row_id: int, index: int) -> None:
            lease.released.add(row_id)
            if visibility > 0:
                self._hidden[row_id] = until

        self._settle(messages, "release", left)

    def reject(self, messages: Sequence[Message], reason: str) -> None:
        """Park the events like the relay parks refused ones: a one-event row in place
        (``failed_at``, ``last_error``), an event of a several-event row in a row of its own.

        The reason is stored as :func:`~consumer.sources.base.clean_reason` makes it (a lone
        surrogate or a NUL would make the park itself fail on some databases)."""
        cleaned = clean_reason(reason)

        def refused(lease: _Lease, row_id: int, index: int) -> None:
            lease.outcomes[row_id].refused[index] = cleaned

        self._settle(messages, "park", refused)

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
