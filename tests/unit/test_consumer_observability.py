"""Metrics, the health endpoint (on loopback) and JSON log lines."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from consumer.logs import JsonFormatter
from consumer.metrics import MetricsServer, WorkerMetrics


@pytest.fixture
def state() -> dict[str, Any]:
    return {"alive": True, "ready": True}


@pytest.fixture
def server(state: dict[str, Any]) -> Iterator[MetricsServer]:
    metrics = WorkerMetrics()
    metrics.events_written.inc(3)
    metrics.failures.labels("decode").inc()

    def health() -> Mapping[str, Any]:
        return state

    made = MetricsServer("127.0.0.1", 0, metrics, health)
    yield made
    made.close()


def get(server: MetricsServer, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_endpoint_serves_prometheus_text(server: MetricsServer) -> None:
    """/metrics exposes the worker's counters in Prometheus format."""
    status, text = get(server, "/metrics")
    assert status == 200
    assert "sqla_audit_consumer_events_written_total 3.0" in text
    assert 'sqla_audit_consumer_failures_total{kind="decode"} 1.0' in text
    assert 'sqla_audit_consumer_failures_total{kind="store"} 0.0' in text
    assert "sqla_audit_consumer_batch_seconds_bucket" in text
    assert "sqla_audit_consumer_in_flight" in text


def test_health_endpoints_follow_worker_state(server: MetricsServer, state: dict[str, Any]) -> None:
    """/healthz is liveness and /readyz readiness, 200 or 503 with JSON details."""
    assert get(server, "/healthz")[0] == 200
    assert get(server, "/readyz")[0] == 200
    state["ready"] = False
    status, body = get(server, "/readyz")
    assert status == 503
    assert json.loads(body)["status"] == "unavailable"
    assert get(server, "/healthz")[0] == 200
    state["alive"] = False
    assert get(server, "/healthz")[0] == 503


def test_unknown_path_is_404(server: MetricsServer) -> None:
    """Other paths answer 404."""
    assert get(server, "/nope")[0] == 404


def test_two_workers_have_separate_registries() -> None:
    """Metrics objects never collide (each has its own registry)."""
    first, second = WorkerMetrics(), WorkerMetrics()
    first.events_written.inc()
    assert second.registry.get_sample_value("sqla_audit_consumer_events_written_total") == 0


def test_json_log_lines_carry_extra_fields() -> None:
    """JSON log lines hold the message, level and every extra field."""
    record = logging.LogRecord(
        "consumer.worker", logging.WARNING, "x", 1, "rejected %s", ("m-1",), None
    )
    record.message_id = "m-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "rejected m-1"
    assert line["level"] == "WARNING"
    assert line["message_id"] == "m-1"
    assert line["logger"] == "consumer.worker"
    assert line["ts"].endswith("+00:00")


def test_json_log_lines_include_exceptions() -> None:
    """An exception's traceback is one JSON field."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, "x", 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in line["exception"]
