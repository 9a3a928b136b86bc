"""Progress lines for long-running commands (``consume``, ``relay``).

A :class:`Progress` logs a one-line summary every ``interval`` seconds from a daemon thread,
and :meth:`Progress.close` logs the final one, so an operator watching the logs sees that
the command works (and how much) without metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

#: Default seconds between two progress lines.
DEFAULT_PROGRESS_INTERVAL: Final = 30.0
PROGRESS_ENV: Final = "SQLA_AUDIT_PROGRESS_INTERVAL"


def parse_interval(text: str) -> float:
    """Seconds between progress lines: a number from 0 (never) to 86400."""
    value = float(text)
    if not 0 <= value <= 86400:
        raise ValueError(text)
    return value


class Progress:
    """Logs ``summary()`` every ``interval`` seconds (0: only the final line)."""

    def __init__(self, summary: Callable[[], str], interval: float, logger: logging.Logger) -> None:
        self._summary = summary
        self._interval = interval
        self._log = logger
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._thread = threading.Thread(
                target=self._loop, name="sqla-audit-progress", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            self._line("progress")

    def _line(self, what: str) -> None:
        try:
            text = self._summary()
        except Exception as exc:  # noqa: BLE001 - a summary must never stop the command
            text = f"(summary unavailable: {exc})"
        self._log.info("%s: %s", what, text, extra={"summary": text})

    def close(self, final: str = "done") -> None:
        """Stop the periodic lines and log the final one, prefixed with ``final``."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._line(final)


__all__ = ["DEFAULT_PROGRESS_INTERVAL", "PROGRESS_ENV", "Progress", "parse_interval"]
