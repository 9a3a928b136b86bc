"""Message sources: where the consumer receives change events from.

:mod:`consumer.sources.base` defines :class:`MessageSource`; implementations are
:mod:`~consumer.sources.sqs` (SQS long polling) and :mod:`~consumer.sources.memory`
(tests). This package does not import boto3.
"""

from __future__ import annotations

from consumer.sources.base import Message, MessageSource

__all__ = ["Message", "MessageSource"]
