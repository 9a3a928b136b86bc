"""Binding a record's statements: the driver's bytes, the shared values serialized once.

The prepared statements here are the driver's own ``PreparedStatement`` objects, built
without Cassandra from the store's CQL (column types and partition keys read from the
``CREATE TABLE`` statements), so the driver's ``bind`` is the reference.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from cassandra import cqltypes
from cassandra.protocol import ColumnMetadata
from cassandra.query import PreparedStatement

from consumer.config import CassandraSchemaConfig, TimeBucket
from consumer.decoding import Decoder
from consumer.differ import records_for_event
from consumer.sinks.cassandra import CassandraSchema, CassandraStore, KeyspaceLayout
from consumer.sinks.errors import RecordRejected
from consumer.sinks.views import DEFAULT_VIEWS
from consumer.testing import make_record
from tests.unit.test_sinks_golden_rows import bodies

_TYPES: dict[str, Any] = {
    "text": cqltypes.UTF8Type,
    "uuid": cqltypes.UUIDType,
    "bigint": cqltypes.LongType,
    "timestamp": cqltypes.DateType,
    "int": cqltypes.Int32Type,
    "date": cqltypes.SimpleDateType,
    "blob": cqltypes.BytesType,
}


def _tables(bucket: TimeBucket) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Per table of the store's CQL: its column types and partition key columns."""
    tables = {}
    for statement in CassandraSchema(
        CassandraSchemaConfig(keyspace="ks", time_bucket=bucket)
    ).statements():
        found = re.match(r"CREATE TABLE IF NOT EXISTS ks\.(\w+) \((.*)\)", statement, re.S)
        if found is None:
            continue
        body = found.group(2)
        columns = dict(re.findall(r"^\s*(\w+) (\w+)", body, re.M))
        key = re.search(r"PRIMARY KEY \(\(([^)]*)\)", body)
        if key is not None:
            partition = [name.strip() for name in key.group(1).split(",")]
        else:  # a single-column key: "event_id uuid PRIMARY KEY"
            partition = [re.search(r"(\w+) \w+ PRIMARY KEY", body).group(1)]  # type: ignore[union-attr]
        columns.pop("PRIMARY", None)
        tables[found.group(1)] = ({name: _TYPES[kind] for name, kind in columns.items()}, partition)
    return tables


class _Answered:
    """A request answered at once; a digest read finds nothing."""

    def result(self) -> _Answered:
        return self

    def one(self) -> None:
        return None


class _Session:
    """Prepares statements as the driver would describe them and keeps what is sent (no
    Cassandra)."""

    def __init__(self, bucket: TimeBucket, types: dict[str, Any] | None = None) -> None:
        self.tables = _tables(bucket)
        self.types = types or {}
        self.sent: list[Any] = []

    def execute_async(self, bound: Any, timeout: float) -> _Answered:
        self.sent.append(bound)
        return _Answered()

    def prepare(self, query: str) -> PreparedStatement:
        table = re.search(r"(?:INTO|FROM) ks\.(\w+)", query).group(1)  # type: ignore[union-attr]
        kinds, partition = self.tables[table]
        if query.startswith("INSERT"):
            names = re.search(r"\(([^)]*)\)", query).group(1).split(", ")  # type: ignore[union-attr]
        else:
            names = re.findall(r"(\w+) = \?", query)
        metadata = [
            ColumnMetadata("ks", table, name, self.types.get(name, kinds[name])) for name in names
        ]
        return PreparedStatement(
            metadata,
            b"id",
            [names.index(name) for name in partition],
            query,
            "ks",
            4,
            None,
            None,
        )


def _store(bucket: TimeBucket = "none", types: dict[str, Any] | None = None) -> CassandraStore:
    layout = KeyspaceLayout(2, views=DEFAULT_VIEWS, time_bucket=bucket)
    return CassandraStore(
        _Session(bucket, types),
        CassandraSchemaConfig(keyspace="ks", time_bucket=bucket),
        layout=layout,
    )


def _bind_all(store: CassandraStore, record: Any) -> list[Any]:
    memo: list[Any] = []
    return [
        store._bind(record, statement, params, memo)
        for statement, params in store._statements_for(record)
    ]


@pytest.mark.parametrize("bucket", ["none", "month"])
def test_bound_values_are_the_bytes_the_drivers_bind_gives(bucket: TimeBucket) -> None:
    """For every golden record, every statement carries exactly the values and routing key
    of the driver's own bind."""
    store = _store(bucket)
    count = 0
    for body in bodies():
        for event in Decoder().decode(body):
            for record in records_for_event(event):
                pairs = list(store._statements_for(record))
                for bound, (statement, params) in zip(_bind_all(store, record), pairs, strict=True):
                    reference = statement.bind(params)
                    assert bound.values == reference.values
                    assert bound.routing_key == reference.routing_key
                    assert bound.prepared_statement is statement
                    assert bound.is_idempotent is True
                    count += 1
    assert count >= 250


class _CountingText(cqltypes.UTF8Type):  # type: ignore[misc]
    """The text type, counting how often the ``changes`` text is serialized."""

    calls: list[str] = []

    @staticmethod
    def serialize(ustr: str, protocol_version: int) -> bytes:
        _CountingText.calls.append(ustr)
        return bytes(cqltypes.UTF8Type.serialize(ustr, protocol_version))


def test_a_records_shared_values_are_serialized_once_for_all_its_tables() -> None:
    """With every view, the record's columns (here its ``changes`` text) are serialized once,
    not once per table."""
    _CountingText.calls = []
    store = _store(types={"changes": _CountingText})
    record = make_record(record_id="7", request_id="req-7", metadata={"otel.trace_id": "ab" * 16})
    store.write([record])
    # the digest read, history, record_services, the five views, the digest
    assert len(store._session.sent) == 9
    assert len(_CountingText.calls) == 1


def test_a_value_the_column_type_refuses_is_a_refused_record() -> None:
    """An int out of range for an ``int`` column refuses that record, naming it and the column."""
    store = _store()
    record = make_record(record_id="8")
    object.__setattr__(record, "sequence", 2**40)
    with pytest.raises(RecordRejected, match=rf"{record.event_id}.*sequence"):
        _bind_all(store, record)


def test_a_partition_key_over_64_kib_is_a_refused_record() -> None:
    """A record id too long for a partition key component is refused at bind time."""
    store = _store()
    record = make_record(record_id="x" * 70_000)
    with pytest.raises(RecordRejected, match=str(record.event_id)):
        _bind_all(store, record)


def test_a_statement_of_another_record_is_not_given_the_last_records_bytes() -> None:
    """Serialized values are reused only for the very same value objects."""
    store = _store()
    first, second = make_record(record_id="1"), make_record(record_id="2")
    memo: list[Any] = []
    pairs = [*store._statements_for(first), *store._statements_for(second)]
    bound = [store._bind(first, statement, params, memo) for statement, params in pairs]
    ids = {
        uuid.UUID(bytes=b.values[3]) for b in bound if b.prepared_statement is store._insert_record
    }
    assert ids == {first.event_id, second.event_id}
