"""Bounds of the change-event wire contract that every audit store can hold, named once.

The consumer validates each event against these at decode time, so a message that a store
could not write is refused there -- with a reason, before any store sees it -- instead of
failing a write. Each bound is far above what a producer legitimately emits and below what
the most constrained store accepts (a Cassandra partition key is at most 64 KiB, a
Cassandra ``int`` 32 bits, a mutation about 16 MiB by default; SQLite's ``INTEGER`` is 64
bits). ``docs/event-schema.md`` documents them.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

#: Longest ``service`` and ``table`` name, in characters. A schema-qualified table name is
#: two identifiers of at most 63 (PostgreSQL) or 64 (MySQL) characters; 512 leaves room for
#: quoting and long service names while keeping ``table`` small inside the partition key.
MAX_NAME_CHARS: Final = 512

#: Longest ``record_id`` (and ``previous_record_id``), in characters: 4,096 characters are
#: at most 16 KiB of UTF-8, which with the table name stays well inside Cassandra's 64 KiB
#: partition-key limit. Database indexes limit keys to about 3 KiB (MySQL InnoDB 3,072
#: bytes, a PostgreSQL B-tree entry 2,704 bytes), so real record ids are far shorter.
MAX_RECORD_ID_CHARS: Final = 4096

#: Longest ``actor.id`` and ``request_id``, in characters (the actor id is a partition key
#: of ``changes_by_actor``). User ids, e-mail addresses and request ids fit many times over.
MAX_IDENTIFIER_CHARS: Final = 1024

#: Largest ``sequence`` (order inside a transaction): Cassandra stores it as a 32-bit
#: ``int``. A transaction of two billion changed rows is not something a producer emits.
MAX_SEQUENCE: Final = 2**31 - 1

#: Longest ``signature.kid`` (the id of the key that signed an event), in characters.
MAX_KEY_ID_CHARS: Final = 128

#: Longest ``signature.mac``, in characters (an HMAC-SHA256 in hex is 64).
MAX_MAC_CHARS: Final = 128

#: Deepest nesting of arrays and objects inside one value of ``primary_key``, ``before``,
#: ``after``, ``metadata`` or ``actor.attributes`` (a column value or metadata entry itself
#: is depth 0). MySQL refuses JSON documents nested more than 100 levels; so does the
#: consumer, whose diff walks nested values recursively.
MAX_VALUE_DEPTH: Final = 100

#: Largest decoded payload of one message (an event, or a bundle of events), in bytes of
#: UTF-8 JSON, after unwrapping SNS and fetching an S3-offloaded payload. A message sent
#: inline through SNS is at most 256 KiB; an offloaded one can be larger. A stored record
#: keeps ``before``, ``after`` and the changed values again, so a 4 MiB event makes a row of
#: at most about 8 MiB, inside Cassandra's default 16 MiB mutation and frame limits.
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024

#: Earliest accepted ``occurred_at``/``committed_at``: the Unix epoch. Stores index event
#: time as milliseconds since the epoch and a read with no ``since`` starts there.
MIN_EVENT_TIME: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

#: Latest accepted event time (exclusive): the start of year 9999, so that any reader's
#: day, bucket and page arithmetic around an event stays inside Python's date range.
MAX_EVENT_TIME: Final = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)

__all__ = [
    "MAX_EVENT_TIME",
    "MAX_IDENTIFIER_CHARS",
    "MAX_KEY_ID_CHARS",
    "MAX_MAC_CHARS",
    "MAX_NAME_CHARS",
    "MAX_PAYLOAD_BYTES",
    "MAX_RECORD_ID_CHARS",
    "MAX_SEQUENCE",
    "MAX_VALUE_DEPTH",
    "MIN_EVENT_TIME",
]
