"""The built-in metrics used when prometheus-client is not installed."""

from __future__ import annotations

import importlib
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer import _fallback_metrics as fallback


def _worker_metrics_with_fallback(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "consumer.metrics", raising=False)
    module = importlib.import_module("consumer.metrics")
    monkeypatch.delitem(sys.modules, "consumer.metrics")
    assert module.CollectorRegistry is fallback.CollectorRegistry
    return module.WorkerMetrics()


def test_worker_metrics_work_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus-client the worker's metrics render valid Prometheus text."""
    metrics = _worker_metrics_with_fallback(monkeypatch)
    metrics.messages.labels("acked").inc(3)  # type: ignore[attr-defined]
    metrics.failures.labels("store").inc()  # type: ignore[attr-defined]
    metrics.in_flight.set(5)  # type: ignore[attr-defined]
    metrics.batch_seconds.observe(0.02)  # type: ignore[attr-defined]
    metrics.batch_seconds.observe(7)  # type: ignore[attr-defined]
    text = metrics.render().decode()  # type: ignore[attr-defined]

    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("sqla_audit_consumer_messages_total", (("outcome", "acked"),))] == 3
    assert samples[("sqla_audit_consumer_messages_total", (("outcome", "rejected"),))] == 0
    assert samples[("sqla_audit_consumer_failures_total", (("kind", "store"),))] == 1
    assert samples[("sqla_audit_consumer_in_flight", ())] == 5
    assert samples[("sqla_audit_consumer_batch_seconds_count", ())] == 2
    assert samples[("sqla_audit_consumer_batch_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("sqla_audit_consumer_batch_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("sqla_audit_consumer_batch_seconds_sum", ())] == pytest.approx(7.02)


def test_fallback_gauge_and_counter_arithmetic() -> None:
    """Counters only add; gauges add, subtract and set."""
    registry = fallback.CollectorRegistry()
    counter = fallback.Counter("c", "a counter", registry=registry)
    gauge = fallback.Gauge("g", "a gauge", registry=registry)
    counter.inc()
    counter.inc(2)
    gauge.inc(4)
    gauge.dec()
    text = fallback.generate_latest(registry).decode()
    assert "c_total 3.0" in text
    assert "g 3.0" in text
    gauge.set(0)
    assert "g 0.0" in fallback.generate_latest(registry).decode()
