"""The write path of the Cassandra store: prepared inserts, the in-flight window, digests.

For each record :meth:`CassandraWrites._statements_for` yields the prepared, idempotent
``INSERT`` statements of the tables that hold it, all bound to one values tuple: the history
table ``changes_by_service_record`` (with ``service_record_buckets`` when the keyspace has a
time bucket), the ``record_services`` lookup, then the enabled views -- by transaction, by
actor (records with an actor), by request (records with a request id), by trace (records
with an OpenTelemetry trace id) and the table timeline (its bucket and shard computed by
:mod:`~consumer.sinks.cassandra.schema`). A departure record (the row's key changed; see
:mod:`consumer.records`) goes to history and ``record_services`` only.

The statements of a record share its values: they are serialized once per record and the
same bytes are bound to every table (:mod:`~consumer.sinks.cassandra.binding`), exactly what
the driver's ``bind`` would send. Requests are sent asynchronously with at most
``max_in_flight`` outstanding across all threads (:meth:`CassandraWrites._run`, the window a
:class:`~consumer.sinks.cassandra.window.Window`). A write first reads the digests of its event ids
(``event_digests``, one single-partition read each, concurrently); a record whose digest is
stored and equal is a redelivery and is skipped, one whose digest differs is a conflict
(:class:`~consumer.sinks.errors.RecordConflict`, the stored record kept); the others are
written, and their digests only after all their rows are, so a stored digest means a
complete record and an interrupted write is simply written again. Two *concurrent*
deliveries of one event id with different content can both pass the read (a window of one
round trip); docs/cql.md describes it.

Absent values (``before`` of an insert, ``after`` of a delete, ``previous_record_id``,
``request_id``, the actor) are bound as ``UNSET_VALUE``, never ``None``: a ``None`` bound in
an ``INSERT`` writes a tombstone. This needs native protocol 4 or later.

A value the driver cannot bind (an ``int`` out of range, text that is not valid Unicode, a
partition key over 64 KiB) and Cassandra's ``InvalidRequest`` concern one record and raise
:class:`~consumer.sinks.errors.RecordRejected`; everything else is a retryable
:class:`~sqla_audit.errors.StoreError` (:mod:`~consumer.sinks.cassandra.connection`).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from consumer.records import AuditRecord, record_to_row
from consumer.sinks.cassandra.binding import Binder
from consumer.sinks.cassandra.connection import classify
from consumer.sinks.cassandra.schema import (
    COLUMN_NAMES,
    CassandraSchema,
    bucket_of,
    timeline_bucket_ms,
    timeline_shard,
)
from consumer.sinks.cassandra.window import Window
from consumer.sinks.digest import conflict, content_digest
from consumer.sinks.errors import RecordConflict, RecordRejected

log = logging.getLogger("consumer.sinks.cassandra")

_NAMES = COLUMN_NAMES


def _absent_unset(values: tuple[Any, ...], unset: Any) -> tuple[Any, ...]:
    """``values`` with every ``None`` replaced by the driver's ``UNSET_VALUE``."""
    return tuple(unset if value is None else value for value in values)


class CassandraWrites:
    """The write half of :class:`~consumer.sinks.cassandra.CassandraStore` (a mixin).

    The store sets the attributes below, then calls :meth:`_prepare_writes`.
    """

    _session: Any
    _timeout: float
    _slots: Window
    _unset: Any
    _schema: CassandraSchema
    views: frozenset[str]
    _bucket: str
    _timeline_bucket: str
    _shards: int

    def _prepare_writes(self, prepare: Callable[[str], Any]) -> None:
        """Prepare the inserts of the history, its lookups and the enabled views, and the
        digest read; every one idempotent (safe for the driver to retry)."""
        ks = self._schema.config.keyspace
        views = self.views
        record_names = (*_NAMES, "bucket") if self._schema.bucketed else _NAMES

        def insert(table: str, names: tuple[str, ...]) -> str:
            marks = ", ".join("?" for _ in names)
            return f"INSERT INTO {ks}.{table} ({', '.join(names)}) VALUES ({marks})"

        self._insert_actor = self._insert_txn = self._insert_bucket = None
        self._insert_request = self._insert_trace = self._insert_table = None
        self._insert_record = prepare(insert("changes_by_service_record", record_names))
        self._insert_service = prepare(
            insert("record_services", ("table_name", "record_id", "service"))
        )
        self._insert_seal = prepare(insert("event_seals", ("event_id", "seal")))
        self._insert_seal.is_idempotent = True
        if "actor" in views:  # the table and key of the view's bucketing (buckets.py)
            actor = self._schema.actor
            self._insert_actor = prepare(insert(actor.table, (*_NAMES, *actor.key_names)))
        if "transaction" in views:
            self._insert_txn = prepare(insert("changes_by_transaction", _NAMES))
        if "request" in views:
            self._insert_request = prepare(insert("changes_by_request", _NAMES))
        if "trace" in views:
            self._insert_trace = prepare(insert("changes_by_trace", (*_NAMES, "trace_id")))
        if "table" in views:
            self._insert_table = prepare(insert("changes_by_table", (*_NAMES, "bucket", "shard")))
        if self._schema.bucketed:
            self._insert_bucket = prepare(
                insert("service_record_buckets", ("service", "table_name", "record_id", "bucket"))
            )
        self._insert_digest = prepare(insert("event_digests", ("event_id", "digest")))
        self._digest = prepare(f"SELECT digest FROM {ks}.event_digests WHERE event_id = ?")
        whole = (  # the statements binding the record's values, then a key of their own
            self._insert_record,
            self._insert_actor,
            self._insert_txn,
            self._insert_request,
            self._insert_trace,
            self._insert_table,
        )
        statements = (*whole, self._insert_service, self._insert_bucket, self._insert_digest)
        for statement in (*statements, self._digest):
            if statement is not None:
                statement.is_idempotent = True
        self._binder = Binder(_NAMES, whole, (*statements, self._digest), self._unset)

    def _statements_for(
        self, record: AuditRecord, *, migrating: bool = False
    ) -> Iterator[tuple[Any, tuple[Any, ...]]]:
        """The statements and bound values that store ``record``.

        The record's JSON texts are rendered once (:func:`record_to_row`) and the same
        values tuple is bound to every table's statement. ``migrating`` leaves out the
        tables a layout-1 keyspace already has (by actor, by transaction).
        """
        row = record_to_row(record)
        row["event_time"] = row["event_time_us"] // 1000  # == to_millis(record.event_time)
        row["occurred_at"] = row["occurred_at_us"] // 1000
        # absent values stay unset: a bound None would write a tombstone
        values = _absent_unset(tuple(map(row.__getitem__, _NAMES)), self._unset)
        key = (record.service, record.table, record.record_id)
        if self._insert_bucket is not None:
            bucket = bucket_of(record.event_time, self._bucket)
            yield self._insert_record, (*values, bucket)
            yield self._insert_bucket, (*key, bucket)
        else:
            yield self._insert_record, values
        yield self._insert_service, (record.table, record.record_id, record.service)
        if record.seal is not None:  # a signed event's signature (departures have none)
            yield self._insert_seal, (record.event_id, record.seal.to_json())
        if record.is_departure:
            return  # the companion tables keep the real event only (it names the old id)
        if not migrating:
            if self._insert_txn is not None:
                yield self._insert_txn, values
            if self._insert_actor is not None and record.actor_id is not None:
                yield self._insert_actor, (*values, *self._schema.actor.key(record))
        if self._insert_request is not None and record.request_id:
            yield self._insert_request, values
        if self._insert_trace is not None and record.trace_id is not None:
            yield self._insert_trace, (*values, record.trace_id)
        if self._insert_table is not None:
            bucket_ms = timeline_bucket_ms(row["event_time"], self._timeline_bucket)
            shard = timeline_shard(record.record_id, self._shards)
            yield self._insert_table, (*values, bucket_ms, shard)

    def copy(self, records: Iterable[AuditRecord]) -> None:
        """Write layout-1 records into this layout's tables (``schema migrate``): history,
        its lookups and the request, trace and table views; not the by-actor and
        by-transaction tables, which both layouts share, nor the digests, already there."""
        self._run(
            (record, statement, params)
            for record in records
            for statement, params in self._statements_for(record, migrating=True)
        )

    def copy_actor(self, records: Iterable[AuditRecord]) -> None:
        """Write ``records`` into the by-actor view only (``schema migrate`` rebuilding the
        view under another bucketing); records without an actor are skipped."""
        actor = self._insert_actor
        self._run(
            (record, statement, params)
            for record in records
            if actor is not None
            for statement, params in self._statements_for(record)
            if statement is actor
        )

    def _settle(self, future: Any, errors: list[BaseException]) -> Any:
        """Wait for one sent request, give its in-flight slot back; its result or None."""
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - any driver error; classified by the caller
            errors.append(exc)
            return None
        finally:
            self._slots.release()

    def _bind(
        self, record: AuditRecord, statement: Any, params: tuple[Any, ...], memo: list[Any]
    ) -> Any:
        """The bound statement (:class:`~consumer.sinks.cassandra.binding.Binder`: the
        record's values serialized once for all its tables, ``memo`` keeping them); a value
        the driver refuses is that record's problem."""
        try:
            bound = self._binder.bind(statement, params, memo)
            _ = bound.routing_key  # computed now: a key component over 64 KiB fails here
        except Exception as exc:  # the driver raises TypeError, ValueError, struct.error...
            raise RecordRejected(
                f"Cassandra cannot bind record {record.event_id}: {type(exc).__name__}: {exc}"
            ) from exc
        return bound

    def _run(
        self, requests: Iterable[tuple[AuditRecord, Any, tuple[Any, ...] | None]]
    ) -> list[Any]:
        """Send every request (at most ``max_in_flight`` in flight across all threads), wait
        for all of them, then raise the worst failure: a retryable one if any (the store is
        failing), else the first refused record. Returns the results in order. A request
        without parameters is a statement bound already (the P2 benchmark's raw limit sends
        pre-bound requests through this very loop).

        A slot is taken before each request and given back by the sending thread when it
        collects the result -- no callback per request on the driver's event loop, whose
        thread would otherwise compete with the pollers for the GIL. A thread that finds
        the window full settles its own oldest request first, so a run larger than the
        window never waits for slots only it could free.
        """
        slots = self._slots
        pending: deque[tuple[int, Any]] = deque()
        results: list[Any] = []
        errors: list[BaseException] = []
        send_error: BaseException | None = None
        memo: list[Any] = []  # the last record's shared values, serialized

        def settle_oldest() -> None:
            index, future = pending.popleft()
            results[index] = self._settle(future, errors)

        try:
            for record, statement, params in requests:
                try:
                    bound = (
                        statement if params is None else self._bind(record, statement, params, memo)
                    )
                except RecordRejected as exc:
                    send_error = exc
                    break
                while not slots.acquire(blocking=False):
                    if not pending:
                        slots.acquire()
                        break
                    settle_oldest()
                try:
                    future = self._session.execute_async(bound, timeout=self._timeout)
                except Exception as exc:  # noqa: BLE001 - any driver error; classified below
                    slots.release()
                    send_error = exc
                    break
                results.append(None)
                pending.append((len(results) - 1, future))
            while pending:  # wait for everything sent, even after a failure
                settle_oldest()
        except BaseException:
            for _ in pending:  # interrupted: never leak the slots of requests still out
                slots.release()
            raise
        failures = [(exc, classify(exc)) for exc in (send_error, *errors) if exc is not None]
        if failures:
            outages = [pair for pair in failures if not isinstance(pair[1], RecordRejected)]
            original, worst = outages[0] if outages else failures[0]
            if worst is original:
                raise worst
            raise worst from original
        return results

    def _stored_digests(self, records: list[AuditRecord]) -> dict[uuid.UUID, bytes]:
        """The stored content digest of each of ``records`` that has one."""
        results = self._run((record, self._digest, (record.event_id,)) for record in records)
        found: dict[uuid.UUID, bytes] = {}
        for record, result in zip(records, results, strict=True):
            row = result.one() if result is not None else None
            if row is not None and row["digest"] is not None:
                found[record.event_id] = bytes(row["digest"])
        return found

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Write the new records, skip redeliveries, refuse conflicts (see the module
        docstring); the digests of the written records go last."""
        unique: dict[uuid.UUID, tuple[AuditRecord, bytes]] = {}
        first: RecordConflict | None = None
        for record in records:
            digest = content_digest(record)  # RecordRejected: a record no store can hold
            seen = unique.get(record.event_id)
            if seen is None:
                unique[record.event_id] = (record, digest)
            elif seen[1] != digest:
                first = first or conflict(record, log)
        if not unique:
            if first is not None:
                raise first
            return
        stored = self._stored_digests([record for record, _ in unique.values()])
        fresh: list[tuple[AuditRecord, bytes]] = []
        for event_id, (record, digest) in unique.items():
            known = stored.get(event_id)
            if known is None:
                fresh.append((record, digest))
            elif known != digest:
                first = first or conflict(record, log)
        self._run(
            (record, statement, params)
            for record, _ in fresh
            for statement, params in self._statements_for(record)
        )
        self._run(
            (record, self._insert_digest, (record.event_id, digest)) for record, digest in fresh
        )
        if first is not None:
            raise first


__all__ = ["CassandraWrites"]
