"""Direct-mode publishing: :class:`SNSPublisher`, a bounded queue in front of an
:class:`~sqla_audit.publishers.sns_sender.SNSSender`, spilling to a local spool.

This module is the :class:`~sqla_audit.publishers.base.Publisher` facade: its settings, its
thread's start and stop, ``publish()``, ``flush()``, ``close()`` and ``stats()``. The parts
behind it follow the data flow, each a base class of :class:`SNSPublisher` (they share its
lock, queue and counters):

* :mod:`~sqla_audit.publishers.sns_queue` -- the queue ``publish()`` appends to, its memory
  bound, the hand-over of the queue to the spool, the counters;
* :mod:`~sqla_audit.publishers.sns_spill` -- writing handed-over events to the spool, in
  order, outside the publisher's lock;
* :mod:`~sqla_audit.publishers.sns_loop` -- the sender thread: direct sends, and the spool's
  drain with outage probes.
"""

from __future__ import annotations

import atexit
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Final

from sqla_audit import shutdown
from sqla_audit.errors import TransportError
from sqla_audit.events import ChangeEvent
from sqla_audit.limits import SNS_MAX_BATCH_ENTRIES
from sqla_audit.publishers.base import ErrorHook
from sqla_audit.publishers.offload import S3Offloader
from sqla_audit.publishers.sns_loop import SNSSenderLoop
from sqla_audit.publishers.sns_queue import Deferred
from sqla_audit.publishers.sns_sender import SNSSender, Transport
from sqla_audit.publishers.spool import EventSpool
from sqla_audit.retry import RetryPolicy

#: Full batches per call in flight that the sender thread takes from the queue (or the
#: spool) at a time: the calls of a round form one pipeline, and a larger round leaves
#: fewer pauses between rounds.
_ROUND_BATCHES_PER_CALL: Final = 4

#: ``PublishBatch`` calls the direct-mode publisher keeps in flight at most, by default.
DEFAULT_MAX_CONCURRENCY: Final = 16

#: The direct-mode publisher's pause between probes while SNS is unreachable: short enough
#: that the first send after the endpoint's return comes within about 1.5 s.
DEFAULT_OUTAGE_RETRY: Final = RetryPolicy(max_attempts=1_000_000_000, base_delay=0.5, max_delay=1.5)


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters of an :class:`SNSPublisher` since it started (events, not messages)."""

    accepted: int
    delivered: int
    spooled: int
    rejected: int
    dropped: int
    queued: int
    spool_bytes: int


class SNSPublisher(SNSSenderLoop):
    """Direct-mode publisher: bounded queue, background sender thread, local spool.

    ``publish()`` costs a lock and a deque append while the queue has room. During an
    outage (SNS unreachable past ``retry``) or once the queue holds more than
    ``max_queue_events``, events are written to ``spool`` by the sender thread, and from
    then on every new event follows them through the spool, so order is kept. The sender
    re-tries the spool's head with ``outage_retry`` backoff until SNS answers, then empties
    the spool before returning to the in-memory path.

    Spilling never holds the publisher's lock: the events are taken out of the queue under
    it (a swap) and serialized and written afterwards, so ``publish()`` does not wait for
    the disk. Only when the queue reaches ``max_queue_hard`` (default twice
    ``max_queue_events``) because the sender cannot keep up -- it is inside a blocking
    network call -- does ``publish()`` write to the spool itself (back-pressure, which
    keeps memory bounded). Spill batches are written in the order they left the queue,
    whichever thread writes them.

    Without a spool, events that cannot be delivered (or do not fit in the queue) are
    reported to ``on_error`` and counted as ``dropped``.

    Throughput: the sender thread takes ``max_batch_events`` events at a time (default four
    full batches per call in flight) and sends them with up to ``max_concurrency``
    ``PublishBatch`` calls at once (see :class:`SNSSender`; FIFO topics keep one batch per
    message group in flight). The spool is drained the same way; while it drains and SNS
    answers, newly published events wait in memory (up to ``max_queue_events``) and follow
    once the spool is empty, so the drain does not also write, read and decode the load
    that keeps coming.
    """

    def __init__(
        self,
        topic_arn: str,
        *,
        client: Any = None,
        sender: SNSSender | None = None,
        fifo: bool | None = None,
        offloader: S3Offloader | None = None,
        spool: EventSpool | str | PathLike[str] | None = None,
        max_queue_events: int = 10_000,
        max_queue_hard: int | None = None,
        max_batch_events: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        outage_retry: RetryPolicy | None = None,
        on_error: ErrorHook | None = None,
        close_timeout: float = 10.0,
        register_atexit: bool = True,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        transport: Transport = "lean",
    ) -> None:
        if max_queue_events < 1:
            raise ValueError("max_queue_events must be at least 1")
        hard = 2 * max_queue_events if max_queue_hard is None else max_queue_hard
        if hard < max_queue_events:
            raise ValueError(
                f"max_queue_hard ({hard}) must be at least max_queue_events ({max_queue_events})"
            )
        if max_batch_events is not None and max_batch_events < 1:
            raise ValueError("max_batch_events must be at least 1")
        self._sender = sender or SNSSender(
            topic_arn,
            client=client,
            fifo=fifo,
            offloader=offloader,
            retry=retry,
            region_name=region_name,
            endpoint_url=endpoint_url,
            max_concurrency=max_concurrency,
            transport=transport,
        )
        self._spool = EventSpool(spool) if isinstance(spool, str | PathLike) else spool
        self._max_queue = max_queue_events
        self._max_queue_hard = hard
        # One round of the sender: a full batch for every call it may have in flight.
        self._max_batch = (
            _ROUND_BATCHES_PER_CALL * SNS_MAX_BATCH_ENTRIES * self._sender.max_concurrency
            if max_batch_events is None
            else max_batch_events
        )
        self._outage_retry = outage_retry or DEFAULT_OUTAGE_RETRY
        self._on_error = on_error
        self._close_timeout = close_timeout

        self._cond = threading.Condition()
        self._queue: deque[ChangeEvent | Deferred] = deque()
        self._queued = 0  # events in the queue (a deferred item counts its events)
        self._inflight = 0
        self._spilling = self._spool is not None and not self._spool.empty
        # Spilling outside the lock: batches taken out of the queue wait here (oldest first)
        # until a thread holding ``_spill_lock`` writes them; ``_spill_backlog`` counts their
        # events until they are on disk, so flush() and stats() still see them.
        self._spill_pending: deque[tuple[int, deque[ChangeEvent | Deferred]]] = deque()
        self._spill_seq = 0
        self._spill_backlog = 0
        self._spill_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._stop = threading.Event()
        self._window_done: set[str] = set()  # event ids of the spool head already accepted
        self._outage_attempt = 0
        self._counts = {"accepted": 0, "delivered": 0, "spooled": 0, "rejected": 0, "dropped": 0}

        self._thread = threading.Thread(
            target=self._run, name=f"sqla-audit-sns-{topic_arn.rsplit(':', 1)[-1]}", daemon=True
        )
        self._thread.start()
        self._atexit_registered = register_atexit
        if register_atexit:
            atexit.register(self._close_at_exit)
            shutdown.track(self)  # flush_publishers() and the signal flush include it

    # -- Publisher protocol -----------------------------------------------------------------

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Queue the events of one committed transaction; never blocks on the network."""
        if events:
            self._enqueue(events, len(events))

    def publish_deferred(self, count: int, build: Callable[[], Sequence[ChangeEvent]]) -> None:
        """Queue ``count`` events that ``build()`` makes, on the sender thread.

        For the capture library: the envelopes of a transaction are built (and serialized)
        off the application's thread, which only hands over its captured changes. ``count``
        is what the memory bound counts; ``build`` reports its own failures (and then
        returns fewer events, counted as rejected).
        """
        if count > 0:
            self._enqueue((Deferred(count, build),), count)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted event is delivered, rejected or dropped."""
        with self._cond:
            return self._cond.wait_for(self._idle_locked, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` seconds, stop the thread, spool what is left."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        budget = self._close_timeout if timeout is None else timeout
        self.flush(budget)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(max(budget, 1.0))
        seq: int | None = None
        with self._cond:
            self._closed = True
            if self._queue:
                if self._spool is not None:
                    seq = self._take_queue_locked()
                else:
                    leftover = list(self._queue)
                    self._queue.clear()
                    self._queued = 0
                    self._drop_items(
                        TransportError("SNS publisher closed before delivery"), leftover
                    )
            self._cond.notify_all()
        if seq is not None:
            self._write_spill(seq)
        if self._spool is not None:
            with self._cond:  # a caller past the hard cap may still be writing its spill
                self._cond.wait_for(lambda: not self._spill_backlog, max(budget, 1.0))
        if self._spool is not None and not self._thread.is_alive():
            self._spool.close()
        if self._atexit_registered:
            atexit.unregister(self._close_at_exit)
            self._atexit_registered = False
        shutdown.untrack(self)

    # -- observability -------------------------------------------------------------------

    def stats(self) -> PublisherStats:
        # The spool's size is read outside the publisher's lock: the spool's own lock may be
        # held by a write in progress, and publish() must not queue up behind it.
        spool_bytes = self._spool.size_bytes if self._spool is not None else 0
        with self._cond:
            return PublisherStats(
                queued=self._queued + self._inflight + self._spill_backlog,
                spool_bytes=spool_bytes,
                **self._counts,
            )

    # -- internals ------------------------------------------------------------------------

    def _close_at_exit(self) -> None:
        self._atexit_registered = False
        self.close(self._close_timeout)


__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_OUTAGE_RETRY",
    "PublisherStats",
    "SNSPublisher",
]
