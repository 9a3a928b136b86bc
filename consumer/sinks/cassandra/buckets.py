"""Partition bucketing of the by-actor view: which partition an actor's change lands in.

A service account can make millions of changes a day; one partition per actor and UTC day
(the ``changes_by_actor`` table, ``(actor_id, day)``) then holds a gigabyte. An
:class:`ActorBucketing` chooses the bucket -- the UTC hour, day, ISO week (from Monday) or
month of the event time -- and a number of shards per bucket (a stable hash of the event id,
so a redelivered event rewrites the same row). Day buckets with one shard are the
``changes_by_actor`` table itself; any other setting is a table of its own, named after it
(``changes_by_actor_hour_x8``) and keyed ``(actor_id, bucket, shard)``, so rows written
under one setting are never read under another. ``schema_info`` records the setting;
docs/cql.md ("Partition sizes") explains how to choose it.

Pure arithmetic: nothing here talks to Cassandra.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Final

from consumer.config import ACTOR_BUCKETS, CassandraSchemaConfig
from consumer.records import AuditRecord, to_millis
from consumer.sinks.errors import InvalidQuery

#: The shortest length of each bucket, in ms (a month is at least 28 days).
_MIN_MS: Final = {
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 28 * 86_400_000,
}
#: The longest length of each bucket, in seconds (for partition-size estimates).
BUCKET_SECONDS: Final = {"hour": 3_600, "day": 86_400, "week": 7 * 86_400, "month": 31 * 86_400}

#: Most partitions one by-actor read may walk (buckets times shards).
MAX_ACTOR_PARTITIONS: Final = 100_000

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAY_MS: Final = 86_400_000


def _from_ms(millis: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=millis)


def bucket_start_ms(millis: int, bucket: str) -> int:
    """Start (ms since the epoch, UTC) of the ``bucket`` holding ``millis``."""
    if bucket == "hour":
        return millis // 3_600_000 * 3_600_000
    days = millis // _DAY_MS
    if bucket == "day":
        return days * _DAY_MS
    if bucket == "week":  # 1970-01-01 was a Thursday: Monday is 3 days earlier
        return (days - (days + 3) % 7) * _DAY_MS
    if bucket == "month":
        day = _from_ms(millis)
        return to_millis(dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC))
    raise ValueError(f"no actor bucket {bucket!r} (known: {', '.join(ACTOR_BUCKETS)})")


def actor_shard(event_id: uuid.UUID, shards: int) -> int:
    """The shard of an event: CRC-32 of its id's 16 bytes modulo ``shards``."""
    if shards <= 1:
        return 0
    return zlib.crc32(event_id.bytes) % shards


@dataclass(frozen=True, slots=True)
class ActorBucketing:
    """The bucket and shard count of the by-actor view."""

    bucket: str = "day"
    shards: int = 1

    def __post_init__(self) -> None:
        if self.bucket not in ACTOR_BUCKETS:
            raise ValueError(f"no actor bucket {self.bucket!r} (known: {', '.join(ACTOR_BUCKETS)})")
        if not 1 <= self.shards <= 256:
            raise ValueError(f"actor shards must be from 1 to 256, got {self.shards}")

    @classmethod
    def of(cls, config: CassandraSchemaConfig) -> ActorBucketing:
        return cls(config.actor_bucket, config.actor_shards)

    @property
    def legacy(self) -> bool:
        """Day buckets, one shard: the ``(actor_id, day)`` table."""
        return self.bucket == "day" and self.shards == 1

    @property
    def table(self) -> str:
        """The table holding the view under this setting."""
        if self.legacy:
            return "changes_by_actor"
        return f"changes_by_actor_{self.bucket}" + (f"_x{self.shards}" if self.shards > 1 else "")

    @property
    def key_columns(self) -> tuple[tuple[str, str], ...]:
        """The partition key columns besides ``actor_id``, with their CQL types."""
        if self.legacy:
            return (("day", "date"),)
        return (("bucket", "timestamp"), ("shard", "int"))

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.key_columns)

    @property
    def partition_key(self) -> str:
        return ", ".join(("actor_id", *self.key_names))

    def describe(self) -> str:
        """``hour buckets x 8 shards``, for messages."""
        return f"{self.bucket} buckets" + (f" x {self.shards} shards" if self.shards > 1 else "")

    def key(self, record: AuditRecord) -> tuple[Any, ...]:
        """The partition key values of ``record`` besides its actor id."""
        if self.legacy:
            return (record.day,)
        start = bucket_start_ms(to_millis(record.event_time), self.bucket)
        return (start, actor_shard(record.event_id, self.shards))

    def partitions(self, low_ms: int, high_ms: int) -> list[list[tuple[Any, ...]]]:
        """The partitions a window ``[low_ms, high_ms]`` spans: one list per bucket, newest
        bucket first, holding the key values (besides the actor id) of each of its shards.

        :class:`InvalidQuery` when that is more than :data:`MAX_ACTOR_PARTITIONS` reads.
        """
        if high_ms < low_ms:
            return []
        most = (high_ms - low_ms) // _MIN_MS[self.bucket] + 2
        if most * self.shards > MAX_ACTOR_PARTITIONS:
            raise InvalidQuery(
                f"the window spans up to {most * self.shards} partitions of the by-actor view "
                f"({self.describe()}; at most {MAX_ACTOR_PARTITIONS}): narrow since/until"
            )
        first = bucket_start_ms(low_ms, self.bucket)
        start = bucket_start_ms(high_ms, self.bucket)
        out: list[list[tuple[Any, ...]]] = []
        while start >= first:
            if self.legacy:
                out.append([(_from_ms(start).date(),)])
            else:
                out.append([(start, shard) for shard in range(self.shards)])
            start = bucket_start_ms(start - 1, self.bucket)
        return out


__all__ = [
    "BUCKET_SECONDS",
    "MAX_ACTOR_PARTITIONS",
    "ActorBucketing",
    "actor_shard",
    "bucket_start_ms",
]
