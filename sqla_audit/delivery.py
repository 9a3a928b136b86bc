"""Transactional delivery: the contract between capture and a transactional outbox.

In *direct* mode the capture library hands the events of a transaction to a
:class:`~sqla_audit.publishers.base.Publisher` **after** the commit succeeded; a crash
between the commit and the publish loses those events (at-most-once across a crash).

In *outbox* mode the events are written **inside** the transaction that changed the data,
through the same connection, so they commit or roll back together with it
(at-least-once across a crash, once a relay forwards the rows). The capture library calls
:meth:`TransactionalWriter.write` in ``before_commit`` of the outermost transaction, after a
final ``flush()`` -- or :meth:`EncodedTransactionalWriter.write_encoded` with the events'
wire texts (:func:`encode_changes`) when the writer has it. An exception raised by the
writer propagates and makes the commit fail: data without its audit trail is never committed
in this mode.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sqlalchemy import Connection

from sqla_audit.events import (
    ChangeEvent,
    new_event_id,
    new_event_id_texts,
    new_event_ids,
    transaction_text,
    utcnow,
)
from sqla_audit.publishers.base import ErrorHook, Publisher

if TYPE_CHECKING:
    from sqla_audit.capture import RowChange
    from sqla_audit.signing import EventSigner

logger = logging.getLogger(__name__)


@runtime_checkable
class TransactionalWriter(Protocol):
    """Writes the events of one transaction through that transaction's connection."""

    def write(self, connection: Connection, events: Sequence[ChangeEvent]) -> None:
        """Persist ``events`` (in ``sequence`` order) using ``connection``; may raise."""
        ...


@dataclass(frozen=True, slots=True)
class EncodedEvents:
    """The events of one transaction as wire texts, in ``sequence`` order, with what an
    outbox row names of each: ``texts[i]`` is the JSON of the event whose id is
    ``event_ids[i]``, of transaction ``transaction_ids[i]``, about ``tables[i]`` /
    ``record_ids[i]``. Made by :func:`encode_changes` (or :meth:`of_events`)."""

    event_ids: Sequence[str]
    transaction_ids: Sequence[str]
    tables: Sequence[str]
    record_ids: Sequence[str]
    texts: Sequence[str]

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def of_events(cls, events: Sequence[ChangeEvent]) -> EncodedEvents:
        """The envelopes' texts (:meth:`ChangeEvent.to_json`), in ``sequence`` order."""
        ordered = sorted(events, key=lambda e: e.sequence) if len(events) > 1 else events
        return cls(
            event_ids=[str(event.event_id) for event in ordered],
            transaction_ids=[str(event.transaction_id) for event in ordered],
            tables=[event.table for event in ordered],
            record_ids=[event.record_id for event in ordered],
            texts=[event.to_json() for event in ordered],
        )


@runtime_checkable
class EncodedTransactionalWriter(TransactionalWriter, Protocol):
    """A :class:`TransactionalWriter` that also takes a transaction already encoded.

    Capture prefers :meth:`write_encoded` when the writer has it: the wire texts are then
    written straight from the captured changes (:func:`encode_changes`), without building
    a :class:`ChangeEvent` per change first -- the same bytes, less work inside the
    application's transaction. :meth:`TransactionalWriter.write` stays the entry point of
    writers that only have it.
    """

    def write_encoded(self, connection: Connection, events: EncodedEvents) -> None:
        """Persist ``events`` (already in ``sequence`` order) using ``connection``; may raise."""
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


def build_events(
    changes: Sequence[RowChange],
    *,
    service: str,
    committed_at: dt.datetime | None = None,
    transaction_id: uuid.UUID | None = None,
    signer: EventSigner | None = None,
) -> list[ChangeEvent]:
    """The envelopes of one committed transaction.

    With a ``signer`` every event also carries ``transaction_event_count`` (the number of
    events of the transaction) and its ``signature`` (see :mod:`sqla_audit.signing`).

    Every event gets its own time-ordered ``event_id``; all share one ``transaction_id``
    (a version 7 UUID unless given) and ``committed_at``; ``sequence`` numbers them
    0..n-1 in the order of ``changes``.

    Ownership: the ``primary_key``, ``before`` and ``after`` mappings of each change are
    handed over to its event, not copied. Capture builds them fresh for each change and
    nothing touches them once the change is buffered, so a copy here would only cost time
    on the application's thread (right after its commit). ``metadata`` is copied: it is
    usually the context's mapping, shared by every change made under that context.
    """
    committed = committed_at or utcnow()
    txn = transaction_id or new_event_id()
    event_ids = new_event_ids(len(changes))
    count = None if signer is None else len(changes)
    events = [
        ChangeEvent(
            event_id=event_ids[sequence],
            occurred_at=change.occurred_at,
            committed_at=committed,
            service=service,
            table=change.table,
            record_id=change.record_id,
            previous_record_id=change.previous_record_id,
            primary_key=change.primary_key,
            operation=change.operation,
            before=change.before,
            after=change.after,
            changed_columns=change.changed_columns,
            masked_columns=change.masked_columns,
            actor=change.actor,
            request_id=change.request_id,
            transaction_id=txn,
            sequence=sequence,
            metadata=dict(change.metadata),
            transaction_event_count=count,
        )
        for sequence, change in enumerate(changes)
    ]
    return events if signer is None else signer.sign(events)


def encode_changes(
    changes: Sequence[RowChange],
    *,
    service: str,
    committed_at: dt.datetime | None = None,
    transaction_id: uuid.UUID | None = None,
    signer: EventSigner | None = None,
) -> EncodedEvents:
    """The wire texts of the envelopes :func:`build_events` would make of ``changes`` (same
    arguments, same bytes), written straight from the changes when nothing needs the
    envelopes as objects (no ``signer``: signing works on the envelope). The fields the
    events share are encoded once, and so is an actor or metadata mapping shared by
    consecutive changes."""
    if signer is not None or not changes:
        return EncodedEvents.of_events(
            build_events(
                changes,
                service=service,
                committed_at=committed_at,
                transaction_id=transaction_id,
                signer=signer,
            )
        )
    committed = committed_at or utcnow()
    txn = str(transaction_id or new_event_id())
    event_ids = new_event_id_texts(len(changes))
    text = transaction_text(committed, service, txn)
    return EncodedEvents(
        event_ids=event_ids,
        transaction_ids=[txn] * len(changes),
        tables=[change.table for change in changes],
        record_ids=[change.record_id for change in changes],
        texts=text.texts(changes, event_ids),
    )


#: A publisher's ``publish_deferred(count, build)``: queue ``count`` events that ``build()``
#: will make on the publisher's own thread; never blocks, never raises.
PublishDeferred = Callable[[int, Callable[[], Sequence[ChangeEvent]]], None]


def publish_changes_deferred(
    publish_deferred: PublishDeferred,
    changes: Sequence[RowChange],
    *,
    on_error: ErrorHook | None,
    **build_options: Any,
) -> None:
    """Hand a committed transaction's changes to a publisher's ``publish_deferred``, which runs
    ``build_events(changes, **build_options)`` on its own thread; failures are reported,
    never raised.

    Everything the envelopes take from the application's context (actor, request id,
    metadata, the metadata hook's output) was captured with each change during the flush;
    the commit time is taken here, on the application's thread, right after the commit.
    Event ids and the transaction id are made when the envelopes are built.
    """
    committed_at = utcnow()

    def build() -> list[ChangeEvent]:
        try:
            return build_events(changes, committed_at=committed_at, **build_options)
        except Exception as exc:  # noqa: BLE001 -- reported like a failure at the commit
            report_failure(exc, (), on_error)
            return []

    try:
        publish_deferred(len(changes), build)
    except Exception as exc:  # noqa: BLE001 -- nothing raises into the application after commit
        report_failure(exc, (), on_error)


def report_failure(
    exc: BaseException,
    events: Sequence[ChangeEvent],
    on_error: ErrorHook | None,
    *,
    logged: bool = False,
) -> None:
    """Log a delivery or capture failure and tell ``on_error``; never raises.

    ``logged=True`` skips the log line when the caller has already logged the failure
    in its own words (a retry loop's warning, say).
    """
    if not logged:
        logger.error("sqla-audit: %s (%d event(s) concerned)", exc, len(events), exc_info=exc)
    if on_error is None:
        return
    try:
        on_error(exc, events)
    except Exception:
        logger.exception("sqla-audit: the on_error hook raised")


def publish_safely(
    publisher: Publisher, events: Sequence[ChangeEvent], on_error: ErrorHook | None
) -> bool:
    """Hand ``events`` to ``publisher``; a failure is reported, never raised. True if accepted."""
    if not events:
        return True
    try:
        publisher.publish(events)
    except Exception as exc:  # noqa: BLE001 -- nothing raises into the application after commit
        report_failure(exc, events, on_error)
        return False
    return True


__all__ = [
    "EncodedEvents",
    "EncodedTransactionalWriter",
    "InMemoryTransactionalWriter",
    "PublishDeferred",
    "TransactionalWriter",
    "build_events",
    "encode_changes",
    "publish_changes_deferred",
    "publish_safely",
    "report_failure",
]
