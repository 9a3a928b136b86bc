"""The sqla-audit consumer: SQS -> diff -> audit store, and the query side."""

from __future__ import annotations
