"""Re-checking the stored trail against the producers' signatures (``sqla-audit verify``).

For every record a question returns (one record's history, an actor's window, a
transaction, a table's window), :class:`StoreVerifier`:

1. rebuilds the event that was signed from the record and its seal (:func:`rebuild_event`:
   the record keeps every envelope field but ``primary_key`` and ``changed_columns``, which
   the seal keeps) and checks the HMAC under the verifying keys
   (:func:`consumer.verification.check_signature`) -- any edit of a stored value, actor,
   time, id, metadata or of the seal makes it fail;
2. recomputes the field-level changes from the rebuilt event and compares them with the
   stored ``changes`` (what ``history`` shows), so an edit of the displayed diff alone is
   found too;
3. for every transaction it saw, reads the whole transaction (the by-transaction view) and
   compares the records found with the signed ``transaction_event_count``: a missing
   sequence number is a transaction with missing events.

Findings (:class:`Finding`) are ``modified`` (signature or changes do not match, or the stored
record cannot be read back), ``unknown_key``, ``bad_algorithm``, ``unsigned`` (a record
without a seal) and ``missing_events``. Departure records (a key change's record under the
old id, see :mod:`consumer.records`) are derived by the consumer, not signed: each must be
exactly what its signed key-change event derives (else ``modified``) and is counted in
:attr:`VerifyReport.derived`. What this can and cannot detect is in
docs/guarantees.md, *Signed events*.

A store takes part through :class:`SealReader`: ``seals(event_ids)``, which the memory,
SQLite and Cassandra stores implement.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

from consumer.differ import departure_for_event, diff_event
from consumer.records import MOVE_EVENT_KEY, AuditRecord, record_to_row
from consumer.seal import Seal
from consumer.sinks.base import AuditStore, Page, ViewDisabled
from consumer.verification import check_signature
from sqla_audit.errors import ConfigurationError, DecodeError
from sqla_audit.events import SCHEMA_VERSION, ChangeEvent, format_timestamp
from sqla_audit.signing import EventSignature, Keyring, event_content

FindingKind: TypeAlias = Literal[
    "modified", "unknown_key", "bad_algorithm", "unsigned", "missing_events"
]

#: Records read per page while walking a window.
PAGE_SIZE: Final = 500


@runtime_checkable
class SealReader(Protocol):
    """A store that keeps the seals of signed records."""

    def seals(self, event_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Seal]:
        """The seals of the signed records among ``event_ids``."""
        ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its kind, where, and a one-line explanation."""

    kind: FindingKind
    detail: str
    service: str | None = None
    table: str | None = None
    record_id: str | None = None
    event_id: uuid.UUID | None = None
    transaction_id: uuid.UUID | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "service": self.service,
            "table": self.table,
            "record_id": self.record_id,
            "event_id": None if self.event_id is None else str(self.event_id),
            "transaction_id": None if self.transaction_id is None else str(self.transaction_id),
            "detail": self.detail,
        }


@dataclass(slots=True)
class VerifyReport:
    """What one verification found."""

    #: records examined (departures included)
    checked: int = 0
    #: records whose signature and changes verified
    valid: int = 0
    #: departure records (derived by the consumer, not signed)
    derived: int = 0
    #: transactions whose completeness was checked
    transactions: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: transactions that could not be checked for completeness, and why
    notes: list[str] = field(default_factory=list)

    def kinds(self, *, allow_unsigned: bool = False) -> list[FindingKind]:
        return [f.kind for f in self.findings if not (allow_unsigned and f.kind == "unsigned")]

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "valid": self.valid,
            "derived": self.derived,
            "transactions": self.transactions,
            "findings": [finding.to_dict() for finding in self.findings],
            "notes": list(self.notes),
        }


def rebuild_event(record: AuditRecord, seal: Seal) -> ChangeEvent:
    """The signed event a record and its seal stand for (strictly decoded, so a stored
    value the wire contract refuses raises :class:`DecodeError`)."""
    envelope: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": str(record.event_id),
        "occurred_at": format_timestamp(record.occurred_at),
        "committed_at": format_timestamp(record.event_time),
        "service": record.service,
        "table": record.table,
        "record_id": record.record_id,
        "previous_record_id": record.previous_record_id,
        "primary_key": dict(seal.primary_key),
        "operation": record.operation.value,
        "before": None if record.before is None else dict(record.before),
        "after": None if record.after is None else dict(record.after),
        "changed_columns": list(seal.changed_columns),
        "masked_columns": list(record.masked_columns),
        "actor": None
        if record.actor_id is None
        else {"id": record.actor_id, "attributes": dict(record.actor_attributes)},
        "request_id": record.request_id,
        "transaction_id": str(record.transaction_id),
        "sequence": record.sequence,
        "metadata": dict(record.metadata),
        "transaction_event_count": seal.event_count,
    }
    return ChangeEvent.from_dict(envelope)


def _plain_changes(changes: Any) -> dict[str, tuple[Any, Any]]:
    return {name: (change.old, change.new) for name, change in changes.items()}


def check_record(record: AuditRecord, seal: Seal | None, keyring: Keyring) -> Finding | None:
    """The finding about one stored record, ``None`` when it verifies."""

    def finding(kind: FindingKind, detail: str) -> Finding:
        return Finding(
            kind,
            detail,
            record.service,
            record.table,
            record.record_id,
            record.event_id,
            record.transaction_id,
        )

    if seal is None:
        return finding("unsigned", "no signature is stored for this record")
    try:
        event = rebuild_event(record, seal)
    except DecodeError as exc:
        return finding("modified", f"the stored record is not a valid event: {exc}")
    outcome, reason = check_signature(
        EventSignature(seal.algorithm, seal.key_id, seal.mac), event_content(event), keyring
    )
    if outcome == "invalid":
        return finding("modified", reason)
    if outcome == "unknown_key":
        return finding("unknown_key", reason)
    if outcome == "bad_algorithm":
        return finding("bad_algorithm", reason)
    expected = _plain_changes(diff_event(event))
    if _plain_changes(record.changes) != expected:
        return finding(
            "modified",
            "the stored changes differ from those of the signed before and after images",
        )
    return None


class StoreVerifier:
    """Verifies what a store holds against the verifying keys (module docstring)."""

    def __init__(self, store: AuditStore, keyring: Keyring) -> None:
        if not isinstance(store, SealReader):
            raise ConfigurationError(
                f"the {type(store).__name__} store keeps no seals; it cannot be verified"
            )
        self._store = store
        self._seals: SealReader = store
        self._keyring = keyring

    # -- the questions ---------------------------------------------------------------------

    def record(
        self,
        service: str,
        table: str,
        record_id: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> VerifyReport:
        """One record's history (from ``since`` to ``until``, inclusive)."""
        return self.verify(
            _pages(
                lambda page: self._store.history(
                    service,
                    table,
                    record_id,
                    since=since,
                    until=until,
                    limit=PAGE_SIZE,
                    page=page,
                )
            )
        )

    def actor(
        self,
        actor_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        service: str | None = None,
    ) -> VerifyReport:
        """What one actor changed in a window."""
        return self.verify(
            _pages(
                lambda page: self._store.by_actor(
                    actor_id, since=since, until=until, limit=PAGE_SIZE, page=page, service=service
                )
            )
        )

    def transaction(self, transaction_id: uuid.UUID) -> VerifyReport:
        """One transaction."""
        return self.verify(self._store.by_transaction(transaction_id))

    def table(
        self, service: str, table: str, *, since: dt.datetime, until: dt.datetime | None = None
    ) -> VerifyReport:
        """What changed in one table of one service in a window."""
        return self.verify(
            _pages(
                lambda page: self._store.by_table(
                    service, table, since=since, until=until, limit=PAGE_SIZE, page=page
                )
            )
        )

    # -- the checks ------------------------------------------------------------------------

    def verify(self, records: Iterable[AuditRecord]) -> VerifyReport:
        """Check ``records`` and the completeness of every transaction among them."""
        report = VerifyReport()
        counts: dict[uuid.UUID, int] = {}
        batch: list[AuditRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) >= PAGE_SIZE:
                self._check(batch, report, counts)
                batch = []
        self._check(batch, report, counts)
        for transaction_id, count in counts.items():
            self._check_transaction(transaction_id, count, report)
        return report

    def _check(
        self, batch: Sequence[AuditRecord], report: VerifyReport, counts: dict[uuid.UUID, int]
    ) -> None:
        if not batch:
            return
        real = [record for record in batch if not record.is_departure]
        report.checked += len(batch)
        for record in batch:
            if record.is_departure:
                problem = self._check_departure(record)
                if problem is None:
                    report.derived += 1
                else:
                    report.findings.append(problem)
        seals = self._seals.seals(record.event_id for record in real)
        for record in real:
            seal = seals.get(record.event_id)
            problem = check_record(record, seal, self._keyring)
            if problem is not None:
                report.findings.append(problem)
                continue
            report.valid += 1
            assert seal is not None
            counts.setdefault(record.transaction_id, seal.event_count)

    def _check_departure(self, record: AuditRecord) -> Finding | None:
        """A departure record must be exactly what its signed key-change event derives (a
        record merely shaped like one is not let through as derived)."""
        target = record.moved_to
        source = record.metadata.get(MOVE_EVENT_KEY)
        assert target is not None  # is_departure
        assert isinstance(source, str)
        original_id = uuid.UUID(source)
        page = self._store.history(
            record.service,
            record.table,
            target,
            since=record.event_time,
            until=record.event_time,
            limit=100,
        )
        original = next((r for r in page.items if r.event_id == original_id), None)
        seal = None if original is None else self._seals.seals([original_id]).get(original_id)
        expected = None
        if (
            original is not None
            and seal is not None
            and check_record(original, seal, self._keyring) is None
        ):
            expected = departure_for_event(rebuild_event(original, seal))
        if expected is not None and record_to_row(expected) == record_to_row(record):
            return None
        return Finding(
            "modified",
            f"a key-change record (moved to {target!r}) that its signed event "
            f"{original_id} does not derive",
            record.service,
            record.table,
            record.record_id,
            record.event_id,
            record.transaction_id,
        )

    def _check_transaction(
        self, transaction_id: uuid.UUID, count: int, report: VerifyReport
    ) -> None:
        try:
            records = self._store.by_transaction(transaction_id)
        except ViewDisabled:
            report.notes.append(
                f"transaction {transaction_id}: not checked for missing events (the "
                "transaction view is disabled)"
            )
            return
        report.transactions += 1
        present = {r.sequence for r in records if not r.is_departure}
        missing = sorted(set(range(count)) - present)
        if missing:
            shown = ", ".join(str(n) for n in missing[:20]) + (" ..." if len(missing) > 20 else "")
            report.findings.append(
                Finding(
                    "missing_events",
                    f"{count - len(missing)} of {count} signed events are stored; missing "
                    f"sequence number(s) {shown}",
                    transaction_id=transaction_id,
                )
            )


def _pages(read: Callable[[str | None], Page[AuditRecord]]) -> Iterator[AuditRecord]:
    """Every record of a paged read."""
    token: str | None = None
    while True:
        page = read(token)
        yield from page.items
        token = page.next_page
        if token is None:
            return


__all__ = [
    "PAGE_SIZE",
    "Finding",
    "FindingKind",
    "SealReader",
    "StoreVerifier",
    "VerifyReport",
    "check_record",
    "rebuild_event",
]
