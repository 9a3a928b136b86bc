"""sqla-audit: capture every SQLAlchemy ORM change with its actor, publish after commit."""

from __future__ import annotations

from sqla_audit.errors import (
    AuditError,
    ConfigurationError,
    PermanentError,
    RetryableError,
)
from sqla_audit.events import SCHEMA_VERSION, Actor, ChangeEvent, Operation

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Actor",
    "AuditError",
    "ChangeEvent",
    "ConfigurationError",
    "Operation",
    "PermanentError",
    "RetryableError",
    "__version__",
]
