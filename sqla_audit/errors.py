"""The one exception tree of sqla-audit.

Two families matter to callers:

* :class:`RetryableError` -- a transport or store failed in a way that may succeed later
  (throttling, 5xx, a connection refused). Workers back off and retry; publishers retry,
  then spool.
* :class:`PermanentError` -- retrying cannot help (a message that cannot be decoded, a
  configuration that is invalid, a value that cannot be serialized). Workers park the
  message for the dead-letter queue; install fails loudly.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every error raised by sqla-audit."""


class RetryableError(AuditError):
    """A failure that may go away by itself: retry with backoff."""


class PermanentError(AuditError):
    """A failure that retrying cannot fix."""


class ConfigurationError(PermanentError, ValueError):
    """Invalid configuration, reported once at install or start time."""


class SerializationError(PermanentError, TypeError):
    """A value cannot be written to, or read from, the wire format."""


class DecodeError(PermanentError):
    """A message is not a valid change event (not JSON, wrong schema, missing fields)."""


class UnsupportedSchemaVersion(DecodeError):
    """The event declares a ``schema_version`` this code does not understand."""


class TransportError(RetryableError):
    """Publishing to, or receiving from, the message bus failed."""


class StoreError(RetryableError):
    """Writing to, or reading from, the audit store failed."""


# -- delivery -------------------------------------------------------------------------


class SNSRejectedError(PermanentError):
    """SNS refused a message for a reason retrying cannot fix (sender fault)."""


class PublisherClosedError(TransportError):
    """Events were published after :meth:`SNSPublisher.close`."""


class QueueFullError(TransportError):
    """The in-memory queue was full and no spool is configured: the events were dropped."""


class SpoolFullError(TransportError):
    """The spool reached ``max_bytes``: the records after the first ``written`` were not kept."""

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


class PayloadTooLargeError(PermanentError):
    """An event is above the SNS limit and no S3 bucket is configured to offload it."""


__all__ = [
    "AuditError",
    "ConfigurationError",
    "DecodeError",
    "PayloadTooLargeError",
    "PermanentError",
    "PublisherClosedError",
    "QueueFullError",
    "RetryableError",
    "SNSRejectedError",
    "SerializationError",
    "SpoolFullError",
    "StoreError",
    "TransportError",
    "UnsupportedSchemaVersion",
]
