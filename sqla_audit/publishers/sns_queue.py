"""The direct-mode publisher's queue: what ``publish()`` does under the publisher's lock,
the memory bound (``max_queue_events``, ``max_queue_hard``) and the hand-over of the queue to
the spool, and the counters and failure reports every part shares."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqla_audit.delivery import report_failure
from sqla_audit.errors import PublisherClosedError, QueueFullError
from sqla_audit.events import ChangeEvent
from sqla_audit.publishers.base import ErrorHook
from sqla_audit.publishers.spool import EventSpool


@dataclass(frozen=True, slots=True)
class Deferred:
    """Queued events not built yet: ``build()`` makes ``count`` of them."""

    count: int
    build: Callable[[], Sequence[ChangeEvent]]


def event_count(item: ChangeEvent | Deferred) -> int:
    """How many events a queued item stands for."""
    return item.count if isinstance(item, Deferred) else 1


class SNSPublishQueue:
    """The queue half of :class:`~sqla_audit.publishers.sns_publisher.SNSPublisher`: its
    state is set up by the publisher's constructor."""

    _spool: EventSpool | None
    _max_queue: int
    _max_queue_hard: int
    _on_error: ErrorHook | None
    _cond: threading.Condition
    _queue: deque[ChangeEvent | Deferred]
    _queued: int
    _inflight: int
    _spilling: bool
    _spill_pending: deque[tuple[int, deque[ChangeEvent | Deferred]]]
    _spill_seq: int
    _spill_backlog: int
    _spill_lock: threading.Lock
    _closed: bool
    _counts: dict[str, int]

    def _enqueue(self, items: Sequence[ChangeEvent | Deferred], count: int) -> None:
        try:
            with self._cond:
                if self._closed:
                    self._drop_items(PublisherClosedError("the SNS publisher is closed"), items)
                    return
                self._counts["accepted"] += count
                held = self._queued + count
                # Memory holds the queue and the events on their way to the spool.
                if held <= self._max_queue and held + self._spill_backlog <= self._max_queue_hard:
                    self._queue.extend(items)
                    self._queued = held
                    self._cond.notify_all()
                    return
                if self._spool is None:
                    self._drop_items(
                        QueueFullError(
                            f"the SNS publisher queue is full ({self._max_queue} events) "
                            "and no spool is configured"
                        ),
                        items,
                    )
                    return
                # Past the soft cap: from now on events go through the spool. The sender
                # thread writes them; this thread only does when the sender is behind by
                # more than the hard cap (back-pressure).
                self._spilling = True
                self._queue.extend(items)
                self._queued = held
                self._cond.notify_all()
                if held + self._spill_backlog <= self._max_queue_hard:
                    return
                seq = self._take_queue_locked()
            self._write_spill(seq)
        except Exception as exc:  # noqa: BLE001 -- publish() never raises into application code
            self._report(exc, [item for item in items if isinstance(item, ChangeEvent)])

    def _write_spill(self, upto: int) -> None:
        """Write the handed-over batches numbered up to ``upto`` to the spool (the spill
        writer, :class:`~sqla_audit.publishers.sns_spill.SNSSpill`, does)."""
        raise NotImplementedError

    def _idle_locked(self) -> bool:
        # ``_spilling`` stays set while the spool may hold events: only the sender clears it,
        # after finding the spool empty with nothing queued or on its way to the spool. Not
        # asking the spool here keeps flush() from holding the publisher's lock while the
        # spool's lock is held by a write.
        return (
            not self._queue
            and not self._inflight
            and not self._spill_backlog
            and not self._spilling
        )

    def _report(self, error: BaseException, events: Sequence[ChangeEvent]) -> None:
        report_failure(error, events, self._on_error)

    def _drop(self, error: BaseException, events: Sequence[ChangeEvent]) -> None:
        self._counts["dropped"] += len(events)
        self._report(error, events)

    def _drop_items(self, error: BaseException, items: Sequence[ChangeEvent | Deferred]) -> None:
        """Drop queued items (lock held); deferred ones are built to be reported."""
        events, failed = self._expand(items)
        self._counts["rejected"] += failed
        self._drop(error, events)

    @staticmethod
    def _expand(items: Sequence[ChangeEvent | Deferred]) -> tuple[list[ChangeEvent], int]:
        """The events of queued items, building deferred ones; and how many failed to build."""
        events: list[ChangeEvent] = []
        failed = 0
        for item in items:
            if isinstance(item, Deferred):
                built = item.build()
                failed += max(0, item.count - len(built))
                events.extend(built)
            else:
                events.append(item)
        return events, failed

    def _take_queue_locked(self) -> int:
        """Hand the whole queue over for spilling; return its batch number. Lock held.

        O(1): the deque is swapped, not copied. The events stay counted (``_spill_backlog``)
        until :meth:`_write_spill` has put them on disk.
        """
        if self._queue:
            self._spill_seq += 1
            batch, self._queue = self._queue, deque()
            self._spill_pending.append((self._spill_seq, batch))
            self._spill_backlog += self._queued
            self._queued = 0
        return self._spill_seq
