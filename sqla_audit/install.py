"""``install_audit`` / ``uninstall_audit``: attach capture to a session factory, and detach it.

Following the convention of instrumentors (OpenTelemetry's SQLAlchemy instrumentor,
Continuum's ``make_versioned``/``remove_versioning``), installation is a pair of idempotent
calls and every listener added is recorded, so uninstalling removes exactly those.

Targets. Session events are registered where they affect only the sessions the caller
named:

* a ``sessionmaker`` -- on the maker (SQLAlchemy listens on the maker's own class);
* a ``scoped_session`` -- on its ``sessionmaker`` (or Session class);
* a ``Session`` subclass (SQLModel's ``Session`` included) or ``Session`` itself -- on
  that class, so on every session of that class and its subclasses. Passing the global
  ``Session`` audits every session of the process, which is what was asked for;
* an ``async_sessionmaker`` (or ``async_scoped_session``) -- its ``sync_session_class`` is
  replaced by a private subclass that carries the listeners, so other makers sharing the
  same class are untouched; uninstalling restores the original class. Sessions already
  created keep the class they were created with.

Delivery. With ``publisher=`` (direct mode) the events of a transaction are built and
handed to the publisher in ``after_commit`` of the outermost transaction; nothing there
raises into the application (failures are logged and passed to ``on_error``), and a crash
between the commit and the publish loses those events. With ``outbox=`` (outbox mode) the
events are built in ``before_commit`` of the outermost transaction, after a final
``flush()``, and written by the :class:`~sqla_audit.delivery.TransactionalWriter` through
the transaction's connection: they commit or roll back with the data, and an exception
from the writer propagates and fails the commit.

Bulk statements. A ``do_orm_execute`` listener captures ORM-enabled ``insert()``,
``update()`` and ``delete()`` statements run through ``Session.execute`` (see
:mod:`sqla_audit.bulk`); their changes join the same per-transaction buffer.

Capture errors. Configuration errors (a bad ``__audit__``) and SQLAlchemy errors always
propagate. Other failures inside the flush listeners (a value the codec refuses under
``unknown_types="error"``, a bug) are reported and skipped in direct mode -- auditing must
not break the application -- and propagate in outbox mode, where a missing audit record is
not acceptable. The same holds for a bulk statement: in direct mode it still runs (once) and
its result is returned; an exception of the statement itself always propagates.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Result
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, scoped_session, sessionmaker
from sqlalchemy.orm import registry as orm_registry
from sqlalchemy.orm.unitofwork import UOWTransaction

from sqla_audit.buffer import TransactionBuffer
from sqla_audit.bulk import BulkCapturer, Call
from sqla_audit.capture import Capturer, Planner
from sqla_audit.changes import RowChange
from sqla_audit.config import DEFAULT_MAX_BULK_ROWS, AuditConfig, MetadataHook, UnknownTypes
from sqla_audit.delivery import (
    TransactionalWriter,
    build_events,
    encode_changes,
    publish_changes_deferred,
    publish_safely,
    report_failure,
)
from sqla_audit.errors import ConfigurationError
from sqla_audit.publishers.base import ErrorHook, Publisher
from sqla_audit.signing import EventSigner

logger = logging.getLogger(__name__)

_INFO_PREFIX: Final = "sqla_audit.buffer."

_lock = threading.RLock()
_installed: dict[int, Installation] = {}


class Installation:
    """Audit attached to one target: its configuration, listeners and delivery."""

    def __init__(
        self,
        target: Any,
        config: AuditConfig,
        *,
        publisher: Publisher | None,
        outbox: TransactionalWriter | None,
    ) -> None:
        self.target = target
        self.config = config
        self.publisher = publisher
        self.outbox = outbox
        # Optional capabilities, resolved once here rather than probed at every commit: a
        # publisher that builds the envelopes on its own thread (SNSPublisher), an outbox
        # writer that takes the transaction's texts (OutboxWriter).
        self._publish_deferred = getattr(publisher, "publish_deferred", None)
        self._write_encoded = getattr(outbox, "write_encoded", None)
        self.planner = Planner(config)
        self.capturer = Capturer(
            self.planner, self.record, self._report_capture_error, sink_all=self.record_all
        )
        self.bulk = BulkCapturer(self.capturer, self.record_all)
        self._info_key = f"{_INFO_PREFIX}{id(self)}"
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = []
        self._restore: Callable[[], None] | None = None
        self.active = False

    # -- public helpers ----------------------------------------------------------------

    def buffer(self, session: Session, *, create: bool = True) -> TransactionBuffer | None:
        """The per-session buffer of this installation (``None`` if absent and not created)."""
        buffer: TransactionBuffer | None = session.info.get(self._info_key)
        if buffer is None and create:
            buffer = session.info[self._info_key] = TransactionBuffer()
        return buffer

    def record(self, session: Session, change: RowChange) -> None:
        """Add a captured change to the current transaction of ``session``.

        The flush listeners use it; so can any other capture path (bulk statements), which
        then gets the same savepoint handling and coalescing.
        """
        self.record_all(session, (change,))

    def record_all(self, session: Session, changes: Sequence[RowChange]) -> None:
        """:meth:`record` for several changes in order (the changes of one flush)."""
        if not changes:
            return
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is None:  # pragma: no cover -- a flush always runs in a transaction
            raise RuntimeError("a change was captured outside a transaction")
        buffer = self.buffer(session)
        assert buffer is not None
        buffer.add_all(transaction, changes)

    # -- wiring ------------------------------------------------------------------------

    def _listen(self, target: Any, name: str, fn: Callable[..., Any]) -> None:
        event.listen(target, name, fn)
        self._listeners.append((target, name, fn))

    def attach(self) -> None:
        listen_target = self._resolve_target()
        self._listen(listen_target, "before_flush", self._before_flush)
        self._listen(listen_target, "after_flush", self._after_flush)
        self._listen(listen_target, "after_flush_postexec", self._after_flush_postexec)
        self._listen(listen_target, "after_commit", self._after_commit)
        self._listen(listen_target, "after_transaction_end", self._after_transaction_end)
        self._listen(listen_target, "do_orm_execute", self._do_orm_execute)
        if self.outbox is not None:
            self._listen(listen_target, "before_commit", self._before_commit)
        self.active = True

    def detach(self) -> None:
        for target, name, fn in reversed(self._listeners):
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        self._listeners.clear()
        if self._restore is not None:
            self._restore()
            self._restore = None
        self.active = False

    def _resolve_target(self) -> Any:
        target = self.target
        # sqlalchemy.ext.asyncio needs greenlet, which a synchronous application may not
        # have: look at it only if it is already imported -- an async target implies it is.
        asyncio_ext: Any = sys.modules.get("sqlalchemy.ext.asyncio")
        if asyncio_ext is not None:
            if isinstance(target, asyncio_ext.async_scoped_session):
                target = target.session_factory
            if isinstance(target, asyncio_ext.async_sessionmaker):
                return self._wrap_async_maker(target)
        if isinstance(target, sessionmaker):
            return target
        if isinstance(target, scoped_session):
            factory: Any = target.session_factory
            if isinstance(factory, sessionmaker) or (
                isinstance(factory, type) and issubclass(factory, Session)
            ):
                return target
            raise ConfigurationError(
                "a scoped_session can be audited only when its factory is a sessionmaker "
                f"or a Session class, not {factory!r}"
            )
        if isinstance(target, type) and issubclass(target, Session):
            return target
        if isinstance(target, Session):
            raise ConfigurationError(
                "install_audit takes a session factory or Session class, not a Session "
                "instance; pass the sessionmaker that created it"
            )
        raise ConfigurationError(
            "install_audit target must be a sessionmaker, async_sessionmaker, "
            f"scoped_session or Session class, not {type(target).__name__}"
        )

    def _wrap_async_maker(self, maker: Any) -> type[Session]:
        had_own = "sync_session_class" in maker.kw
        configured: type[Session] | None = maker.kw.get("sync_session_class")
        original: type[Session] = (
            configured if configured is not None else maker.class_.sync_session_class
        )
        audited = type(f"Audited{original.__name__}", (original,), {"__module__": __name__})
        maker.configure(sync_session_class=audited)

        def restore() -> None:
            if maker.kw.get("sync_session_class") is audited:
                if had_own:
                    maker.kw["sync_session_class"] = original
                else:
                    del maker.kw["sync_session_class"]

        self._restore = restore
        return audited

    # -- failure handling --------------------------------------------------------------

    def _report_capture_error(self, exc: BaseException) -> None:
        report_failure(exc, (), self.config.on_error)

    def _must_propagate(self, exc: Exception) -> bool:
        """Configuration and SQLAlchemy errors always reach the application; other capture
        failures do only in outbox mode (direct mode reports them and carries on)."""
        return self.outbox is not None or isinstance(
            exc, (ConfigurationError, sa_exc.SQLAlchemyError)
        )

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a capture step; keep the application running if auditing fails (direct mode)."""
        try:
            fn(*args)
        except Exception as exc:
            if self._must_propagate(exc):
                raise
            self._report_capture_error(exc)

    # -- listeners ---------------------------------------------------------------------

    def _before_flush(self, session: Session, flush_context: UOWTransaction, _: Any) -> None:
        self._guard(self.capturer.before_flush, session, flush_context)

    def _after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        self._guard(self.capturer.after_flush, session, flush_context)

    def _after_flush_postexec(self, session: Session, flush_context: UOWTransaction) -> None:
        self._guard(self.capturer.after_flush_postexec, session, flush_context)

    def _do_orm_execute(self, state: ORMExecuteState) -> Result[Any] | None:
        """Run an audited bulk statement ourselves and capture the rows it changes.

        Returns ``None`` (SQLAlchemy runs the statement) for anything not audited. When
        capture fails in direct mode, the statement still runs exactly once.
        """
        plan = self.bulk.plan_for(state)
        if plan is None:
            return None
        call = Call(state)
        try:
            return self.bulk.capture(call, plan)
        except Exception as exc:
            if call.failed or self._must_propagate(exc):
                raise
            self._report_capture_error(exc)
            return call.result if call.invoked else None

    def _before_commit(self, session: Session) -> None:
        """Outbox mode: write the transaction's events through its own connection."""
        assert self.outbox is not None
        if session.get_nested_transaction() is not None:
            # A savepoint is being released, or the root commits with savepoints still
            # open (they are committed right after this event); the write happens at the
            # outermost commit without open savepoints.
            return
        session.flush()
        root = session.get_transaction()
        buffer = self.buffer(session, create=False)
        if root is None or buffer is None:
            return
        changes = buffer.drain(root)
        if not changes:
            return
        write_encoded = self._write_encoded
        if write_encoded is not None:  # an EncodedTransactionalWriter: texts, no envelopes
            encoded = encode_changes(
                changes, service=self.config.service, signer=self.config.signing
            )
            write_encoded(session.connection(), encoded)
            return
        events = build_events(changes, service=self.config.service, signer=self.config.signing)
        self.outbox.write(session.connection(), events)

    def _after_commit(self, session: Session) -> None:
        buffer = self.buffer(session, create=False)
        if buffer is None:
            return
        nested = session.get_nested_transaction()
        if nested is not None:
            buffer.mark_committed(nested)
            return
        root = session.get_transaction()
        if root is None:  # pragma: no cover -- after_commit always has its transaction
            return
        changes = buffer.drain(root)
        if not changes:
            return
        publish_deferred = self._publish_deferred
        if publish_deferred is not None:
            # The publisher builds the envelopes on its own thread (SNSPublisher).
            publish_changes_deferred(
                publish_deferred,
                changes,
                on_error=self.config.on_error,
                service=self.config.service,
                signer=self.config.signing,
            )
            return
        try:
            events = build_events(changes, service=self.config.service, signer=self.config.signing)
        except Exception as exc:  # noqa: BLE001 -- nothing raises after the commit
            report_failure(exc, (), self.config.on_error)
            return
        if self.publisher is not None:
            publish_safely(self.publisher, events, self.config.on_error)
            return
        report_failure(
            ConfigurationError(
                "outbox mode: changes were captured after the outbox write (a savepoint "
                "committed together with its outer transaction, or a before_commit hook "
                "modified objects after the audit flush); they were not written"
            ),
            events,
            self.config.on_error,
        )

    def _after_transaction_end(self, session: Session, transaction: Any) -> None:
        buffer = self.buffer(session, create=False)
        if buffer is not None:
            buffer.end(transaction)


# --------------------------------------------------------------------------- public API


def _collect_mappers(models: Iterable[Any]) -> list[Mapper[Any]]:
    mappers: list[Mapper[Any]] = []
    for model in models:
        if isinstance(model, orm_registry):
            mappers.extend(model.mappers)
            continue
        registry = getattr(model, "registry", None)
        mapper = sa.inspect(model, raiseerr=False)
        if isinstance(mapper, Mapper):
            mappers.append(mapper)
        elif isinstance(registry, orm_registry):
            mappers.extend(registry.mappers)
        else:
            raise ConfigurationError(
                f"models= takes mapped classes, declarative bases or registries, not {model!r}"
            )
    return mappers


def install_audit(
    target: Any,
    *,
    publisher: Publisher | None = None,
    outbox: TransactionalWriter | None = None,
    service: str | None = None,
    include_tables: Iterable[str] | None = None,
    exclude_tables: Iterable[str] = (),
    unknown_types: UnknownTypes = "repr",
    metadata_hook: MetadataHook | None = None,
    on_error: ErrorHook | None = None,
    models: Iterable[Any] | None = None,
    config: AuditConfig | None = None,
    max_bulk_rows: int | None = DEFAULT_MAX_BULK_ROWS,
    signing: EventSigner | None = None,
) -> Installation:
    """Capture every ORM change made through ``target`` and deliver it after commit.

    Exactly one of ``publisher`` (direct mode) and ``outbox`` (outbox mode) is required.
    Either pass a ready :class:`AuditConfig` as ``config`` or the individual settings
    (``service`` is then required). ``models`` (mapped classes, declarative bases or
    registries) are planned right away so their ``__audit__`` options and column types are
    validated here rather than on the first flush. ``max_bulk_rows`` caps the rows one bulk
    statement is itemized for (``None``: no cap); see :mod:`sqla_audit.bulk`. ``signing``
    signs every event (:class:`~sqla_audit.signing.EventSigner`, see :mod:`sqla_audit.signing`).

    Calling it again with the same arguments returns the existing installation; calling
    it with different ones raises :class:`ConfigurationError` (uninstall first).
    """
    if (publisher is None) == (outbox is None):
        raise ConfigurationError("pass exactly one of publisher= (direct) or outbox= (outbox)")
    if publisher is not None and not isinstance(publisher, Publisher):
        raise ConfigurationError(
            f"publisher must implement publish/flush/close, got {type(publisher).__name__}"
        )
    if outbox is not None and not isinstance(outbox, TransactionalWriter):
        raise ConfigurationError(
            f"outbox must implement write(connection, events), got {type(outbox).__name__}"
        )
    individual: Mapping[str, Any] = {
        "service": service,
        "include_tables": include_tables,
        "exclude_tables": exclude_tables or None,
        "metadata_hook": metadata_hook,
        "on_error": on_error,
    }
    if config is not None:
        given = sorted(name for name, value in individual.items() if value is not None)
        if (
            given
            or unknown_types != "repr"
            or max_bulk_rows != DEFAULT_MAX_BULK_ROWS
            or signing is not None
        ):
            raise ConfigurationError(
                f"pass either config= or individual settings, not both (got {given})"
            )
    else:
        config = AuditConfig(
            service=service or "",
            include_tables=None if include_tables is None else frozenset(include_tables),
            exclude_tables=frozenset(exclude_tables),
            unknown_types=unknown_types,
            metadata_hook=metadata_hook,
            on_error=on_error,
            max_bulk_rows=max_bulk_rows,
            signing=signing,
        )
    with _lock:
        existing = _installed.get(id(target))
        if existing is not None and existing.target is target:
            if (
                existing.config == config
                and existing.publisher is publisher
                and existing.outbox is outbox
            ):
                return existing
            raise ConfigurationError(
                "audit is already installed on this target with other settings; "
                "call uninstall_audit() first"
            )
        installation = Installation(target, config, publisher=publisher, outbox=outbox)
        if models is not None:
            sa.orm.configure_mappers()
            installation.planner.validate(_collect_mappers(models))
        installation.attach()
        _installed[id(target)] = installation
        return installation


def uninstall_audit(target: Any) -> bool:
    """Remove every listener :func:`install_audit` added for ``target``.

    Returns True when something was installed. Idempotent. The publisher is not closed
    (it belongs to the caller); changes buffered by transactions still open are dropped.
    """
    with _lock:
        installation = _installed.get(id(target))
        if installation is None or installation.target is not target:
            return False
        del _installed[id(target)]
        installation.detach()
        return True


def installation_for(target: Any) -> Installation | None:
    """The active installation on ``target``, if any."""
    installation = _installed.get(id(target))
    if installation is not None and installation.target is target:
        return installation
    return None


def _covers(target: Any, session: Session) -> bool:
    if isinstance(target, scoped_session):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        target = target.class_
    return isinstance(target, type) and isinstance(session, target)


def installation_for_session(session: Session) -> Installation | None:
    """The active installation whose listeners see ``session`` (installed on its
    ``sessionmaker``, ``scoped_session`` or ``Session`` class), if any."""
    with _lock:
        installations = list(_installed.values())
    for installation in installations:
        if installation.active and _covers(installation.target, session):
            return installation
    return None


__all__ = [
    "Installation",
    "install_audit",
    "installation_for",
    "installation_for_session",
    "uninstall_audit",
]
