"""Publishers: where change events go after a commit."""

from __future__ import annotations

from sqla_audit.publishers.base import ErrorHook, Publisher
from sqla_audit.publishers.memory import InMemoryPublisher

__all__ = ["ErrorHook", "InMemoryPublisher", "Publisher"]
