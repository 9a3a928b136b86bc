"""The capped exponential backoff the worker's pollers share while the store is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Backoff:
    """A capped exponential backoff shared by all pollers of a worker.

    ``failure`` starts or lengthens a pause (only once per pause, however many pollers
    report the same outage); ``success`` ends it.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._clock = clock
        self._lock = threading.Lock()
        self._delay = 0.0
        self._until = 0.0

    @property
    def delay(self) -> float:
        """The current pause length; 0 when healthy."""
        with self._lock:
            return self._delay

    @property
    def active(self) -> bool:
        with self._lock:
            return self._delay > 0

    def failure(self) -> float:
        """Record a failure; returns the pause now in force."""
        with self._lock:
            now = self._clock()
            if self._delay and now < self._until:
                return self._delay  # the same outage, reported by another poller
            self._delay = self.initial if not self._delay else min(self._delay * 2, self.maximum)
            self._until = now + self._delay
            return self._delay

    def success(self) -> None:
        with self._lock:
            self._delay = 0.0
            self._until = 0.0

    def remaining(self) -> float:
        """Seconds left in the current pause."""
        with self._lock:
            return max(0.0, self._until - self._clock()) if self._delay else 0.0


__all__ = ["Backoff"]
