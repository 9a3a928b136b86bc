"""AWS service limits sqla-audit designs around, named once.

Sources: the SNS and SQS quotas pages of the AWS documentation.
"""

from __future__ import annotations

#: Largest SNS message (and SQS message) payload: 256 KiB, attributes included.
SNS_MAX_PAYLOAD_BYTES = 256 * 1024

#: Entries allowed in one SNS ``PublishBatch`` call (the batch's total is also capped at
#: :data:`SNS_MAX_PAYLOAD_BYTES`).
SNS_MAX_BATCH_ENTRIES = 10

#: Message attributes allowed on one SNS/SQS message.
SNS_MAX_MESSAGE_ATTRIBUTES = 10

#: Longest SQS long poll (``WaitTimeSeconds``).
SQS_MAX_WAIT_SECONDS = 20

#: Most messages returned by one SQS ``ReceiveMessage`` call.
SQS_MAX_RECEIVE_MESSAGES = 10

#: Entries allowed in one SQS ``DeleteMessageBatch`` / ``ChangeMessageVisibilityBatch``.
SQS_MAX_BATCH_ENTRIES = 10

#: Longest SQS visibility timeout: 12 hours.
SQS_MAX_VISIBILITY_SECONDS = 12 * 60 * 60

#: Headroom kept below the payload limit for the SNS envelope and attributes.
PAYLOAD_HEADROOM_BYTES = 4 * 1024
