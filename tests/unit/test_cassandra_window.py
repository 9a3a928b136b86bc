"""The Cassandra store's in-flight window: a semaphore that never exceeds its size."""

from __future__ import annotations

import threading
import time

import pytest

from consumer.sinks.cassandra.window import Window


def test_slots_run_out_and_come_back() -> None:
    """Without blocking, acquire fails once every slot is taken and succeeds after a release."""
    window = Window(2)
    assert window.acquire(blocking=False)
    assert window.acquire(blocking=False)
    assert not window.acquire(blocking=False)
    window.release()
    assert window.acquire(blocking=False)


def test_releasing_more_than_was_taken_is_an_error() -> None:
    """Like a BoundedSemaphore, a release with every slot free raises ValueError."""
    window = Window(1)
    with pytest.raises(ValueError, match="too many"):
        window.release()


def test_a_blocked_acquire_resumes_when_another_thread_releases() -> None:
    """A thread waiting for a slot gets it as soon as another thread gives one back."""
    window = Window(1)
    window.acquire()
    got = threading.Event()

    def waiter() -> None:
        window.acquire()
        got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not got.wait(0.05)
    window.release()
    assert got.wait(10)
    thread.join(10)


def test_threads_never_hold_more_than_the_size_together() -> None:
    """Eight threads taking and giving back slots never hold more than the size at once."""
    window = Window(3)
    lock = threading.Lock()
    held = most = 0

    def worker() -> None:
        nonlocal held, most
        for _ in range(200):
            window.acquire()
            with lock:
                held += 1
                most = max(most, held)
            time.sleep(0)
            with lock:
                held -= 1
            window.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most <= 3
    assert held == 0
    assert [window.acquire(blocking=False) for _ in range(4)] == [True, True, True, False]
