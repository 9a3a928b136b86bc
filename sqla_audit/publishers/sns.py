"""Publishing change events to Amazon SNS.

Two layers, because two callers need different things:

* :class:`SNSSender` is the synchronous *publishing core*: it turns messages into
  ``PublishBatch`` calls of at most 10 entries and 256 KiB, offloads oversized bodies to S3,
  retries throttling and server errors with jittered backoff -- resending only the entries
  that failed -- and reports, per message, whether SNS accepted it, rejected it for good or
  could not be reached within the retry budget. The outbox relay uses it directly.
* :class:`SNSPublisher` is the :class:`~sqla_audit.publishers.base.Publisher` an
  application installs in *direct* mode. ``publish()`` only appends to a bounded in-memory
  queue (a commit never waits on the network); a background thread drains the queue through
  an :class:`SNSSender`. When SNS stays unreachable past the retry budget, or the queue is
  full, events spill to a local :class:`~sqla_audit.publishers.spool.EventSpool` and are
  re-sent in order once SNS answers again. Nothing raises into application code: failures
  go to the ``on_error`` hook and the counters of :meth:`SNSPublisher.stats`.

Messages. The body is ``ChangeEvent.to_json()``. Three ``String`` message attributes --
``table``, ``operation``, ``service`` -- let subscriptions filter without reading the body.
On a FIFO topic (ARN ending in ``.fifo``) ``MessageGroupId`` is ``<table>:<record_id>`` so
the events of one record are delivered in order while different records proceed in
parallel, and ``MessageDeduplicationId`` is the event id, so a re-sent event within SNS's
five-minute deduplication window is dropped by SNS itself. A group id longer than 128
characters, or with characters SNS does not allow, is replaced by ``sha256:<hex digest>``
of the same text (stable, so ordering per record is kept).

Error classification (what is retried):

* whole-call errors: throttling codes, HTTP 5xx, connection failures and timeouts, and
  also authorization / not-found / KMS errors (a configuration fix resumes delivery, and
  the spool keeps the events meanwhile) are *retryable*; request-validation errors
  (``InvalidParameter``, ``BatchRequestTooLong``...) make the sender split the batch to
  isolate the offending entry, which is then *rejected*;
* per-entry failures in the ``Failed`` list of a response: retryable when
  ``SenderFault`` is false or the code is a throttling code, rejected otherwise.

Rejected messages are reported to ``on_error`` and counted; they are never silently
dropped, and never block the messages behind them.
"""

from __future__ import annotations

from sqla_audit.errors import PublisherClosedError, QueueFullError, SNSRejectedError
from sqla_audit.publishers.sns_client import build_sns_client, form_encode
from sqla_audit.publishers.sns_http import SNSHttpClient, build_publish_client
from sqla_audit.publishers.sns_messages import (
    FIFO_ID_MAX_LENGTH,
    OutgoingMessage,
    fifo_id,
    message_attributes,
)
from sqla_audit.publishers.sns_publisher import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_OUTAGE_RETRY,
    PublisherStats,
    SNSPublisher,
)
from sqla_audit.publishers.sns_sender import (
    INVALID_REQUEST_CODES,
    THROTTLING_CODES,
    SendOutcome,
    SNSSender,
    Transport,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_OUTAGE_RETRY",
    "FIFO_ID_MAX_LENGTH",
    "INVALID_REQUEST_CODES",
    "THROTTLING_CODES",
    "OutgoingMessage",
    "PublisherClosedError",
    "PublisherStats",
    "QueueFullError",
    "SNSHttpClient",
    "SNSPublisher",
    "SNSRejectedError",
    "SNSSender",
    "SendOutcome",
    "Transport",
    "build_publish_client",
    "build_sns_client",
    "fifo_id",
    "form_encode",
    "message_attributes",
]
