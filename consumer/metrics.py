"""Worker and relay observability: Prometheus metrics and a health endpoint on one small
HTTP server (the relay's metrics are :class:`RelayMetrics`, ``sqla_audit_relay_*``).

Metrics live in their own registry (not the process-global one), so several workers --
in tests, or embedded in an application -- never collide. The server answers:

``/metrics``
    Prometheus text format.
``/healthz``
    liveness: 200 while the worker's pollers run, 503 once it has stopped.
``/readyz``
    readiness: 200 while the store accepts writes, 503 while the worker is backing off
    from a store outage (the worker stays alive and resumes by itself).

Each answer from the health endpoints is a small JSON object with the details.

``prometheus-client`` comes with the ``consumer`` extra. Without it (the embedded setup,
``pip install sqla-audit`` alone) the same metrics are kept by a small built-in
implementation that renders the Prometheus text format itself, so ``sqla-audit consume
--source outbox`` works with nothing but the package.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from sqla_audit.errors import ConfigurationError

try:
    import prometheus_client as _prom
except ImportError:  # the embedded setup: no consumer extra installed
    from consumer import _fallback_metrics as _prom  # type: ignore[no-redef]

CONTENT_TYPE_LATEST = _prom.CONTENT_TYPE_LATEST
CollectorRegistry = _prom.CollectorRegistry
Counter = _prom.Counter
Gauge = _prom.Gauge
Histogram = _prom.Histogram
generate_latest = _prom.generate_latest

log = logging.getLogger(__name__)

#: Outcomes a message can have.
OUTCOMES = ("acked", "released", "rejected")
#: Kinds of failure counted in ``failures_total``.
#: ``decode``, ``rejected`` and ``conflict`` count rejected messages by cause (undecodable,
#: refused by the store, a conflicting duplicate event id).
#: ``signature`` counts messages the signature policy refused (consumer.verification).
FAILURE_KINDS = (
    "decode",
    "signature",
    "store",
    "rejected",
    "conflict",
    "transport",
    "internal",
)


class WorkerMetrics:
    """The worker's counters, gauges and histograms, in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        prefix = "sqla_audit_consumer"
        self.messages = Counter(
            f"{prefix}_messages",
            "Messages handled, by outcome (acked, released for retry, rejected as poison).",
            ["outcome"],
            registry=self.registry,
        )
        self.events_written = Counter(
            f"{prefix}_events_written",
            "Change events whose audit records were written to the store.",
            registry=self.registry,
        )
        self.events_skipped = Counter(
            f"{prefix}_events_skipped",
            "Change events that needed no record (updates without a real change).",
            registry=self.registry,
        )
        self.failures = Counter(
            f"{prefix}_failures",
            "Failures by kind: decode, signature, rejected and conflict (messages rejected), "
            "store "
            "(failed writes during an outage), transport, internal.",
            ["kind"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            f"{prefix}_batch_seconds",
            "Time to process one received batch, from receive to acknowledgement.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            f"{prefix}_in_flight",
            "Messages received and not yet acknowledged or released.",
            registry=self.registry,
        )
        self.backoff_seconds = Gauge(
            f"{prefix}_backoff_seconds",
            "Current pause after store failures (0 while the store is healthy).",
            registry=self.registry,
        )
        self.oldest_in_flight_seconds = Gauge(
            f"{prefix}_oldest_in_flight_seconds",
            "Age of the oldest message received and not yet settled (0 when none is held).",
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.messages.labels(outcome)
        for kind in FAILURE_KINDS:
            self.failures.labels(kind)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class RelayMetrics:
    """The relay's counters and gauges (``sqla_audit_relay_*``), in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        prefix = "sqla_audit_relay"
        self.rows = Counter(
            f"{prefix}_rows",
            "Outbox rows handled, by outcome (published; parked: refused for good; "
            "deferred: SNS did not take them, left for a later pass).",
            ["outcome"],
            registry=self.registry,
        )
        self.passes = Counter(
            f"{prefix}_passes", "Passes over the outbox that completed.", registry=self.registry
        )
        self.failing_passes = Gauge(
            f"{prefix}_failing_passes",
            "Consecutive passes that failed (database error, or SNS not taking rows); "
            "0 while healthy.",
            registry=self.registry,
        )
        for outcome in ("published", "parked", "deferred"):
            self.rows.labels(outcome)

    def observe(self, published: int, parked: int, deferred: int) -> None:
        """Count one completed pass."""
        self.passes.inc()
        self.rows.labels("published").inc(published)
        self.rows.labels("parked").inc(parked)
        self.rows.labels("deferred").inc(deferred)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


HealthCheck = Callable[[], Mapping[str, Any]]


class Renderable(Protocol):
    """Metrics the server can expose: anything that renders the Prometheus text format."""

    def render(self) -> bytes: ...


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
            return
        if path in ("/healthz", "/readyz"):
            state = dict(self.server.health())
            ok = bool(state.get("alive" if path == "/healthz" else "ready"))
            body = json.dumps({"status": "ok" if ok else "unavailable", **state}).encode()
            self._send(200 if ok else 503, body, "application/json")
            return
        self._send(404, b'{"status": "not found"}', "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    """One line: why the metrics endpoint cannot listen, and what to pass instead."""
    if exc.errno == errno.EADDRINUSE:
        what = f"port {port} is in use"
    elif exc.errno == errno.EACCES:
        what = f"port {port} needs privileges this user does not have"
    elif isinstance(exc, socket.gaierror):
        what = f"the metrics host {host!r} does not resolve"
    else:
        what = f"cannot listen on {host}:{port} ({exc.strerror or exc})"
    return f"metrics endpoint: {what}; pass --metrics-port 0 to disable it, or another port"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Renderable, health: HealthCheck) -> None:
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread."""

    def __init__(self, host: str, port: int, metrics: Renderable, health: HealthCheck) -> None:
        try:
            self._server = _Server((host, port), metrics, health)
        except OSError as exc:
            raise ConfigurationError(_bind_problem(host, port, exc)) from exc
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sqla-audit-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


__all__ = [
    "FAILURE_KINDS",
    "OUTCOMES",
    "HealthCheck",
    "MetricsServer",
    "RelayMetrics",
    "Renderable",
    "WorkerMetrics",
]
