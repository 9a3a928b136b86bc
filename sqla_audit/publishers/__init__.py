"""Publishers: where change events go after a commit."""

from __future__ import annotations

from sqla_audit.publishers.base import ErrorHook, Publisher

__all__ = ["ErrorHook", "Publisher"]
