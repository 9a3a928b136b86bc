"""The batches a worker holds: visibility extension and the slow-message watch.

Every batch is registered here from the moment the worker starts processing it until each
of its messages is settled (acked, released or rejected). The worker's housekeeping thread
asks this registry, every few seconds, for

* the batches due for a visibility extension (half the visibility timeout since the
  receive or the last extension), so a slow write or a store outage never lets a held
  message reappear in the queue and spend a delivery attempt;
* the batches held longer than the stall threshold: the worker logs one warning line per
  batch naming its message ids, its age and what it waits for, and repeats it each time the
  age doubles;
* the age of the oldest message held, exported as a gauge.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.sources.base import Message


@dataclass(slots=True)
class HeldBatch:
    """One batch being processed."""

    messages: Sequence[Message]
    received_at: float
    extended_at: float
    #: what the batch waits for: ``"writing"``, or ``"store unavailable"`` while held
    state: str = "writing"
    #: age at which the next stall warning is due
    warn_at: float = 0.0

    @property
    def message_ids(self) -> list[str]:
        return [message.message_id for message in self.messages]


class InFlight:
    """The worker's registry of batches being processed (thread-safe)."""

    def __init__(self, visibility_timeout: float, stall_seconds: float) -> None:
        self.visibility_timeout = visibility_timeout
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._batches: dict[int, HeldBatch] = {}

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._batches)

    def add(self, messages: Sequence[Message], now: float) -> int:
        """Register a batch; returns its key for :meth:`remove` and :meth:`set_state`."""
        key = next(self._ids)
        with self._lock:
            self._batches[key] = HeldBatch(messages, now, now, warn_at=self.stall_seconds)
        return key

    def set_state(self, key: int, state: str) -> None:
        with self._lock:
            batch = self._batches.get(key)
            if batch is not None:
                batch.state = state

    def remove(self, key: int) -> None:
        with self._lock:
            self._batches.pop(key, None)

    def due_for_extension(self, now: float) -> list[HeldBatch]:
        """Batches whose visibility should be extended now (marked as extended)."""
        due = []
        with self._lock:
            for batch in self._batches.values():
                if now - batch.extended_at >= self.visibility_timeout / 2:
                    batch.extended_at = now
                    due.append(batch)
        return due

    def stalled(self, now: float) -> list[tuple[HeldBatch, float]]:
        """Batches (with their age) held past their next warning age; each warning is due
        once, the next one when the age has doubled."""
        out = []
        with self._lock:
            for batch in self._batches.values():
                age = now - batch.received_at
                if age >= batch.warn_at:
                    batch.warn_at = 2 * age
                    out.append((batch, age))
        return out

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest batch held was received (0 when none is)."""
        with self._lock:
            return max((now - b.received_at for b in self._batches.values()), default=0.0)


__all__ = ["HeldBatch", "InFlight"]
