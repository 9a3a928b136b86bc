"""An in-memory :class:`~consumer.sources.base.MessageSource` with SQS's visibility rules.

For tests of the worker (and of code built on it): a received message is hidden for the
visibility timeout and comes back unless acked; ``release`` and ``extend`` move that
deadline; after ``max_receive_count`` deliveries a message moves to :attr:`dead_letters`,
like an SQS redrive policy. ``reject`` moves a message there at once when ``dlq`` is true,
else leaves it hidden for the redrive policy to handle. Thread-safe.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.sources.base import Message
from sqla_audit.errors import TransportError


@dataclass(slots=True)
class _Entry:
    message_id: str
    body: str
    visible_at: float = 0.0
    receive_count: int = 0
    receipt: int = 0


class MemorySource:
    """A thread-safe in-memory queue; ``send`` adds bodies, the rest is the protocol."""

    def __init__(
        self,
        *,
        visibility_timeout: float = 30.0,
        max_receive_count: int | None = None,
        dlq: bool = False,
    ) -> None:
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self.dlq = dlq
        self._cond = threading.Condition()
        self._entries: dict[str, _Entry] = {}
        self._ids = itertools.count(1)
        self._receipts = itertools.count(1)
        self.dead_letters: list[tuple[str, str]] = []  # (body, reason)
        self.acked: list[str] = []
        self.released: list[str] = []
        self.extended: list[str] = []
        self._receive_failures = 0
        self.closed = False

    # -- test helpers --------------------------------------------------------------------

    def send(self, body: str) -> str:
        """Enqueue a body; returns its message id."""
        with self._cond:
            message_id = f"m-{next(self._ids)}"
            self._entries[message_id] = _Entry(message_id, body)
            self._cond.notify_all()
            return message_id

    def fail_receives(self, count: int) -> None:
        """Make the next ``count`` receives raise a TransportError."""
        with self._cond:
            self._receive_failures += count

    @property
    def pending(self) -> int:
        """Messages still in the queue (visible or not)."""
        with self._cond:
            return len(self._entries)

    def make_visible(self) -> None:
        """End every visibility timeout now (as if time passed)."""
        with self._cond:
            for entry in self._entries.values():
                entry.visible_at = 0.0
            self._cond.notify_all()

    # -- MessageSource -----------------------------------------------------------------------

    def _take(self, max_messages: int) -> list[Message]:
        now = time.monotonic()
        out: list[Message] = []
        dead: list[_Entry] = []
        # No copy of the whole table: a receive costs the messages it scans, not the queue.
        for entry in self._entries.values():
            if len(out) == max_messages:
                break
            if entry.visible_at > now:
                continue
            if self.max_receive_count is not None and entry.receive_count >= self.max_receive_count:
                dead.append(entry)
                continue
            entry.receive_count += 1
            entry.receipt = next(self._receipts)
            entry.visible_at = now + self.visibility_timeout
            out.append(
                Message(
                    message_id=entry.message_id,
                    body=entry.body,
                    handle=(entry.message_id, entry.receipt),
                    receive_count=entry.receive_count,
                )
            )
        for entry in dead:
            del self._entries[entry.message_id]
            self.dead_letters.append((entry.body, "max receive count"))
        return out

    def receive(self, max_messages: int, wait: float) -> list[Message]:
        deadline = time.monotonic() + wait
        with self._cond:
            if self._receive_failures:
                self._receive_failures -= 1
                raise TransportError("queue unavailable (injected)")
            while True:
                taken = self._take(max_messages)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0 or self.closed:
                    return taken
                self._cond.wait(min(remaining, 0.05))

    def _current(self, message: Message) -> _Entry | None:
        """The entry if ``message``'s receipt is still the latest (SQS semantics)."""
        entry = self._entries.get(message.message_id)
        if entry is None or (entry.message_id, entry.receipt) != message.handle:
            return None
        return entry

    def ack(self, messages: Sequence[Message]) -> None:
        with self._cond:
            for message in messages:
                if self._current(message) is not None:
                    del self._entries[message.message_id]
                    self.acked.append(message.message_id)

    def release(self, messages: Sequence[Message], visibility: int = 0) -> None:
        with self._cond:
            for message in messages:
                entry = self._current(message)
                if entry is not None:
                    entry.visible_at = time.monotonic() + visibility
                    self.released.append(message.message_id)
            self._cond.notify_all()

    def reject(self, messages: Sequence[Message], reason: str) -> None:
        with self._cond:
            for message in messages:
                entry = self._current(message)
                if entry is not None and self.dlq:
                    del self._entries[message.message_id]
                    self.dead_letters.append((entry.body, reason))

    def extend(self, messages: Sequence[Message], seconds: int) -> None:
        with self._cond:
            for message in messages:
                entry = self._current(message)
                if entry is not None:
                    entry.visible_at = time.monotonic() + seconds
                    self.extended.append(message.message_id)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


__all__ = ["MemorySource"]
