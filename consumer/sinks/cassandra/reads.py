"""The read path of the Cassandra store: history, its buckets, the views, the timeline.

Every read is one prepared ``SELECT`` per partition, bounded on the clustering columns and
fetched lazily a page (``limit + 1`` rows) at a time; the shared pagination of
:mod:`consumer.sinks.paging` then applies the exact microsecond window and the page cursor.

* history reads ``changes_by_service_record`` by ``(service, table_name, record_id)``,
  newest first; a keyspace with a time bucket first lists the record's buckets in
  ``service_record_buckets`` (newest first) and reads one partition per bucket;
* ``services_of`` reads the ``record_services`` lookup;
* by actor walks the by-actor view's buckets of the window (a UTC day by default; the
  keyspace's bucketing, :mod:`~consumer.sinks.cassandra.buckets`), newest first, merging a
  bucket's shards newest first; by transaction reads one ``changes_by_transaction`` partition;
* by request and by trace read one partition of ``changes_by_request``/``changes_by_trace``
  in commit order, the page cursor being a clustering bound;
* the table timeline fans out over the hour (or minute, day) buckets of the window in the
  read's order, and within each bucket merges the shards' partitions by commit order.

A view the keyspace does not keep raises :class:`~consumer.sinks.errors.ViewDisabled`; a
failing read raises a retryable :class:`~sqla_audit.errors.StoreError`.
"""

from __future__ import annotations

import datetime as dt
import heapq
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from consumer.records import AuditRecord, record_from_row, to_micros, to_millis
from consumer.seal import Seal
from consumer.sinks.cassandra.connection import READ_ATTEMPTS, READ_RETRY_DELAY, store_error
from consumer.sinks.cassandra.schema import (
    COMMIT_ORDER,
    MAX_TIMELINE_BUCKETS,
    TIMELINE_BUCKET_MS,
    CassandraSchema,
    bucket_of,
    timeline_bucket_ms,
)
from consumer.sinks.errors import InvalidQuery, ViewDisabled
from consumer.sinks.paging import (
    OrderedWindow,
    Page,
    Window,
    commit_key,
    paginate,
    paginate_ordered,
)
from sqla_audit.errors import DecodeError
from sqla_audit.wire_limits import MAX_IDENTIFIER_CHARS

_MIN_UUID: Final = uuid.UUID(int=0)
_MAX_UUID: Final = uuid.UUID(int=(1 << 128) - 1)
#: Lower bound used when a read has no ``since`` (Cassandra timestamps are signed ms).
_MIN_MS: Final = -(2**62)
_MAX_MS: Final = 2**62
_MIN_BIGINT: Final = -(2**63)
_MAX_BIGINT: Final = 2**63 - 1
_MIN_INT: Final = -(2**31)
_MAX_INT: Final = 2**31 - 1


def _value(row: Any, name: str) -> Any:
    """A column of a driver row, whichever row factory the session uses."""
    return row[name] if isinstance(row, dict) else getattr(row, name)


def _sort_key(record: AuditRecord) -> tuple[int, uuid.UUID]:
    return record.sort_key


def _from_ms(millis: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis)


class CassandraReads:
    """The read half of :class:`~consumer.sinks.cassandra.CassandraStore` (a mixin).

    The store sets the attributes below, then calls :meth:`_prepare_reads`.
    """

    _session: Any
    _timeout: float
    _schema: CassandraSchema
    views: frozenset[str]
    _bucket: str
    _timeline_bucket: str
    _shards: int

    def _prepare_reads(self, prepare: Callable[[str], Any]) -> None:
        """Prepare the history reads, the lookups and the reads of the enabled views."""
        ks = self._schema.config.keyspace
        views = self.views
        partition = "service = ? AND table_name = ? AND record_id = ?" + (
            " AND bucket = ?" if self._schema.bucketed else ""
        )
        lower = "(event_time, event_id) >= (?, ?)"
        order = f"({', '.join(COMMIT_ORDER)})"
        ordered_slice = f"{order} >= (?, ?, ?, ?) AND {order} <= (?, ?, ?, ?)"
        descending = ", ".join(f"{column} DESC" for column in COMMIT_ORDER)
        self._actor: dict[bool, Any] = {}
        self._txn = self._buckets = self._request = self._trace = None
        self._table: dict[bool, Any] = {}
        self._history = {
            inclusive: prepare(
                f"SELECT * FROM {ks}.changes_by_service_record WHERE {partition} AND "
                f"{lower} AND (event_time, event_id) {'<=' if inclusive else '<'} (?, ?)"
            )
            for inclusive in (True, False)
        }
        self._services = prepare(
            f"SELECT service FROM {ks}.record_services WHERE table_name = ? AND record_id = ?"
        )
        if "actor" in views:
            actor = self._schema.actor
            actor_key = " AND ".join(f"{name} = ?" for name in ("actor_id", *actor.key_names))
            self._actor = {
                inclusive: prepare(
                    f"SELECT * FROM {ks}.{actor.table} WHERE {actor_key} "
                    f"AND {lower} AND (event_time, event_id) "
                    f"{'<=' if inclusive else '<'} (?, ?)"
                )
                for inclusive in (True, False)
            }
        if "transaction" in views:
            self._txn = prepare(
                f"SELECT * FROM {ks}.changes_by_transaction WHERE transaction_id = ?"
            )
        if "request" in views:
            self._request = prepare(
                f"SELECT * FROM {ks}.changes_by_request WHERE request_id = ? AND {ordered_slice}"
            )
        if "trace" in views:
            self._trace = prepare(
                f"SELECT * FROM {ks}.changes_by_trace WHERE trace_id = ? AND {ordered_slice}"
            )
        if "table" in views:
            self._table = {
                newest: prepare(
                    f"SELECT * FROM {ks}.changes_by_table WHERE service = ? AND "
                    f"table_name = ? AND bucket = ? AND shard = ? AND {ordered_slice}"
                    + (f" ORDER BY {descending}" if newest else "")
                )
                for newest in (True, False)
            }
        if self._schema.bucketed:
            self._buckets = prepare(
                f"SELECT bucket FROM {ks}.service_record_buckets WHERE service = ? AND "
                "table_name = ? AND record_id = ? AND bucket >= ? AND bucket <= ?"
            )

    def _execute(self, statement: Any, params: tuple[Any, ...], fetch_size: int) -> Any:
        bound = statement.bind(params)
        bound.fetch_size = fetch_size
        bound.is_idempotent = True  # may be sent to a second replica (connection.py)
        from cassandra import ReadFailure  # noqa: PLC0415 -- loaded with the driver

        for _ in range(READ_ATTEMPTS - 1):  # a replica's failure is worth asking again
            try:
                return self._session.execute(bound, timeout=self._timeout)
            except ReadFailure:
                time.sleep(READ_RETRY_DELAY)
            except Exception as exc:
                raise store_error("Cassandra read failed", exc) from exc
        try:
            return self._session.execute(bound, timeout=self._timeout)
        except Exception as exc:
            raise store_error("Cassandra read failed", exc) from exc

    def _rows(self, statement: Any, params: tuple[Any, ...], fetch_size: int) -> Iterator[Any]:
        result = self._execute(statement, params, fetch_size)
        iterator = iter(result)
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # fetching a later page failed
                raise store_error("Cassandra read failed", exc) from exc
            yield row

    def _records(
        self, statement: Any, params: tuple[Any, ...], fetch_size: int
    ) -> Iterator[AuditRecord]:
        for row in self._rows(statement, params, fetch_size):
            yield record_from_row(row)

    @staticmethod
    def _bounds(window: Window) -> tuple[bool, tuple[Any, ...]]:
        """(upper bound inclusive?, the four clustering bound values)."""
        low = (window.min_ms if window.min_ms is not None else _MIN_MS, _MIN_UUID)
        until_ms = window.until_us // 1000 if window.until_us is not None else _MAX_MS
        cursor = window.cursor
        if cursor is not None and cursor.millis <= until_ms:
            return False, (*low, cursor.millis, cursor.event_id)
        return True, (*low, until_ms, _MAX_UUID)

    def _fetch(self, window: Window) -> int:
        return window.limit + 1

    def _require(self, view: str) -> None:
        if view not in self.views:
            raise ViewDisabled(view)

    def _history_candidates(
        self, key: tuple[str, str, str], window: Window
    ) -> Iterator[AuditRecord]:
        inclusive, bounds = self._bounds(window)
        statement = self._history[inclusive]
        if self._buckets is None:
            for row in self._rows(statement, (*key, *bounds), self._fetch(window)):
                yield record_from_row(row)
            return
        low_ms, high_ms = bounds[0], bounds[2]
        low_bucket = 0 if low_ms == _MIN_MS else bucket_of(_from_ms(low_ms), self._bucket)
        high_bucket = _MAX_INT if high_ms == _MAX_MS else bucket_of(_from_ms(high_ms), self._bucket)
        buckets = [
            row["bucket"]
            for row in self._rows(self._buckets, (*key, low_bucket, high_bucket), 1000)
        ]
        for bucket in buckets:
            for row in self._rows(statement, (*key, bucket, *bounds), self._fetch(window)):
                yield record_from_row(row)

    def history(
        self,
        service: str,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        window = Window.build(since, until, limit, page)
        return paginate(self._history_candidates((service, table, record_id), window), window)

    def services_of(self, table: str, record_id: str) -> list[str]:
        return sorted(
            row["service"] for row in self._rows(self._services, (table, record_id), 1000)
        )

    def _actor_candidates(
        self, actor_id: str, window: Window, until: dt.datetime | None
    ) -> Iterator[AuditRecord]:
        inclusive, bounds = self._bounds(window)
        statement = self._actor[inclusive]
        # No ``until``: look one day ahead of now to tolerate producers' clock skew.
        last = until or (dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        if window.cursor is not None:
            last = min(last, _from_ms(window.cursor.millis))
        low_ms = window.min_ms if window.min_ms is not None else 0
        fetch = self._fetch(window)
        for shards in self._schema.actor.partitions(low_ms, to_millis(last)):
            parts = [self._records(statement, (actor_id, *key, *bounds), fetch) for key in shards]
            if len(parts) == 1:
                yield from parts[0]
            else:  # every shard newest first: merged, newest first
                yield from heapq.merge(*parts, key=_sort_key, reverse=True)

    def by_actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        limit: int = 100,
        page: str | None = None,
        service: str | None = None,
    ) -> Page[AuditRecord]:
        self._require("actor")
        window = Window.build(since, until, limit, page)
        found = self._actor_candidates(actor_id, window, until)
        if service is not None:
            found = (record for record in found if record.service == service)
        return paginate(found, window)

    def seals(self, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Seal]:
        """The seals of the signed records among ``event_ids`` (see :mod:`consumer.verify`):
        one single-partition read of ``event_seals`` each, up to 64 at a time."""
        statement = getattr(self, "_seal_read", None)
        if statement is None:
            ks = self._schema.config.keyspace
            try:
                statement = self._session.prepare(
                    f"SELECT seal FROM {ks}.event_seals WHERE event_id = ?"
                )
            except Exception as exc:
                raise store_error(
                    "cannot read event_seals (run `sqla-audit schema apply`)", exc
                ) from exc
            self._seal_read = statement
        unique = list(dict.fromkeys(event_ids))
        found: dict[uuid.UUID, Seal] = {}
        try:
            for start in range(0, len(unique), 64):
                chunk = unique[start : start + 64]
                futures = [
                    self._session.execute_async(statement, (event_id,), timeout=self._timeout)
                    for event_id in chunk
                ]
                for event_id, future in zip(chunk, futures, strict=True):
                    row = future.result().one()
                    text = None if row is None else _value(row, "seal")
                    seal = Seal.from_json(text)
                    if seal is not None:
                        found[event_id] = seal
        except DecodeError:
            raise
        except Exception as exc:
            raise store_error("reading seals failed", exc) from exc
        return found

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        self._require("transaction")
        return [record_from_row(row) for row in self._rows(self._txn, (transaction_id,), 1000)]

    @staticmethod
    def _ordered_bounds(window: OrderedWindow) -> tuple[Any, ...]:
        """The eight clustering bounds (low inclusive, high inclusive) of an ordered read.

        The cursor is a bound itself (inclusive: :func:`paginate_ordered` drops the row it
        names), so a page after a long run of ties starts where the last one ended.
        """
        low: tuple[Any, ...] = (_MIN_MS, _MIN_BIGINT, _MIN_INT, _MIN_UUID)
        high: tuple[Any, ...] = (_MAX_MS, _MAX_BIGINT, _MAX_INT, _MAX_UUID)
        if window.since_us is not None:
            low = (window.since_us // 1000, window.since_us, _MIN_INT, _MIN_UUID)
        if window.until_us is not None:
            high = (window.until_us // 1000, window.until_us, _MAX_INT, _MAX_UUID)
        cursor = window.cursor
        if cursor is not None:
            at = (cursor.micros // 1000, cursor.micros, cursor.sequence, cursor.event_id)
            if window.newest_first:
                high = min(high, at, key=lambda bound: bound[1:])
            else:
                low = max(low, at, key=lambda bound: bound[1:])
        return (*low, *high)

    def _ordered_rows(
        self, statement: Any, partition: tuple[Any, ...], window: OrderedWindow
    ) -> Iterator[AuditRecord]:
        params = (*partition, *self._ordered_bounds(window))
        for row in self._rows(statement, params, window.limit + 1):
            yield record_from_row(row)

    def by_request(
        self, request_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("request")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        if not request_id:
            return Page([], None)
        return paginate_ordered(self._ordered_rows(self._request, (request_id,), window), window)

    def by_trace(
        self, trace_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("trace")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        if not trace_id or len(trace_id) > MAX_IDENTIFIER_CHARS:
            return Page([], None)  # the trace view indexes no such id
        return paginate_ordered(self._ordered_rows(self._trace, (trace_id,), window), window)

    def _timeline_buckets(self, window: OrderedWindow) -> list[int]:
        """The timeline buckets (start ms) a window spans, in the read's order."""
        size = TIMELINE_BUCKET_MS[self._timeline_bucket]
        assert window.low_us is not None  # by_table requires since
        high_us = window.high_us
        if high_us is None:  # no until: one day ahead of now, for producers' clock skew
            high_us = to_micros(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        first = timeline_bucket_ms(window.low_us // 1000, self._timeline_bucket)
        last = timeline_bucket_ms(high_us // 1000, self._timeline_bucket)
        count = (last - first) // size + 1
        if count > MAX_TIMELINE_BUCKETS:
            raise InvalidQuery(
                f"the window spans {count} {self._timeline_bucket} buckets of the table "
                f"timeline (at most {MAX_TIMELINE_BUCKETS}): narrow since/until"
            )
        buckets = list(range(first, last + 1, size)) if count > 0 else []
        return buckets[::-1] if window.newest_first else buckets

    def _timeline(self, service: str, table: str, window: OrderedWindow) -> Iterator[AuditRecord]:
        """The table's records in the window's order: bucket after bucket, each bucket's
        shards merged by commit order. Each partition is read lazily, a page at a time."""
        statement = self._table[window.newest_first]
        for bucket in self._timeline_buckets(window):
            shards = [
                self._ordered_rows(statement, (service, table, bucket, shard), window)
                for shard in range(self._shards)
            ]
            if len(shards) == 1:
                yield from shards[0]
            else:
                yield from heapq.merge(*shards, key=commit_key, reverse=window.newest_first)

    def by_table(
        self,
        service: str,
        table: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        newest_first: bool = True,
        limit: int = 100,
        page: str | None = None,
    ) -> Page[AuditRecord]:
        self._require("table")
        window = OrderedWindow.build(since, until, limit, page, newest_first=newest_first)
        if window.since_us is None:
            raise InvalidQuery("by_table needs since")
        return paginate_ordered(self._timeline(service, table, window), window)


__all__ = ["CassandraReads"]
