"""A publisher that keeps events in memory: for tests, the library's and the users'.

It keeps what a real publisher would send -- each event's JSON text, as
:meth:`ChangeEvent.to_json` renders it -- next to the event objects, so a test can look at
the exact bytes that would leave the process (for instance to check that no masked value
is in them). Thread-safe; :meth:`InMemoryPublisher.wait_for` lets a test wait for events
published from another thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from sqla_audit.events import ChangeEvent


class InMemoryPublisher:
    """Records every published transaction; implements the ``Publisher`` protocol."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._batches: list[tuple[ChangeEvent, ...]] = []
        self._raw: list[str] = []
        self.closed = False

    # -- Publisher protocol --------------------------------------------------------------

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Record one committed transaction's events (and their JSON text)."""
        batch = tuple(events)
        raw = [event.to_json() for event in batch]
        with self._lock:
            self._batches.append(batch)
            self._raw.extend(raw)
            self._lock.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is ever in flight: always True."""
        return True

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    # -- inspection -----------------------------------------------------------------------

    @property
    def events(self) -> list[ChangeEvent]:
        """Every event published so far, in publish order."""
        with self._lock:
            return [event for batch in self._batches for event in batch]

    @property
    def batches(self) -> list[tuple[ChangeEvent, ...]]:
        """The events grouped per published transaction."""
        with self._lock:
            return list(self._batches)

    @property
    def raw_messages(self) -> list[str]:
        """The JSON text of every event, as it would be sent."""
        with self._lock:
            return list(self._raw)

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._batches.clear()
            self._raw.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ChangeEvent]:
        """Wait until at least ``count`` events were published; return them all.

        Raises :class:`TimeoutError` with what did arrive when ``timeout`` passes first.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                events = [event for batch in self._batches for event in batch]
                if len(events) >= count:
                    return events
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"waited {timeout}s for {count} event(s), got {len(events)}")
                self._lock.wait(remaining)


__all__ = ["InMemoryPublisher"]
