"""Rebuild ``docs/benchmarks.md`` from the stored results (``bench/results/*.json``).

The tables are generated from the results, never typed by hand, so the document shows what
the last run measured. The discussion of the figures (why a target is missed, what to
change) is kept in ``bench/analysis.md`` and included as written; it names the run it was
written for, since a rerun updates the tables but not the prose.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, RESULTS_DIR, load_results, markdown_table, now_iso

DOC = REPO_ROOT / "docs" / "benchmarks.md"
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"
RUN_FILE = RESULTS_DIR / "run.json"

PY = ".venv/bin/python -m bench"

SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("p1", "P1 — commit-path overhead", "p1"),
    ("p1_outbox", "P1 outbox — one row per transaction against one row per event", "p1_outbox"),
    ("breakdown", "P1 breakdown — where the commit-path time goes", "breakdown"),
    ("p2", "P2 — consumer throughput into Cassandra", "p2"),
    ("p3", "P3 — diff cost per event", "p3"),
    ("p4", "P4 — end to end: commit → row in Cassandra", "p4"),
    ("p5", "P5 — delivery throughput with network latency", "p5"),
    ("p5_relay", "P5 relay — outbox to SNS with network latency", "p5_relay"),
    ("p6", "P6 — signing and verification costs", "p6"),
    ("memory", "Memory — 100,000 events pending while SNS is down", "memory"),
)


def record_run(command: str, elapsed: dict[str, float], total: float, *, full: bool) -> None:
    """Remember the command and durations of the last ``python -m bench`` invocation."""
    RESULTS_DIR.mkdir(exist_ok=True)
    previous: dict[str, Any] = {}
    if RUN_FILE.exists():
        previous = json.loads(RUN_FILE.read_text())
    part_elapsed = dict(previous.get("part_elapsed_s", {}))
    part_elapsed.update({part: round(seconds, 1) for part, seconds in elapsed.items()})
    data = dict(previous)
    data.update(
        {
            "last_command": command,
            "last_total_s": round(total, 1),
            "part_elapsed_s": part_elapsed,
            "at": now_iso(),
        }
    )
    if full:
        data["all_command"] = command
        data["all_total_s"] = round(total, 1)
        data["all_part_elapsed_s"] = {part: round(sec, 1) for part, sec in elapsed.items()}
        data["all_at"] = now_iso()
    RUN_FILE.write_text(json.dumps(data, indent=1) + "\n")


def _render(part: str, result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Not measured in the last run: {result['skipped']}"
    if part == "p1":
        from bench.p1_commit import render, spread_table  # noqa: PLC0415

        return render(result) + (
            "\n\n<details><summary>Spread of every cell (quartiles and p90)</summary>\n\n"
            + spread_table(result)
            + "\n\n</details>"
        )
    if part == "breakdown":
        from bench.breakdown import render as render_breakdown  # noqa: PLC0415

        return render_breakdown(result)
    if part == "p2":
        from bench.p2_consumer import render as render_p2  # noqa: PLC0415

        return render_p2(result)
    if part == "p3":
        from bench.p3_diff import render as render_p3  # noqa: PLC0415

        return render_p3(result)
    if part == "p4":
        from bench.p4_end_to_end import render as render_p4  # noqa: PLC0415

        return render_p4(result)
    if part == "p5":
        from bench.p5_delivery import render as render_p5  # noqa: PLC0415

        return render_p5(result)
    if part == "p1_outbox":
        from bench.p1_outbox import render as render_p1_outbox  # noqa: PLC0415

        return render_p1_outbox(result)
    if part == "p5_relay":
        from bench.p5_relay import render as render_p5_relay  # noqa: PLC0415

        return render_p5_relay(result)
    if part == "p6":
        from bench.p6_signing import render as render_p6  # noqa: PLC0415

        return render_p6(result)
    from bench.memory import render as render_memory  # noqa: PLC0415

    return render_memory(result)


def _bulk_against_baseline(result: dict[str, Any]) -> str:
    """The bulk statements of P1 run alone, with the capture of a baseline revision beside
    the current one (``python -m bench.p1_commit --only-bulk --baseline REV``)."""
    from bench.p1_commit import bulk_steps_table, bulk_table, target_lines  # noqa: PLC0415

    machine = result.get("machine", {})
    baseline = result.get("baseline")
    head = [
        "### Bulk statements (1,000 rows) against a baseline revision",
        "",
        "Reproduce: `.venv/bin/python -m bench.p1_commit --only-bulk"
        + (f" --baseline {baseline}`" if baseline else "`")
        + f" — measured {result.get('finished_at', '?')}; code: "
        f"{machine.get('code measured', '?')}; load average at the end: "
        f"{machine.get('load average (1/5/15 min)', '?')} on {machine.get('cpus (nproc)', '?')} "
        "CPUs. The bulk rows of P1 alone (saved as `bench/results/p1_bulk.json`); "
        "`--baseline REV` adds the in-memory and SNS contenders running the `sqla_audit` "
        "package of that revision, so old and new capture run side by side.",
        "",
    ]
    if "skipped" in result:
        return "\n".join([*head, f"Not measured in the last run: {result['skipped']}"])
    body = [bulk_table(result), "", bulk_steps_table(result), "", *target_lines(result)]
    return "\n".join(head + body).rstrip()


def _machine_table(results: dict[str, dict[str, Any]]) -> str:
    machine: dict[str, str] = {}
    for part, _title, _cmd in SECTIONS:
        if part in results and results[part].get("machine"):
            machine = dict(results[part]["machine"])
            break
    if not machine:
        return "No results yet: run the command above."
    machine.pop("date", None)
    return markdown_table(["", "value"], [[k, str(v)] for k, v in machine.items()])


def build(results: dict[str, dict[str, Any]]) -> str:
    run: dict[str, Any] = json.loads(RUN_FILE.read_text()) if RUN_FILE.exists() else {}
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from the results of the last run; do not edit by hand "
        "(the discussion comes from `bench/analysis.md`).",
        "",
        "## How to run",
        "",
        "```sh",
        "scripts/services up            # PostgreSQL, moto, Cassandra (writes .services.env)",
        f"{PY} all      # every part, then rewrites this file",
        f"{PY} p1       # one part: p1 breakdown p2 p3 p4 p5 memory (rewrites this file too)",
        f"{PY} report   # rewrite this file from bench/results/*.json only",
        "```",
        "",
        "`--scale 0.3` divides the repetitions for a quick look (the figures below use 1). "
        "SNS/SQS are a private moto server the benchmark starts on a free loopback port and "
        "stops afterwards (`--shared-moto` uses the one of `scripts/services` instead: it keeps "
        "the state of every test run and is slower). Every database, keyspace, topic and queue "
        "is created for the run under a unique name and dropped at the end.",
        "",
        "Method: the contenders of each part run side by side in one run, interleaved "
        "round-robin (the order rotates every round), so background load hits all of them; "
        "every figure is a median (spread in the details), every ratio a ratio of medians of "
        "the same run, and the target verdicts also check the median of the per-round ratios. "
        "Nothing here is asserted by the test suite.",
        "",
    ]
    if run.get("all_total_s") is not None:
        lines.append(
            f"Last full run: `{run.get('all_command', PY + ' all')}` took "
            f"{run['all_total_s'] / 60:.1f} min ({run.get('all_at', '?')}); per part: "
            + ", ".join(
                f"{k} {v:.0f} s"
                for k, v in run.get("all_part_elapsed_s", run.get("part_elapsed_s", {})).items()
            )
            + "."
        )
        lines.append("")
    lines += ["## Machine", "", _machine_table(results), ""]
    for part, title, cmd in SECTIONS:
        lines += [f"## {title}", ""]
        result = results.get(part)
        if result is None:
            lines += [f"Not measured yet: `{PY} {cmd}`.", ""]
            continue
        code = result.get("machine", {}).get("code measured", "?")
        lines += [
            f"Reproduce: `{PY} {cmd}` — measured {result.get('finished_at', '?')}"
            + (f" in {result['elapsed_s']:.0f} s" if "elapsed_s" in result else "")
            + f"; code: {code}.",
            "",
        ]
        doc = _module_doc(part)
        if doc:
            lines += [doc, ""]
        lines += [_render(part, result), ""]
        if part == "p1" and "p1_bulk" in results:
            lines += [_bulk_against_baseline(results["p1_bulk"]), ""]
        if part == "p1" and "p1_sns" in results:
            lines += [_sns_against_baseline(results["p1_sns"]), ""]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(lines)


def _sns_against_baseline(result: dict[str, Any]) -> str:
    """SNS mode of this tree beside a baseline revision's (``python -m bench.p1_sns``)."""
    from bench.p1_sns import render, render_cpu  # noqa: PLC0415

    machine = result.get("machine", {})
    head = [
        "### SNS mode against a baseline revision",
        "",
        "Reproduce: `.venv/bin/python -m bench.p1_sns --baseline "
        f"{result.get('baseline', 'REV')}` — "
        f"measured {result.get('finished_at', '?')}; code: "
        f"{machine.get('code measured', '?')}; load average at the end: "
        f"{machine.get('load average (1/5/15 min)', '?')}. The wall-clock table runs both "
        "revisions side by side on PostgreSQL; the CPU table (the application's thread, "
        "`time.thread_time()`, SQLite in memory) does not depend on the machine's load.",
        "",
    ]
    if "skipped" in result:
        return "\n".join([*head, f"Not measured in the last run: {result['skipped']}"])
    body = [render(result)]
    if "app_thread_cpu" in result:
        body += ["", render_cpu(result["app_thread_cpu"])]
    return "\n".join([*head, *body]).rstrip()


def _module_doc(part: str) -> str:
    """The first paragraph after the title of the part's module docstring: what it measures."""
    import importlib  # noqa: PLC0415

    name = {
        "p1": "bench.p1_commit",
        "breakdown": "bench.breakdown",
        "p2": "bench.p2_consumer",
        "p3": "bench.p3_diff",
        "p4": "bench.p4_end_to_end",
        "p5": "bench.p5_delivery",
        "p1_outbox": "bench.p1_outbox",
        "p5_relay": "bench.p5_relay",
        "p6": "bench.p6_signing",
        "memory": "bench.memory",
    }[part]
    doc = importlib.import_module(name).__doc__ or ""
    paragraphs = [p.strip() for p in doc.split("\n\n") if p.strip()]
    body = paragraphs[1:] if len(paragraphs) > 1 else []
    text = "\n\n".join(body)
    # Docstrings use reStructuredText roles and literals; Markdown wants single backticks.
    text = re.sub(r":(?:mod|func|class|meth|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def write_report(
    *,
    command: str | None = None,
    elapsed: dict[str, float] | None = None,
    total_elapsed: float | None = None,
    full: bool = False,
) -> Path:
    if command is not None and total_elapsed is not None:
        record_run(command, elapsed or {}, total_elapsed, full=full)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(build(load_results()))
    return DOC


__all__ = ["build", "record_run", "write_report"]
