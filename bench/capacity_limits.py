"""Published limits the capacity model uses or checks, each with the page it is documented on.

The numbers the code itself obeys come from :mod:`sqla_audit.limits` (the same constants the
publisher and the consumer use); the others are quoted from the pages named here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqla_audit.limits import (
    SNS_MAX_BATCH_ENTRIES,
    SNS_MAX_PAYLOAD_BYTES,
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_RECEIVE_MESSAGES,
    SQS_MAX_WAIT_SECONDS,
)

#: The date the published limits below were read.
DOCUMENTED_ON = "2026-12-03"


@dataclass(frozen=True)
class Figure:
    """One input: its value, unit and where it comes from."""

    value: float
    unit: str
    source: str
    kind: str = "measured"  # measured | limit | assumption


def _doc(page: str) -> str:
    return f"{page} (as documented on {DOCUMENTED_ON})"


SNS_BATCH = "https://docs.aws.amazon.com/sns/latest/dg/sns-batch-api-actions.html"
SNS_LARGE = "https://docs.aws.amazon.com/sns/latest/dg/large-message-payloads.html"
SNS_FIFO_SCOPE = (
    "https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.aws_sns.FifoThroughputScope.html"
)
SNS_QUOTAS = "https://docs.aws.amazon.com/general/latest/gr/sns.html"
SQS_MESSAGES = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html"
SQS_QUEUES = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-queues.html"
)
SQS_FIFO = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-fifo.html"
)
SQS_FIFO_TPS = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/troubleshooting-fifo-throttling-issues.html"
SQS_LARGE = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-managing-large-messages.html"
CASSANDRA_PARTITION = "https://docs.datastax.com/en/cassandra_win/2.2/cassandra/planning/planPlanningPartitionSize.html"
CASSANDRA_DISK = "https://docs.datastax.com/en/cassandra-oss/2.2/cassandra/planning/planPlanningDiskCapacity.html"

#: Published limits the model uses or checks.
LIMITS: dict[str, Figure] = {
    "sns_batch_entries": Figure(
        SNS_MAX_BATCH_ENTRIES, "messages per PublishBatch", _doc(SNS_BATCH), "limit"
    ),
    "sns_batch_bytes": Figure(
        SNS_MAX_PAYLOAD_BYTES,
        "bytes per PublishBatch (all entries) and per message, by default",
        _doc(SNS_BATCH) + "; a topic's MaximumMessageSize can raise it to 1 MiB: " + SNS_LARGE,
        "limit",
    ),
    "sqs_message_bytes": Figure(
        SNS_MAX_PAYLOAD_BYTES,
        "bytes per SQS message; larger payloads go to S3 (the payload-offloading convention)",
        _doc(SQS_LARGE),
        "limit",
    ),
    "sqs_receive_batch": Figure(
        SQS_MAX_RECEIVE_MESSAGES, "messages per ReceiveMessage", _doc(SQS_MESSAGES), "limit"
    ),
    "sqs_delete_batch": Figure(
        SQS_MAX_BATCH_ENTRIES, "entries per DeleteMessageBatch", _doc(SQS_MESSAGES), "limit"
    ),
    "sqs_long_poll": Figure(
        SQS_MAX_WAIT_SECONDS, "seconds, longest long poll", _doc(SQS_QUEUES), "limit"
    ),
    "sqs_inflight_standard": Figure(
        120_000, "in-flight messages, standard queue (approximate)", _doc(SQS_QUEUES), "limit"
    ),
    "sqs_inflight_fifo": Figure(
        120_000,
        "in-flight messages, FIFO queue (older pages: 20,000)",
        _doc(SQS_FIFO),
        "limit",
    ),
    "sqs_fifo_batched": Figure(
        3_000,
        "messages/s per API action, FIFO queue without high throughput, batches of 10",
        _doc(SQS_FIFO_TPS) + " and " + SQS_MESSAGES,
        "limit",
    ),
    "sns_fifo_topic": Figure(
        3_000,
        "messages/s per FIFO topic with topic-scope throughput (and 20 MB/s)",
        _doc(SNS_FIFO_SCOPE) + "; message-group scope: the regional maximum of " + SNS_QUOTAS,
        "limit",
    ),
    "cassandra_partition_mb": Figure(
        100, "MB largest partition (rule of thumb)", _doc(CASSANDRA_PARTITION), "limit"
    ),
    "cassandra_disk_fill": Figure(
        0.5,
        "of a node's disk filled with data (the low end of 50-80 %, for compaction and repair)",
        _doc(CASSANDRA_DISK),
        "limit",
    ),
}


__all__ = ["DOCUMENTED_ON", "LIMITS", "Figure"]
