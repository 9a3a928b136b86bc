"""Delivering what a direct-mode publisher still holds when the process is asked to stop.

An :class:`~sqla_audit.publishers.sns.SNSPublisher` keeps accepted events in memory until
its background thread has sent them, and closes itself (flush, then spool what is left) at
interpreter exit through :mod:`atexit`. A process killed by a signal whose disposition is
the default -- ``SIGTERM`` in a plain script, a job runner, or after a server re-raises it
-- never runs :mod:`atexit`, so those events are lost.

Every publisher that closes at exit is also *tracked* here (weakly, until it is closed):

* :func:`flush_publishers` waits, with one shared deadline, until the tracked publishers
  (or those given) have delivered what they accepted -- the call for a server's own
  shutdown hook (FastAPI/Starlette lifespan, gunicorn ``worker_exit``, Celery
  ``worker_shutdown``);
* :func:`install_signal_flush` installs a ``SIGTERM`` (and optionally ``SIGINT``) handler
  that does the same, then behaves as the previous handler would: it calls a Python
  handler, returns if the signal was ignored, and if the previous disposition was the
  default it *closes* the publishers (what is still undelivered after the timeout goes to
  the spool, when one is configured) and lets the signal end the process as before
  (exit status 128 + signal number). :func:`uninstall_signal_flush` restores the previous
  handler.

The handler runs the delivery in a helper thread and waits for it at most the timeout plus
:data:`CLOSE_GRACE` (the time closing needs to spool what the flush could not deliver), so a
signal that interrupts the main thread inside a publisher's own lock cannot deadlock the
process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Final, Protocol

from sqla_audit.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Seconds :func:`flush_publishers` and the signal handler wait by default.
DEFAULT_FLUSH_TIMEOUT: Final = 10.0

#: Extra seconds the signal handler waits for its helper thread beyond the timeout: closing
#: a publisher after its flush timed out joins its sender thread (up to 1 s) and writes the
#: rest to the spool.
CLOSE_GRACE: Final = 5.0


class Flushable(Protocol):
    """What shutdown needs of a publisher (a subset of the ``Publisher`` protocol)."""

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...


_tracked: weakref.WeakSet[Flushable] = weakref.WeakSet()
_tracked_lock = threading.Lock()


def track(publisher: Flushable) -> None:
    """Include ``publisher`` in :func:`flush_publishers` and the signal handler until
    :func:`untrack` (publishers that close at exit call this themselves)."""
    with _tracked_lock:
        _tracked.add(publisher)


def untrack(publisher: Flushable) -> None:
    """Stop including ``publisher`` (a closed publisher calls this). Idempotent."""
    with _tracked_lock:
        _tracked.discard(publisher)


def tracked_publishers() -> list[Flushable]:
    """The publishers currently tracked."""
    with _tracked_lock:
        return list(_tracked)


def _deliver(publishers: Sequence[Flushable], timeout: float, *, close: bool) -> bool:
    """Flush (or close) each publisher within one shared deadline; True if all delivered."""
    deadline = time.monotonic() + max(timeout, 0.0)
    delivered = True
    for publisher in publishers:
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            delivered = publisher.flush(remaining) and delivered
            if close:
                publisher.close(max(deadline - time.monotonic(), 0.0))
        except Exception:  # shutdown continues with the next publisher
            logger.exception("sqla-audit: flushing a publisher at shutdown failed")
            delivered = False
    return delivered


def flush_publishers(
    timeout: float = DEFAULT_FLUSH_TIMEOUT, publishers: Iterable[Flushable] | None = None
) -> bool:
    """Wait up to ``timeout`` seconds in all until the tracked publishers (or
    ``publishers``) have delivered every event they accepted; True if they have.

    The publishers stay open: events committed afterwards are accepted as usual.
    """
    chosen = tracked_publishers() if publishers is None else list(publishers)
    return _deliver(chosen, timeout, close=False)


@dataclass(slots=True)
class _Installed:
    """One signal's handler: what it delivers, and the disposition it replaced."""

    signum: int
    publishers: tuple[Flushable, ...] | None
    timeout: float
    previous: Callable[[int, FrameType | None], object] | int | None
    active: bool = True

    def handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous
        if self.active:
            final = previous in (signal.SIG_DFL, None)
            self._deliver_bounded(close=final)
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            # What the default would have done: end the process by this signal.
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def _deliver_bounded(self, *, close: bool) -> None:
        chosen = tracked_publishers() if self.publishers is None else list(self.publishers)
        if not chosen:
            return
        outcome: list[bool] = []
        worker = threading.Thread(
            target=lambda: outcome.append(_deliver(chosen, self.timeout, close=close)),
            name="sqla-audit-signal-flush",
            daemon=True,
        )
        worker.start()
        worker.join(self.timeout + CLOSE_GRACE)
        if outcome != [True]:
            logger.warning(
                "sqla-audit: %s: not every audit event was delivered within %.1f s%s",
                signal.Signals(self.signum).name,
                self.timeout,
                " (a publisher with a spool keeps the rest on disk)" if close else "",
            )


_installed: dict[int, _Installed] = {}


def install_signal_flush(
    *publishers: Flushable,
    timeout: float = DEFAULT_FLUSH_TIMEOUT,
    sigint: bool = False,
) -> None:
    """On ``SIGTERM`` (and ``SIGINT`` with ``sigint=True``), deliver what the tracked
    publishers (or ``publishers``) hold, then behave as the previous handler.

    Call it once from the main thread, after the server (if any) has installed its own
    handlers. Calling it again replaces the publishers and timeout without stacking
    handlers. See the module docstring for what happens per previous disposition.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ConfigurationError("install_signal_flush() must be called from the main thread")
    if timeout < 0:
        raise ConfigurationError(f"timeout must be at least 0 seconds, got {timeout!r}")
    chosen = tuple(publishers) or None
    signums = [signal.SIGTERM, signal.SIGINT] if sigint else [signal.SIGTERM]
    for signum in signums:
        current = _installed.get(signum)
        if current is not None and signal.getsignal(signum) == current.handle:
            current.publishers, current.timeout, current.active = chosen, timeout, True
            continue
        installed = _Installed(signum, chosen, timeout, previous=signal.getsignal(signum))
        signal.signal(signum, installed.handle)
        _installed[signum] = installed


def uninstall_signal_flush() -> None:
    """Restore the handlers :func:`install_signal_flush` replaced. Idempotent; main thread.

    If another handler was installed on top of ours since, ours is left in place but
    only passes the signal on to the handler it replaced.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ConfigurationError("uninstall_signal_flush() must be called from the main thread")
    for signum, installed in list(_installed.items()):
        installed.active = False
        if signal.getsignal(signum) == installed.handle:
            previous = installed.previous
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        del _installed[signum]


__all__ = [
    "CLOSE_GRACE",
    "DEFAULT_FLUSH_TIMEOUT",
    "Flushable",
    "flush_publishers",
    "install_signal_flush",
    "track",
    "tracked_publishers",
    "uninstall_signal_flush",
    "untrack",
]
