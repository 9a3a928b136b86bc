"""The publisher protocol: where change events go after a commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from sqla_audit.events import ChangeEvent

#: Called with the error and the events it concerns when delivery fails for good.
ErrorHook = Callable[[BaseException, Sequence[ChangeEvent]], None]


@runtime_checkable
class Publisher(Protocol):
    """Receives the events of each committed transaction.

    ``publish`` is called on the application's thread right after a commit: it must not
    block on the network and must not raise (report failures through an ``on_error``
    hook). Delivery happens in the background; ``flush`` waits for it.
    """

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Accept the events of one committed transaction, in ``sequence`` order."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything accepted so far is delivered; True if it was."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release resources. Idempotent."""
        ...


__all__ = ["ErrorHook", "Publisher"]
