"""sqla-audit: capture every SQLAlchemy ORM change with its actor, publish after commit.

The capture API (``install_audit``, ``audit_context``...) is imported on first use, so
code that only reads events (the consumer) does not pay for importing the ORM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sqla_audit.errors import (
    AuditError,
    ConfigurationError,
    PermanentError,
    RetryableError,
)
from sqla_audit.events import SCHEMA_VERSION, Actor, ChangeEvent, Operation

if TYPE_CHECKING:
    from sqla_audit.capture import RowChange
    from sqla_audit.config import AuditConfig
    from sqla_audit.context import (
        audit_context,
        current_actor,
        current_request_id,
        outgoing_headers,
    )
    from sqla_audit.delivery import TransactionalWriter
    from sqla_audit.install import Installation, install_audit, uninstall_audit
    from sqla_audit.middleware import AuditASGIMiddleware, AuditWSGIMiddleware
    from sqla_audit.publishers.memory import InMemoryPublisher
    from sqla_audit.shutdown import (
        flush_publishers,
        install_signal_flush,
        uninstall_signal_flush,
    )

__version__ = "0.1.0"

_LAZY = {
    "AuditASGIMiddleware": "sqla_audit.middleware",
    "AuditConfig": "sqla_audit.config",
    "AuditWSGIMiddleware": "sqla_audit.middleware",
    "InMemoryPublisher": "sqla_audit.publishers.memory",
    "Installation": "sqla_audit.install",
    "RowChange": "sqla_audit.capture",
    "TransactionalWriter": "sqla_audit.delivery",
    "audit_context": "sqla_audit.context",
    "current_actor": "sqla_audit.context",
    "current_request_id": "sqla_audit.context",
    "flush_publishers": "sqla_audit.shutdown",
    "install_audit": "sqla_audit.install",
    "install_signal_flush": "sqla_audit.shutdown",
    "outgoing_headers": "sqla_audit.context",
    "uninstall_audit": "sqla_audit.install",
    "uninstall_signal_flush": "sqla_audit.shutdown",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sqla_audit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "SCHEMA_VERSION",
    "Actor",
    "AuditASGIMiddleware",
    "AuditConfig",
    "AuditError",
    "AuditWSGIMiddleware",
    "ChangeEvent",
    "ConfigurationError",
    "InMemoryPublisher",
    "Installation",
    "Operation",
    "PermanentError",
    "RetryableError",
    "RowChange",
    "TransactionalWriter",
    "__version__",
    "audit_context",
    "current_actor",
    "current_request_id",
    "flush_publishers",
    "install_audit",
    "install_signal_flush",
    "outgoing_headers",
    "uninstall_audit",
    "uninstall_signal_flush",
]
