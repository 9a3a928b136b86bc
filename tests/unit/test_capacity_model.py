"""The capacity model (bench/capacity.py): its arithmetic and the source of every number."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest

from bench.capacity import (
    BEGIN,
    END,
    LIMITS,
    MONTH_SECONDS,
    Assumptions,
    derive,
    inputs,
    render,
    write_doc,
)
from bench.capacity_storage import compression_info


def _results(event_bytes: int = 1_000) -> dict[str, Any]:
    """Benchmark results shaped like bench/results/*.json, with round numbers."""
    return {
        "breakdown": {
            "rows": {
                "insert 100": {"total": 90e-6, "plain": 60e-6, "to_json": 15e-6},
                "update 100": {"total": 100e-6, "plain": 60e-6, "to_json": 20e-6},
            }
        },
        "p5": {
            "rows": [
                {
                    "topic": "loopback responder, standard",
                    "delay_ms": 20.0,
                    "max_concurrency": "default",
                    "transport": "lean",
                    "cpu_us_per_event": 60.0,
                    "events_per_s": 5000.0,
                }
            ]
        },
        "p3": {"kinds": {"scalar": {"bytes": event_bytes}}},
        "p2": {
            "cpu_per_event": {"consumer": 1e-3},
            "server_cpu_per_event": {"consumer": 2e-3},
            "scaling": {"stats": {"1": {"median": 400.0}}},
        },
        "capacity": {
            "storage": {
                "events": 3000,
                "bytes_per_event": 2_000.0,
                "compression_ratio": 0.4,
                "compressor": "LZ4Compressor",
                "tables": {
                    "changes_by_actor": {
                        "bytes_per_event": 500.0,
                        "uncompressed_per_event": 1_000.0,
                    }
                },
            }
        },
    }


def _row(rows: list[Any], label: str, unit: str) -> float:
    (value,) = [r.value for r in rows if r.label == label and r.unit == unit]
    return float(value)


def test_sns_calls_follow_the_batch_size() -> None:
    """PublishBatch calls are the rate over 10 entries, or fewer entries when events are big."""
    rows = derive(1_000, inputs(_results(event_bytes=1_000), Assumptions()))
    assert _row(rows, "SNS PublishBatch calls", "per s") == pytest.approx(100)
    assert _row(rows, "SNS PublishBatch calls", "per month") == pytest.approx(100 * MONTH_SECONDS)
    big = derive(1_000, inputs(_results(event_bytes=100_000), Assumptions()))
    # 262,144 // 100,000 = 2 entries fit in one call
    assert _row(big, "SNS PublishBatch calls", "per s") == pytest.approx(500)


def test_sqs_calls_follow_the_receive_and_delete_batches() -> None:
    """Receives and deletes are the rate over 10; deliveries one per event; 30-day months."""
    rows = derive(10_000, inputs(_results(), Assumptions()))
    assert _row(rows, "SQS ReceiveMessage (full batches)", "per s") == pytest.approx(1_000)
    assert _row(rows, "SQS DeleteMessageBatch", "per s") == pytest.approx(1_000)
    assert _row(rows, "SQS requests (receive + delete)", "per month") == pytest.approx(
        2_000 * MONTH_SECONDS
    )
    assert _row(rows, "SNS to SQS deliveries", "per month") == pytest.approx(10_000 * MONTH_SECONDS)
    assert MONTH_SECONDS == 30 * 86_400


def test_s3_calls_are_a_put_and_a_get_per_offloaded_event() -> None:
    """At 1 % offloaded, 1,000 events/s make 10 puts and 10 gets per second."""
    rows = derive(1_000, inputs(_results(), Assumptions(offload_share=0.01)))
    assert _row(rows, "S3 PutObject + GetObject (offloaded events)", "per month") == (
        pytest.approx(20 * MONTH_SECONDS)
    )


def test_producer_and_consumer_cores_follow_the_cpu_per_event() -> None:
    """Producer: rate x (capture + publish); consumer: ceil(rate / (utilization / CPU))."""
    f = inputs(_results(), Assumptions(consumer_utilization=0.5))
    assert f["capture_s"].value == pytest.approx(40e-6)  # the costliest workload: update
    rows = derive(10_000, f)
    assert _row(rows, "producer CPU", "cores (all application processes)") == pytest.approx(
        10_000 * (40e-6 + 60e-6)
    )
    assert _row(rows, "consumer events/s per process", "events/s") == pytest.approx(500)
    assert _row(rows, "consumer processes", "processes (1 core each)") == 20
    assert _row(rows, "SQS in-flight messages", "messages") == 20 * 4 * 10


def test_cassandra_nodes_follow_cpu_rf_and_node_size() -> None:
    """Cluster cores = rate x CPU x RF; nodes = that over the write share of a node, at least RF."""
    f = inputs(_results(), Assumptions(rf=3, node_cores=8, node_write_share=0.5))
    big = derive(100_000, f)
    assert _row(big, "Cassandra CPU, whole cluster", "cores") == pytest.approx(100_000 * 2e-3 * 3)
    assert _row(big, "Cassandra nodes for the writes", "nodes") == 150  # 600 cores / 4
    small = derive(100, f)
    assert _row(small, "Cassandra nodes for the writes", "nodes") == 3  # never fewer than RF


def test_storage_follows_bytes_per_event_rf_and_retention() -> None:
    """Per day: rate x 86,400 x bytes x RF; retention multiplies; nodes from the usable disk."""
    f = inputs(_results(), Assumptions(rf=3, node_disk_tb=2.0))
    rows = derive(1_000, f)
    day = 1_000 * 86_400 * 2_000 * 3 / 1e12
    assert _row(rows, "storage per day", "TB (RF copies)") == pytest.approx(day)
    assert _row(rows, "storage, 365 days", "TB") == pytest.approx(day * 365)
    usable = 2.0 * LIMITS["cassandra_disk_fill"].value
    assert _row(rows, "Cassandra nodes for 365 days of data", "nodes") == max(
        3, -(-day * 365 // usable)
    )


def test_every_number_in_the_tables_carries_a_source() -> None:
    """Each input row names a benchmark, a documented limit (with its date) or an assumption;
    each derived row says how it follows, naming only inputs that exist."""
    text = render(_results())
    inputs_part, _, derived_part = text.partition("### What each rate needs")
    derived_part = derived_part.partition("Bytes per event by table")[0]
    rows = [line.split("|")[1:-1] for line in inputs_part.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[2:]
    assert [c.strip() for c in header] == ["input", "value", "unit", "kind", "source"]
    names = {c[0].strip() for c in body}
    for name, _value, _unit, kind, source in body:
        assert source.strip(), name
        if kind.strip() == "limit":
            assert "as documented on" in source, name
            assert "https://" in source, name
        elif kind.strip() == "measured":
            assert "bench" in source, name
        else:
            assert kind.strip() == "assumption", name
    derived = [line.split("|")[1:-1] for line in derived_part.splitlines() if line.startswith("| ")]
    assert len(derived) > 10
    for cells in derived[2:]:
        how = cells[-1].strip()
        assert how, cells[0]
        for word in re.findall(r"[a-z]+(?:_[a-z0-9]+)+", how):
            assert word in names, f"{cells[0].strip()}: {word} is not an input"


def test_missing_measurements_leave_their_rows_out_and_say_what_to_run() -> None:
    """Without P2's Cassandra CPU or the storage measurement, no node count is made up."""
    results = _results()
    del results["p2"]["server_cpu_per_event"]
    del results["capacity"]
    text = render(results)
    assert "Cassandra nodes" not in text
    assert "cassandra_s, stored_bytes" in text
    assert "python -m bench.capacity storage" in text


def test_compression_info_gives_the_uncompressed_length(tmp_path: Path) -> None:
    """CompressionInfo.db: compressor name, options, chunk sizes, then the data length."""

    def utf(text: str) -> bytes:
        return struct.pack(">H", len(text)) + text.encode()

    blob = (
        utf("LZ4Compressor")
        + struct.pack(">i", 1)
        + utf("lz4_compressor_type")
        + utf("fast")
        + struct.pack(">ii", 16384, 2**31 - 1)
        + struct.pack(">q", 123_456)
        + struct.pack(">i", 8)
    )
    path = tmp_path / "nb-1-big-CompressionInfo.db"
    path.write_bytes(blob)
    assert compression_info(path) == ("LZ4Compressor", 123_456)


def test_write_doc_replaces_only_the_generated_section(tmp_path: Path) -> None:
    """Text outside the markers is kept; the section between them is replaced."""
    doc = tmp_path / "capacity.md"
    doc.write_text(f"intro\n{BEGIN}\nold\n{END}\noutro\n")
    write_doc("new table", doc)
    assert doc.read_text() == f"intro\n{BEGIN}\n\nnew table\n\n{END}\noutro\n"


def test_history_only_storage_leaves_out_the_view_tables() -> None:
    """The history-only figure is the total less the changes_by_<view> tables."""
    text = render(_results())
    assert "History only (`--views history`): 1,500 bytes per event on disk, 75% of" in text


def test_consumer_cpu_uses_the_views_figure_when_the_full_run_is_older() -> None:
    """A full P2 run older than its views measurement: own work (ceiling) + the store's CPU
    per record with every view; a newer full run: the consumer contender itself."""
    results = _results()
    results["p2"]["finished_at"] = "2026-01-01T00:00:00+00:00"
    results["p2"]["cpu_per_event"]["ceiling"] = 1e-4
    results["p2"]["views"] = {
        "finished_at": "2026-02-01T00:00:00+00:00",
        "cpu_per_record": {"history": 1e-3, "all": 2e-3},
    }
    assert inputs(results, Assumptions())["consumer_s"].value == pytest.approx(2.1e-3)
    results["p2"]["finished_at"] = "2026-03-01T00:00:00+00:00"
    assert inputs(results, Assumptions())["consumer_s"].value == pytest.approx(1e-3)
