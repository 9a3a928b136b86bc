"""The message source protocol: where the worker gets change-event messages from.

A source hands out messages in small batches and is then told, per message, what became
of it -- the model of AWS Powertools' batch processor and dramatiq's SQS broker:

* ``ack``: every row for the message is written; remove it from the queue;
* ``release``: not processed (shutdown, or the store is down); make it visible again after
  ``visibility`` seconds (0: at once) so this or another worker retries it;
* ``reject``: it can never be processed (undecodable); move it to the dead-letter queue if
  the source has one, else leave it to the queue's own redrive policy;
* ``extend``: still working on it; keep it hidden for ``seconds`` more.

A message that is neither acked nor released reappears by itself when its visibility
timeout ends, which is what makes a crash safe: nothing is deleted before it is written.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

#: Longest reject reason handed to a source (SQS message attributes, outbox ``last_error``).
MAX_REASON_CHARS: Final = 1000


@dataclass(frozen=True, slots=True)
class Message:
    """One received message. ``handle`` is the source's own token (an SQS receipt handle)."""

    message_id: str
    body: str
    handle: Any = None
    #: How many times the queue has delivered this message (1 on first delivery).
    receive_count: int = 1
    attributes: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class MessageSource(Protocol):
    """A queue the worker consumes. Methods may be called from several threads at once."""

    def receive(self, max_messages: int, wait: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``wait`` seconds for the first.

        Raises :class:`~sqla_audit.errors.TransportError` when the queue is unreachable.
        """
        ...

    def ack(self, messages: Sequence[Message]) -> None:
        """Delete processed messages (best effort: a failed delete means a harmless redelivery)."""
        ...

    def release(self, messages: Sequence[Message], visibility: int = 0) -> None:
        """Make messages visible again after ``visibility`` seconds."""
        ...

    def reject(self, messages: Sequence[Message], reason: str) -> None:
        """Park messages that can never be processed (dead-letter queue or redrive policy)."""
        ...

    def extend(self, messages: Sequence[Message], seconds: int) -> None:
        """Keep messages hidden for ``seconds`` more (a long batch)."""
        ...

    def close(self) -> None:
        """Release resources. Idempotent."""
        ...


def clean_reason(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` as text every source can keep: surrogates, control characters (but tab
    and newline) and noncharacters escaped (``\\ud800``, ``\\x00``), at most ``limit``
    characters.

    A reason often quotes the offending value, and what made a record poison (a lone
    surrogate, a NUL) is exactly what an SQS message attribute or a PostgreSQL text column
    refuses: parking the message must not fail for the reason it is parked.
    """
    if len(reason) > limit:
        reason = reason[: limit - 1] + "\u2026"
    out = []
    for ch in reason:
        if ch in "\t\n" or unicodedata.category(ch) not in ("Cs", "Cc", "Cn"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


__all__ = ["MAX_REASON_CHARS", "Message", "MessageSource", "clean_reason"]
