"""A minimal stand-in for the part of ``prometheus_client`` the worker uses.

Used only when ``prometheus-client`` is not installed. It keeps counters, gauges and
histograms in memory (thread-safe) and renders them in the Prometheus text exposition
format, version 0.0.4, so ``/metrics`` answers the same way with or without the extra.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


class CollectorRegistry:
    """Holds the metrics created with ``registry=`` this registry, in creation order."""

    def __init__(self, auto_describe: bool = False) -> None:
        self.metrics: list[_Metric] = []

    def register(self, metric: _Metric) -> None:
        self.metrics.append(metric)


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{name}="{value}"' for name, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Metric:
    kind = "untyped"
    suffix = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
        **options: Any,
    ) -> None:
        self.name = name + self.suffix if not name.endswith(self.suffix) else name
        self.base = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.options = options
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _Metric] = {}
        self._value = 0.0
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Any:
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = type(self)(self.base, self.documentation, **self.options)
                self._children[key] = child
            return child

    def _series(self) -> list[tuple[tuple[str, ...], _Metric]]:
        if self.labelnames:
            return sorted(self._children.items())
        return [((), self)]

    def _samples(self, labels: tuple[str, ...]) -> list[str]:
        return [f"{self.name}{_labels_text(self.labelnames, labels)} {_number(self._value)}"]

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} {self.kind}"]
        for labels, child in self._series():
            child.labelnames = self.labelnames
            lines.extend(child._samples(labels))
        return lines


class Counter(_Metric):
    kind = "counter"
    suffix = "_total"

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self._value += amount


class Gauge(_Metric):
    kind = "gauge"

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1) -> None:
        with self._lock:
            self._value -= amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(name, documentation, *args, **kwargs)
        buckets = tuple(self.options.get("buckets", (0.1, 0.5, 1, 5, 10)))
        self.buckets = (*buckets, math.inf) if buckets[-1] != math.inf else buckets
        self._counts = [0] * len(self.buckets)
        self._count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            self._value += value
            self._count += 1
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[index] += 1

    def _samples(self, labels: tuple[str, ...]) -> list[str]:
        out = []
        for bound, count in zip(self.buckets, self._counts, strict=True):
            le = 'le="' + _number(bound) + '"'
            out.append(
                f"{self.base}_bucket{_labels_text(self.labelnames, labels, le)} {_number(count)}"
            )
        lbl = _labels_text(self.labelnames, labels)
        out.append(f"{self.base}_count{lbl} {_number(self._count)}")
        out.append(f"{self.base}_sum{lbl} {_number(self._value)}")
        return out


def generate_latest(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format."""
    lines: list[str] = []
    for metric in registry.metrics:
        lines.extend(metric.render())
    return ("\n".join(lines) + "\n").encode("utf-8")


__all__ = [
    "CONTENT_TYPE_LATEST",
    "CollectorRegistry",
    "Counter",
    "Gauge",
    "Histogram",
    "generate_latest",
]
