"""P3: what the diff costs per event, against plain DeepDiff on the same rows.

Two events, both updates of a 12-column row (strings, integers, a boolean, a type-tagged
decimal and timestamps):

* ``scalar`` -- two scalar columns change;
* ``nested`` -- the row also has a JSON column (a document of about 40 leaves, three
  levels deep) and one leaf inside it changes, plus one scalar column.

Contenders: :func:`consumer.differ.diff_event` (the consumer's differ: column by column,
DeepDiff only inside nested values that differ), :func:`consumer.differ.record_for_event`
(the differ plus building the stored record, for information), ``DeepDiff(before, after)``
on the whole row (the obvious implementation), and, for information, ``walk`` -- a
prototype kept here, not in the consumer: the same differ with the nested detail computed by
a direct walk over the JSON values (object keys, positions of equal-length arrays; DeepDiff
only for arrays whose length changed). The benchmark checks that it returns exactly the
consumer's answer on the measured events before timing it. Each measurement times a loop
long enough to last about 50 ms with the garbage collector paused; rounds are interleaved.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import consumer.differ as differ
from bench.common import (
    fmt_ratio,
    fmt_seconds,
    interleaved_slices,
    markdown_table,
    progress,
    ratio,
    report_part,
    summarize,
)
from bench.eventgen import make_event, nested_update, scalar_update
from consumer.differ import _strictly_equal, nested_detail
from consumer.records import NestedChange
from sqla_audit.events import Operation
from sqla_audit.serialization import TAG

ROUNDS = 9
SLICE_SECONDS = 0.05


def _events() -> dict[str, Any]:
    before, after = scalar_update(42, 7)
    scalar = make_event(Operation.UPDATE, 42, before, after)
    before, after = nested_update(42, 7)
    nested = make_event(Operation.UPDATE, 42, before, after)
    return {"scalar": scalar, "nested": nested}


def _walk(old: Any, new: Any, path: tuple[Any, ...], out: list[Any]) -> bool:
    """Collect nested changes; False when an array changed length (left to DeepDiff)."""
    if type(old) is dict and type(new) is dict and TAG not in old and TAG not in new:
        for key, value in old.items():
            if key not in new:
                out.append(NestedChange("removed", (*path, key), value, None))
            elif not _walk(value, new[key], (*path, key), out):
                return False
        out.extend(
            NestedChange("added", (*path, key), None, value)
            for key, value in new.items()
            if key not in old
        )
        return True
    if type(old) is list and type(new) is list:
        if len(old) != len(new):
            return False
        return all(
            _walk(a, b, (*path, i), out) for i, (a, b) in enumerate(zip(old, new, strict=True))
        )
    if not _strictly_equal(old, new):
        out.append(NestedChange("changed", path, old, new))
    return True


def walked_detail(old: Any, new: Any) -> tuple[Any, ...]:
    """Prototype of ``consumer.differ.nested_detail`` without DeepDiff in the common case."""
    out: list[Any] = []
    if not _walk(old, new, (), out):
        return nested_detail(old, new)
    return tuple(sorted(out, key=lambda c: [(type(p).__name__, p) for p in c.path]))


def _walk_diff(event: Any) -> object:
    original = differ.nested_detail
    differ.nested_detail = walked_detail
    try:
        return differ.diff_event(event)
    finally:
        differ.nested_detail = original


def _contenders() -> dict[str, Callable[[Any], object]]:
    from deepdiff import DeepDiff  # noqa: PLC0415

    from consumer.differ import diff_event, record_for_event  # noqa: PLC0415

    return {
        "differ": diff_event,
        "record": record_for_event,
        "deepdiff": lambda event: DeepDiff(event.before, event.after),
        "walk": _walk_diff,
    }


def measure(scale: float = 1.0) -> dict[str, Any]:
    started = time.perf_counter()
    events = _events()
    contenders = _contenders()
    rounds = max(3, round(ROUNDS * scale))
    out: dict[str, dict[str, Any]] = {}
    from consumer.differ import diff_event  # noqa: PLC0415

    for kind, event in events.items():
        if _walk_diff(event) != diff_event(event):
            raise AssertionError(f"the walk prototype disagrees with the differ on {kind}")
        samples, loops = interleaved_slices(
            {name: functools.partial(fn, event) for name, fn in contenders.items()},
            rounds,
            SLICE_SECONDS,
        )
        out[kind] = {
            "stats": {name: summarize(values) for name, values in samples.items()},
            "loops": loops,
            "columns": len(event.after),
            "changed": list(event.changed_columns),
            "bytes": len(event.to_json()),
        }
        progress(f"P3 {kind}: done")
    return {
        "scale": scale,
        "rounds": rounds,
        "kinds": out,
        "elapsed_s": time.perf_counter() - started,
    }


def render(result: dict[str, Any]) -> str:
    labels = {
        "differ": "consumer.differ.diff_event",
        "record": "consumer.differ.record_for_event (diff + record)",
        "deepdiff": "DeepDiff(before, after)",
        "walk": "for information: diff_event with a direct JSON walk (prototype in bench/)",
    }
    rows = []
    for kind, data in result["kinds"].items():
        stats = data["stats"]
        base = stats["deepdiff"]["median"]
        describe = (
            f"{kind}: {data['columns']} columns, changed {', '.join(data['changed'])} "
            f"({data['bytes']} B event)"
        )
        for name in ("differ", "record", "deepdiff", "walk"):
            s = stats[name]
            rows.append(
                [
                    describe,
                    labels[name],
                    fmt_seconds(s["median"]),
                    fmt_seconds(s["p90"]),
                    fmt_ratio(ratio(s["median"], base)),
                    fmt_ratio(ratio(base, s["median"])) if name != "deepdiff" else "-",
                ]
            )
    return markdown_table(
        ["event", "contender", "median per event", "p90", "time vs DeepDiff", "speed-up"], rows
    )


def main(scale: float = 1.0) -> dict[str, Any]:
    return report_part("p3", "P3 — diff cost per event", measure(scale=scale), render)


__all__ = ["main", "measure", "render"]
