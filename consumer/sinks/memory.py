"""An in-memory :class:`~consumer.sinks.base.AuditStore` for tests (yours and ours).

Same semantics as the persistent stores: idempotent by ``event_id`` and content (a
conflicting duplicate is refused with :class:`~consumer.sinks.base.RecordConflict`, the
first record kept; a record no store can hold with
:class:`~consumer.sinks.base.RecordRejected`), newest first by
``(event time ms, event_id)``, exact ``since``/``until``, keyset page tokens. Thread-safe.
``fail_next`` makes the next writes raise, to exercise a worker's retry path. Departure
records (a row's key changed, see :mod:`consumer.records`) appear in ``history`` only, like
in the other stores' companion indexes. ``views`` chooses the secondary views it answers
(all by default), so tests see the same :class:`~consumer.sinks.base.ViewDisabled` as with
the persistent stores.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable

from consumer.records import AuditRecord
from consumer.seal import Seal
from consumer.sinks.base import (
    OrderedWindow,
    Page,
    RecordConflict,
    ViewDisabled,
    Window,
    check_views,
    commit_key,
    conflict,
    content_digest,
    paginate,
    paginate_ordered,
)
from sqla_audit.errors import StoreError

log = logging.getLogger(__name__)


class MemoryStore:
    """Keeps records in dictionaries; ``records`` exposes them for assertions."""

    def __init__(self, *, views: frozenset[str] | None = None) -> None:
        self.views = check_views(views)
        self._lock = threading.Lock()
        self._by_id: dict[uuid.UUID, AuditRecord] = {}
        self._digests: dict[uuid.UUID, bytes] = {}
        self._seals: dict[uuid.UUID, Seal] = {}
        self._failures: list[BaseException] = []
        self.write_calls = 0
        self.closed = False

    # -- test helpers --------------------------------------------------------------------

    def fail_next(self, count: int = 1, error: BaseException | None = None) -> None:
        """Make the next ``count`` calls to :meth:`write` raise ``error`` (a StoreError)."""
        with self._lock:
            for _ in range(count):
                self._failures.append(error or StoreError("store unavailable (injected)"))

    @property
    def records(self) -> list[AuditRecord]:
        """Every stored record, oldest first."""
        with self._lock:
            return sorted(self._by_id.values(), key=lambda r: r.sort_key)

    # -- AuditStore ------------------------------------------------------------------------

    def write(self, records: Iterable[AuditRecord]) -> None:
        """Store every storable, new record; then raise the first refusal, if any."""
        batch = list(records)
        with self._lock:
            self.write_calls += 1
            if self._failures:
                raise self._failures.pop(0)
        first: RecordConflict | None = None
        for record in batch:
            digest = content_digest(record)  # RecordRejected: a record no store can hold
            with self._lock:
                stored = self._digests.get(record.event_id)
                if stored is None:
                    self._by_id[record.event_id] = record
                    self._digests[record.event_id] = digest
                    if record.seal is not None:
                        self._seals[record.event_id] = record.seal
                    continue
            if stored != digest:
                error = conflict(record, log)
                first = first or error
        if first is not None:
            raise first

    def seals(self, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Seal]:
        """The seals of the signed records among ``event_ids`` (see :mod:`consumer.verify`)."""
        with self._lock:
            return {i: self._seals[i] for i in event_ids if i in self._seals}

    def _newest_first(self) -> list[AuditRecord]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda r: r.sort_key, reverse=True)

    def _require(self, view: str) -> None:
        if view not in self.views:
            raise ViewDisabled(view)

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
        return paginate(
            (
                r
                for r in self._newest_first()
                if r.service == service and r.table == table and r.record_id == record_id
            ),
            window,
        )

    def services_of(self, table: str, record_id: str) -> list[str]:
        with self._lock:
            return sorted(
                {
                    r.service
                    for r in self._by_id.values()
                    if (r.table, r.record_id) == (table, record_id)
                }
            )

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
        return paginate(
            (
                r
                for r in self._newest_first()
                if r.actor_id == actor_id
                and not r.is_departure
                and (service is None or r.service == service)
            ),
            window,
        )

    def by_transaction(self, transaction_id: uuid.UUID) -> list[AuditRecord]:
        self._require("transaction")
        with self._lock:
            found = [
                r
                for r in self._by_id.values()
                if r.transaction_id == transaction_id and not r.is_departure
            ]
        return sorted(found, key=lambda r: (r.sequence, r.event_id))

    def _ordered(
        self, keep: Callable[[AuditRecord], bool], window: OrderedWindow
    ) -> Page[AuditRecord]:
        with self._lock:
            found = [r for r in self._by_id.values() if keep(r)]
        found.sort(key=commit_key, reverse=window.newest_first)
        return paginate_ordered(found, window)

    def by_request(
        self, request_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("request")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        return self._ordered(lambda r: bool(r.request_id) and r.request_id == request_id, window)

    def by_trace(
        self, trace_id: str, *, limit: int = 100, page: str | None = None
    ) -> Page[AuditRecord]:
        self._require("trace")
        window = OrderedWindow.build(None, None, limit, page, newest_first=False)
        return self._ordered(lambda r: r.trace_id is not None and r.trace_id == trace_id, window)

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
        return self._ordered(lambda r: r.service == service and r.table == table, window)

    def close(self) -> None:
        self.closed = True


__all__ = ["MemoryStore"]
