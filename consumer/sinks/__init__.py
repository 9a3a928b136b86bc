"""Audit stores: where the consumer writes records and the query side reads them.

:mod:`consumer.sinks.base` defines the :class:`AuditStore` protocol; implementations are
:mod:`~consumer.sinks.cassandra` (production), :mod:`~consumer.sinks.sqlite` (embedded, one
file) and :mod:`~consumer.sinks.memory` (tests). Import the implementation you need; this
package does not import cassandra-driver.
"""

from __future__ import annotations

from consumer.sinks.base import AuditStore, InvalidQuery, Page

__all__ = ["AuditStore", "InvalidQuery", "Page"]
