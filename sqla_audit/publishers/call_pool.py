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
        """``[fn(item) for item in items]``, up to ``size`` at a time, the caller included.

        The calls form one pipeline: each of ``size`` runners (the caller and up to
        ``size - 1`` workers) takes the next item as soon as its previous call returned, so
        a slow call does not hold the others back. Waits for every call; the first
        exception raised by a call is raised afterwards.
        """
        if len(items) <= 1 or self.size <= 1:
            return [fn(item) for item in items]
        results: list[Any] = [None] * len(items)
        errors: list[BaseException] = []
        runners = min(self.size, len(items))
        position = iter(range(len(items)))
        take = threading.Lock()
        remaining = [runners - 1]
        done = threading.Condition()

        def run_items() -> None:
            while True:
                with take:
                    index = next(position, None)
                if index is None:
                    return
                try:
                    results[index] = fn(items[index])
                except BaseException as exc:  # noqa: BLE001 -- re-raised by the caller
                    errors.append(exc)

        def runner() -> None:
            try:
                run_items()
            finally:
                with done:
                    remaining[0] -= 1
                    done.notify_all()

        with self._lock:  # workers and jobs together: an idle worker cannot leave them behind
            self._ensure_workers_locked(runners - 1)
            for _ in range(runners - 1):
                self._jobs.put(runner)
        try:
            run_items()
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
