"""The in-flight window of the Cassandra store: at most ``size`` requests out, across threads.

A ``threading.BoundedSemaphore`` does this, but it is written in Python over a
``Condition``: taking and giving back one slot costs two Python-level lock protocols and a
notification per request, eight times per record with every view. :class:`Window` keeps the
count under one C lock and touches its ``Condition`` only when a thread really has to wait
(the window is full and the thread has no request of its own to settle).
"""

from __future__ import annotations

import threading


class Window:
    """A counting semaphore (``acquire``/``release``) that never exceeds ``size``."""

    __slots__ = ("_free", "_full", "_lock", "_size", "_waiting")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the window needs at least one slot")
        self._size = size
        self._free = size
        self._lock = threading.Lock()
        self._full = threading.Condition(self._lock)
        self._waiting = 0

    def acquire(self, blocking: bool = True) -> bool:
        """Take a slot; without ``blocking``, False at once when none is free."""
        with self._lock:
            if not self._free:
                if not blocking:
                    return False
                self._waiting += 1
                try:
                    self._full.wait_for(self._has_free)
                finally:
                    self._waiting -= 1
            self._free -= 1
            return True

    def _has_free(self) -> bool:
        return self._free > 0

    def release(self) -> None:
        """Give a slot back (ValueError if more are given back than were taken)."""
        with self._lock:
            if self._free >= self._size:
                raise ValueError("Window released too many times")
            self._free += 1
            if self._waiting:
                self._full.notify()


__all__ = ["Window"]
