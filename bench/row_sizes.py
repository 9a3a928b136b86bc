"""Bytes per stored row, per view, of the Cassandra store: ``python -m bench.row_sizes``.

The store's own rows: the benchmark's event mix (:mod:`bench.eventgen`: inserts, scalar and
nested updates, deletes; an OpenTelemetry trace id on every event) goes through the
consumer's differ, and :meth:`CassandraStore._statements_for` gives every row the store
writes with every view. Each bound value is serialized with the driver's own serializer for
its column's CQL type (the bytes the node receives), and the row is costed in Cassandra's
storage format: every cell but the partition key's carries a flag byte and, for
variable-length types, a length (a vint), and a row a header of about 8 bytes (flags, size,
timestamp delta). That is the row's uncompressed size in a partition -- what Cassandra's
large-partition warning measures. No node is needed: the figures depend on the data, not on
the machine. :data:`consumer.sinks.partition_sizes.ROW_BYTES` holds the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import uuid
from collections import defaultdict
from typing import Any, Final

from cassandra import cqltypes
from cassandra.query import UNSET_VALUE

from bench.eventgen import event_stream
from consumer.config import CassandraSchemaConfig
from consumer.differ import records_for_event
from consumer.sinks.cassandra import CassandraSchema, CassandraStore, KeyspaceLayout
from consumer.sinks.views import DEFAULT_VIEWS

_TYPES: Final = {
    "text": cqltypes.UTF8Type,
    "uuid": cqltypes.UUIDType,
    "bigint": cqltypes.LongType,
    "int": cqltypes.Int32Type,
    "timestamp": cqltypes.DateType,
    "date": cqltypes.SimpleDateType,
    "blob": cqltypes.BytesType,
}
_FIXED: Final = {"uuid", "bigint", "int", "timestamp", "date"}
_ROW_HEADER: Final = 8
#: The view each table serves (the estimate's names).
_VIEWS: Final = {
    "changes_by_service_record": "record",
    "changes_by_actor": "actor",
    "changes_by_table": "table",
    "changes_by_request": "request",
    "changes_by_trace": "trace",
    "changes_by_transaction": "transaction",
}
_CREATE: Final = re.compile(
    r"CREATE TABLE IF NOT EXISTS \w+\.(\w+) \((.*?)\n    PRIMARY KEY \((.*)\)\n\)", re.S
)
_INSERT: Final = re.compile(r"INSERT INTO \w+\.(\w+) \(([^)]*)\)")


class _Prepared:
    def __init__(self, query: str) -> None:
        self.query = query
        self.is_idempotent = False


class _Session:
    def prepare(self, query: str) -> _Prepared:
        return _Prepared(query)


def _vint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _tables(schema: CassandraSchema) -> dict[str, tuple[dict[str, str], set[str]]]:
    """Each table's column types and partition key columns, from the schema's own CQL."""
    out = {}
    for statement in schema.tables():
        match = _CREATE.search(statement)
        if match is None:
            continue
        name, body, key = match.groups()
        columns = dict(
            line.strip().rstrip(",").split(" ", 1) for line in body.splitlines() if line.strip()
        )
        partition = key.split(")")[0].lstrip("(") if key.startswith("(") else key.split(",")[0]
        out[name] = (columns, {part.strip() for part in partition.split(",")})
    return out


def _row_bytes(
    columns: dict[str, str], partition: set[str], names: list[str], values: tuple[Any, ...]
) -> int:
    size = _ROW_HEADER
    for name, value in zip(names, values, strict=True):
        if value is None or value is UNSET_VALUE or name in partition:
            continue
        cql_type = columns[name]
        data = _TYPES[cql_type].serialize(value, 5)
        size += 1 + len(data) + (0 if cql_type in _FIXED else _vint_size(len(data)))
    return size


def measure(count: int, seed: int = 1) -> dict[str, dict[str, float]]:
    """Mean, median and 95th percentile bytes per row per view over ``count`` events."""
    config = CassandraSchemaConfig(keyspace="ks")
    store = CassandraStore(_Session(), config, layout=KeyspaceLayout(2, views=DEFAULT_VIEWS))
    tables = _tables(CassandraSchema(dataclasses.replace(config, views=DEFAULT_VIEWS)))
    sizes: dict[str, list[int]] = defaultdict(list)
    for event in event_stream(count, seed=seed):
        traced = dataclasses.replace(
            event, metadata={**event.metadata, "otel.trace_id": uuid.uuid4().hex}
        )
        for record in records_for_event(traced):
            for statement, params in store._statements_for(record):
                match = _INSERT.match(statement.query)
                assert match is not None
                table, names = match.group(1), [n.strip() for n in match.group(2).split(",")]
                view = _VIEWS.get(table)
                if view is not None:
                    columns, partition = tables[table]
                    sizes[view].append(_row_bytes(columns, partition, names, params))
    return {
        view: {
            "mean": statistics.fmean(values),
            "median": statistics.median(values),
            "p95": statistics.quantiles(values, n=20)[-1],
            "rows": len(values),
        }
        for view, values in sorted(sizes.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    result = measure(args.events)
    print(f"{'view':<12} {'rows':>6} {'mean B':>8} {'median B':>9} {'p95 B':>7}")
    for view, figures in result.items():
        print(
            f"{view:<12} {figures['rows']:>6.0f} {figures['mean']:>8.0f} "
            f"{figures['median']:>9.0f} {figures['p95']:>7.0f}"
        )
    print(json.dumps({view: round(figures["mean"]) for view, figures in result.items()}))


if __name__ == "__main__":
    main()
