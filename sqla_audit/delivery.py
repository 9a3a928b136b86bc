"""Transactional delivery: the contract between capture and a transactional outbox.

In *direct* mode the capture library hands the events of a transaction to a
:class:`~sqla_audit.publishers.base.Publisher` **after** the commit succeeded; a crash
between the commit and the publish loses those events (at-most-once across a crash).

In *outbox* mode the events are written **inside** the transaction that changed the data,
through the same connection, so they commit or roll back together with it
(at-least-once across a crash, once a relay forwards the rows). The capture library calls
:meth:`TransactionalWriter.write` in ``before_commit`` of the outermost transaction, after a
final ``flush()``. An exception raised by ``write`` propagates and makes the commit fail:
data without its audit trail is never committed in this mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sqlalchemy import Connection

from sqla_audit.events import ChangeEvent


@runtime_checkable
class TransactionalWriter(Protocol):
    """Writes the events of one transaction through that transaction's connection."""

    def write(self, connection: Connection, events: Sequence[ChangeEvent]) -> None:
        """Persist ``events`` (in ``sequence`` order) using ``connection``; may raise."""
        ...


class InMemoryTransactionalWriter:
    """A test double: records what would have been written, per call.

    It does not touch the connection, so it cannot observe rollbacks by itself; tests use
    it to check what the capture library hands to an outbox and when.
    """

    def __init__(self, *, fail_with: BaseException | None = None) -> None:
        self.batches: list[list[ChangeEvent]] = []
        self.fail_with = fail_with

    def write(self, connection: Connection, events: Sequence[ChangeEvent]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(events))

    @property
    def events(self) -> list[ChangeEvent]:
        """Every event written so far, in call order."""
        return [event for batch in self.batches for event in batch]


__all__ = ["InMemoryTransactionalWriter", "TransactionalWriter"]
