"""Bytes on disk per stored event, per table: the storage input of the capacity model.

Writes ``events`` synthetic change events (:func:`bench.p2_views.traced_stream`: every
event has an actor, a request id and a trace id, so every view writes) through the real
:class:`consumer.sinks.cassandra.CassandraStore` into a fresh keyspace with the default views,
sets ``memtable_flush_period_in_ms`` on that keyspace's tables (and only those) so Cassandra
flushes them to SSTables, waits until the SSTable files stop changing, and reads their sizes
from the node's data directory: every component (``Data.db``, index, filter, statistics...)
and, from each ``CompressionInfo.db``, the uncompressed length of the data. The node must run
on this machine (its data directory is found from the process's ``cassandra.yaml``). One
replica: the model multiplies by the replication factor. The keyspace is dropped at the end.

Synthetic rows repeat more than real ones do, so they compress better: the compression ratio
measured here is the figure for this event mix, not a promise for every schema.
"""

from __future__ import annotations

import re
import struct
import time
from pathlib import Path
from typing import Any

from bench.common import cassandra_contact, load_services_env, progress, unique_name, update_result
from bench.cpu import process_cpu


def compression_info(path: Path) -> tuple[str, int]:
    """(compressor, uncompressed data length) from an SSTable's ``CompressionInfo.db``."""
    data = path.read_bytes()
    (n,) = struct.unpack_from(">H", data, 0)
    name, pos = data[2 : 2 + n].decode(), 2 + n
    (options,) = struct.unpack_from(">i", data, pos)
    pos += 4
    for _ in range(2 * options):
        (length,) = struct.unpack_from(">H", data, pos)
        pos += 2 + length
    pos += 8  # chunk length, largest compressed chunk
    (length,) = struct.unpack_from(">q", data, pos)
    return name, length


def data_directory(pid: int) -> Path:
    """The first ``data_file_directories`` entry of the node running as ``pid``."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    config = next(a.decode().split("=", 1)[1] for a in args if a.startswith(b"-Dcassandra.config="))
    text = Path(config.removeprefix("file://")).read_text()
    match = re.search(r"^data_file_directories:\s*\n\s*-\s*(\S+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no data_file_directories in {config}")
    return Path(match.group(1))


def table_sizes(directory: Path) -> dict[str, Any]:
    """Bytes of every SSTable component of one table directory, and its data uncompressed."""
    total = compressed = uncompressed = 0
    compressor = "none"
    for file in directory.glob("*-big-*"):
        if not file.is_file():
            continue
        size = file.stat().st_size
        total += size
        if file.name.endswith("-Data.db"):
            compressed += size
            info = file.with_name(file.name.replace("-Data.db", "-CompressionInfo.db"))
            if info.exists():
                compressor, length = compression_info(info)
                uncompressed += length
            else:
                uncompressed += size
    return {
        "bytes": total,
        "data": compressed,
        "uncompressed": uncompressed,
        "compressor": compressor,
    }


def write_measured(store: Any, records: list[Any], pid: int) -> dict[str, float]:
    """Write ``records`` in batches of 10 and measure the Cassandra process's CPU per event;
    the node's CPU over an idle window just before (other clients of a shared node) is
    subtracted."""
    store.write(records[:10])  # prepared statements, pools
    baseline_start, baseline_cpu = time.perf_counter(), process_cpu(pid)
    time.sleep(5.0)
    idle = (process_cpu(pid) - baseline_cpu) / (time.perf_counter() - baseline_start)
    started, server, client = time.perf_counter(), process_cpu(pid), time.process_time()
    for k in range(10, len(records), 10):
        store.write(records[k : k + 10])
    elapsed = time.perf_counter() - started
    count = len(records) - 10
    busy = process_cpu(pid) - server
    return {
        "server_cpu_per_event": max(busy - idle * elapsed, 0.0) / count,
        "server_cpu_per_event_gross": busy / count,
        "server_idle_cores": idle,
        "client_cpu_per_event": (time.process_time() - client) / count,
        "rate": count / elapsed,
    }


def measure(events: int) -> dict[str, Any]:
    load_services_env()
    from bench.cpu import cassandra_pid  # noqa: PLC0415
    from bench.p2_views import traced_stream  # noqa: PLC0415
    from consumer.config import CassandraConfig, CassandraSchemaConfig  # noqa: PLC0415
    from consumer.differ import record_for_event  # noqa: PLC0415
    from consumer.sinks.cassandra import CassandraStore, apply_schema, connect  # noqa: PLC0415

    pid = cassandra_pid()
    if pid is None:
        raise RuntimeError("the Cassandra node must run on this machine (its files are read)")
    root = data_directory(pid)
    host, port = cassandra_contact()
    keyspace = unique_name("sqla_audit_capacity")
    config = CassandraConfig(
        hosts=(host,), port=port, schema=CassandraSchemaConfig(keyspace=keyspace)
    )
    apply_schema(config)
    cluster = connect(config)
    session = cluster.connect()
    store = CassandraStore(session, config.schema)
    try:
        stream = traced_stream(events, seed=9, table="capacity")
        records = [r for r in map(record_for_event, stream) if r]
        cpu = write_measured(store, records, pid)
        rows = session.execute(
            "SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
        tables = {row["table_name"]: row["id"].hex for row in rows}
        for name in tables:
            session.execute(
                f"ALTER TABLE {keyspace}.{name} WITH memtable_flush_period_in_ms = 2000"
            )
        seen: dict[str, Any] = {}
        for _ in range(60):  # at most 5 minutes
            time.sleep(5)
            sizes = {n: table_sizes(root / keyspace / f"{n}-{i}") for n, i in tables.items()}
            # Settled: nothing changed in one period and something was flushed (a table the
            # events do not write, such as event_seals, stays empty).
            if sizes == seen and any(s["bytes"] for s in sizes.values()):
                break
            seen = sizes
            progress(f"capacity storage: {sum(s['bytes'] for s in sizes.values()):,} bytes on disk")
        else:
            raise RuntimeError("the SSTables did not settle within 5 minutes")
    finally:
        try:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        finally:
            cluster.shutdown()
    total = sum(s["bytes"] for s in sizes.values())
    data = sum(s["data"] for s in sizes.values())
    raw = sum(s["uncompressed"] for s in sizes.values())
    compressors = {s["compressor"] for s in sizes.values() if s["compressor"] != "none"}
    return {
        "events": len(records),
        "bytes_per_event": total / len(records),
        "compression_ratio": data / raw if raw else 1.0,
        "compressor": ", ".join(sorted(compressors)) or "none",
        "write": cpu,
        "tables": {
            n: {
                "bytes_per_event": s["bytes"] / len(records),
                "uncompressed_per_event": s["uncompressed"] / len(records),
            }
            for n, s in sorted(sizes.items())
        },
    }


def main(events: int) -> int:
    result = measure(events)
    update_result("capacity", "storage", result)
    for name, table in result["tables"].items():
        print(
            f"{name}: {table['bytes_per_event']:,.0f} B/event on disk, "
            f"{table['uncompressed_per_event']:,.0f} B/event uncompressed"
        )
    w = result["write"]
    print(
        f"Cassandra CPU {w['server_cpu_per_event'] * 1e6:,.0f} µs/event "
        f"({w['server_cpu_per_event_gross'] * 1e6:,.0f} µs before subtracting the node's idle "
        f"{w['server_idle_cores']:.2f} cores), {w['rate']:,.0f} events/s"
    )
    print(
        f"all tables: {result['bytes_per_event']:,.0f} B/event, "
        f"compression ratio {result['compression_ratio']:.2f}"
    )
    return 0


__all__ = ["compression_info", "data_directory", "main", "measure", "table_sizes"]
