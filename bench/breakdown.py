"""Where the commit-path time of sqla-audit goes, phase by phase, per changed row.

P1 says how much auditing adds to a transaction; this says which part of the library adds
it. The session-event listeners of :class:`sqla_audit.install.Installation` are wrapped with
timers (the wrappers are installed on the class before ``install_audit`` registers its
bound methods, and removed afterwards), and the same 100-row transactions as P1 run on an
in-memory SQLite database, where the database's own work is small, so the audit's share is
easy to see. The publisher is a stub that only keeps the list it is given: like
``SNSPublisher.publish`` it costs an append on the application's thread; turning events
into JSON, which ``SNSPublisher`` does on its background thread (still the same process and
the same GIL) and outbox mode does inside the transaction, is timed separately.

Phases (each in microseconds per changed row):

* ``before_flush`` -- snapshot of the old values of modified/deleted objects;
* ``after_flush`` -- identities, deletes, association rows;
* ``after_flush_postexec`` -- after images, value encoding, ``RowChange`` records;
* ``after_commit`` -- envelopes (``build_events``) and ``publish()``;
* ``to_json`` -- ``ChangeEvent.to_json()`` of every event (the wire text).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import fmt_seconds, markdown_table, progress, report_part
from bench.p1_worker import Contender

PHASES = ("_before_flush", "_after_flush", "_after_flush_postexec", "_after_commit")
WORKLOADS = (("insert", 100), ("update", 100), ("delete", 100), ("mixed", 100))
REPS = 15


class ListPublisher:
    """A publisher that keeps the lists it gets: the application-thread cost of a queue."""

    def __init__(self) -> None:
        self.batches: list[Sequence[Any]] = []

    def publish(self, events: Sequence[Any]) -> None:
        self.batches.append(events)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None


def _wrap(totals: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    return timed


def measure(scale: float = 1.0) -> dict[str, Any]:
    from sqla_audit import install_audit, uninstall_audit  # noqa: PLC0415
    from sqla_audit.install import Installation  # noqa: PLC0415

    started = time.perf_counter()
    reps = max(3, round(REPS * scale))
    totals: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    originals = {name: getattr(Installation, name) for name in PHASES}
    for name, fn in originals.items():
        setattr(Installation, name, _wrap(totals, name, fn))
    try:
        audited = Contender("none", None, None)  # its own tables; audit installed below
        audited.add_target("mem", "sqlite://")
        publisher = ListPublisher()
        target = audited.targets["mem"]
        install_audit(
            target.maker, publisher=publisher, service="bench", models=[target.models.item]
        )
        plain = Contender("none", None, None)
        plain.add_target("mem", "sqlite://")
        out: dict[str, Any] = {}
        for workload, n in WORKLOADS:
            rows = 2 * n if workload == "mixed" else n
            samples: dict[str, list[float]] = {
                k: [] for k in (*PHASES, "to_json", "total", "plain")
            }
            audited.run("mem", workload, n, False)  # warm-up
            plain.run("mem", workload, n, False)
            for _ in range(reps):
                for key in totals:
                    totals[key] = 0.0
                publisher.batches.clear()
                samples["total"].append(audited.run("mem", workload, n, False)["commit"] / rows)
                samples["plain"].append(plain.run("mem", workload, n, False)["commit"] / rows)
                for key in PHASES:
                    samples[key].append(totals[key] / rows)
                events = [e for batch in publisher.batches for e in batch]
                gc.disable()
                start = time.perf_counter()
                for event in events:
                    event.to_json()
                samples["to_json"].append((time.perf_counter() - start) / max(len(events), 1))
                gc.enable()
            out[f"{workload} {n}"] = {k: statistics.median(v) for k, v in samples.items()}
            progress(f"breakdown: {workload} {n}")
        uninstall_audit(target.maker)
    finally:
        for name, fn in originals.items():
            setattr(Installation, name, fn)
    return {"reps": reps, "rows": out, "elapsed_s": time.perf_counter() - started}


def render(result: dict[str, Any]) -> str:
    rows = []
    for label, data in result["rows"].items():
        audit = sum(data[p] for p in PHASES)
        rows.append(
            [
                label,
                fmt_seconds(data["plain"]),
                fmt_seconds(data["total"]),
                *(fmt_seconds(data[p]) for p in PHASES),
                fmt_seconds(audit),
                fmt_seconds(data["to_json"]),
            ]
        )
    return markdown_table(
        [
            "transaction (SQLite in memory)",
            "no audit, per row",
            "audited, per row",
            "before_flush",
            "after_flush",
            "after_flush_postexec",
            "after_commit (build + publish)",
            "listeners, sum",
            "to_json (per event)",
        ],
        rows,
    )


def main(scale: float = 1.0) -> dict[str, Any]:
    return report_part(
        "breakdown",
        "P1 breakdown — commit-path cost per changed row, by phase",
        measure(scale=scale),
        render,
    )


__all__ = ["ListPublisher", "main", "measure", "render"]
