"""A small pool of daemon threads that runs a few blocking calls at once."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


class CallPool:
    """Daemon worker threads that run a few calls at once for one sender.

    Not ``concurrent.futures``: its workers refuse new work once the interpreter starts
    shutting down, which happens *before* ``atexit`` handlers run -- and the publisher's
    ``atexit`` handler must still be able to send. Workers are started on first use, and
    again in a child process after ``fork()`` (threads do not survive it); a worker left
    idle for ``idle_exit`` seconds ends, so a sender that is no longer used keeps no thread.
    """

    def __init__(self, size: int, idle_exit: float = 30.0) -> None:
        self.size = size
        self.idle_exit = idle_exit
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._pid = os.getpid()

    def map(self, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``[fn(item) for item in items]``, up to ``size`` at a time; the caller runs one.

        Waits for every call; the first exception raised by a call is raised afterwards.
        """
        if len(items) <= 1 or self.size <= 1:
            return [fn(item) for item in items]
        results: list[Any] = [None] * len(items)
        errors: list[BaseException] = []
        remaining = [len(items) - 1]
        done = threading.Condition()

        def job(index: int) -> Callable[[], None]:
            def run() -> None:
                try:
                    results[index] = fn(items[index])
                except BaseException as exc:  # noqa: BLE001 -- re-raised by the caller
                    errors.append(exc)
                finally:
                    with done:
                        remaining[0] -= 1
                        done.notify_all()

            return run

        with self._lock:  # workers and jobs together: an idle worker cannot leave them behind
            self._ensure_workers_locked(min(self.size, len(items)) - 1)
            for index in range(1, len(items)):
                self._jobs.put(job(index))
        try:
            results[0] = fn(items[0])
        finally:
            with done:
                done.wait_for(lambda: remaining[0] == 0)
        if errors:
            raise errors[0]
        return results

    @property
    def workers(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return self._workers

    def _ensure_workers_locked(self, wanted: int) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's workers are not here
            self._pid = os.getpid()
            self._jobs = queue.SimpleQueue()
            self._workers = 0
        while self._workers < wanted:
            self._workers += 1
            threading.Thread(
                target=self._work,
                args=(self._jobs,),
                name=f"sqla-audit-sns-call-{self._workers}",
                daemon=True,
            ).start()

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            try:
                job = jobs.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:
                    if not jobs.empty():
                        continue
                    if self._jobs is jobs:
                        self._workers -= 1
                    return
            job()


__all__ = ["CallPool"]
