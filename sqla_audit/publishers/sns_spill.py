"""Spilling: the queue handed over to the spool is serialized and written outside the
publisher's lock, oldest batch first whichever thread writes it; undelivered in-flight
events go to the spool's front."""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.sns_queue import Deferred, SNSPublishQueue, event_count
from sqla_audit.publishers.spool import SpoolFullError

log = logging.getLogger("sqla_audit.publishers.sns_publisher")

#: Events serialized and written to the spool at a time when a queue spills.
_SPILL_CHUNK_EVENTS: Final = 500


class SNSSpill(SNSPublishQueue):
    """The spool writes of :class:`~sqla_audit.publishers.sns_publisher.SNSPublisher`."""

    def _write_spill(self, upto: int) -> None:
        """Write the handed-over batches numbered up to ``upto`` to the spool, oldest first.

        Called without the publisher's lock. ``_spill_lock`` makes one thread at a time
        write, and batches leave ``_spill_pending`` in the order they entered it, so the
        sender's spill and a caller's spill (past the hard cap) never interleave: whoever
        gets the lock first also writes the older batches of the other.
        """
        with self._spill_lock:
            while True:
                with self._cond:
                    if not self._spill_pending or self._spill_pending[0][0] > upto:
                        return
                    _, batch = self._spill_pending.popleft()
                self._write_batch(batch)

    def _write_batch(self, batch: deque[ChangeEvent | Deferred]) -> None:
        """Serialize and append one spill batch, in chunks; count and report what fails."""
        assert self._spool is not None
        # In chunks, so serialized copies of a whole queue never coexist in memory; the
        # events of a written chunk are released at once.
        while batch:
            items: list[ChangeEvent | Deferred] = []
            rows = 0
            while batch and rows < _SPILL_CHUNK_EVENTS:
                item = batch.popleft()
                items.append(item)
                rows += event_count(item)
            chunk, unbuilt = self._expand(items)
            records: list[bytes] = []
            kept: list[ChangeEvent] = []
            bad: list[tuple[BaseException, ChangeEvent]] = []
            for event in chunk:
                try:
                    records.append(event.to_json().encode("utf-8"))
                except Exception as exc:  # noqa: BLE001 -- a bad event must not stop the others
                    bad.append((exc, event))
                else:
                    kept.append(event)
            written = 0
            failure: BaseException | None = None
            try:
                written = self._spool.append(records) if records else 0
            except SpoolFullError as exc:
                written, failure = exc.written, exc
            except Exception as exc:  # noqa: BLE001 -- disk errors are reported, not raised
                failure = exc
            lost = kept[written:]
            # Reported before they stop counting as pending, so flush() returns after the hook.
            for error, event in bad:
                self._report(error, [event])
            if failure is not None:
                self._report(failure, lost)
            with self._cond:
                self._spill_backlog -= rows
                self._counts["spooled"] += written
                self._counts["rejected"] += len(bad) + unbuilt
                self._counts["dropped"] += len(lost)
                self._cond.notify_all()

    def _spool_front(
        self, events: list[ChangeEvent], records: list[bytes], error: BaseException | None
    ) -> None:
        """Undelivered in-flight events go to the *front* of the spool (they are older than
        anything spilled meanwhile). Written without the publisher's lock; the events stay
        counted as in flight until they are on disk."""
        assert self._spool is not None
        log.warning(
            "sqla-audit: SNS unreachable (%s); spooling %d event(s) to %s",
            error,
            len(events),
            self._spool.directory,
        )
        written = 0
        failure: BaseException | None = None
        try:
            written = self._spool.push_front(records)
        except SpoolFullError as exc:
            written, failure = exc.written, exc
        except Exception as exc:  # noqa: BLE001 -- disk errors are reported, not raised
            failure = exc
        if failure is not None:
            self._report(failure, events[written:])
        with self._cond:
            self._counts["spooled"] += written
            self._counts["dropped"] += len(events) - written
            self._inflight = 0
            self._cond.notify_all()
