"""``python -m bench all|p1|p1_outbox|breakdown|p2|p3|p4|p5|p5_relay|p6|memory|report``: run
parts, print tables.

``all`` runs every part, then rewrites ``docs/benchmarks.md`` from the results; a single part
updates its own results file and the document too, so the document always shows the latest
figure of each part with the command that produced it. ``--scale`` multiplies the number of
repetitions (0.3 for a quick look; the document's figures use 1).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench.common import REPO_ROOT, load_services_env, progress

PARTS = ("p1", "p1_outbox", "breakdown", "p2", "p3", "p4", "p5", "p5_relay", "p6", "memory")


def _runner(part: str) -> Callable[..., Any]:
    if part == "p1":
        from bench.p1_commit import main as p1  # noqa: PLC0415

        return p1
    if part == "breakdown":
        from bench.breakdown import main as breakdown  # noqa: PLC0415

        return breakdown
    if part == "p2":
        from bench.p2_consumer import main as p2  # noqa: PLC0415

        return p2
    if part == "p3":
        from bench.p3_diff import main as p3  # noqa: PLC0415

        return p3
    if part == "p4":
        from bench.p4_end_to_end import main as p4  # noqa: PLC0415

        return p4
    if part == "p5":
        from bench.p5_delivery import main as p5  # noqa: PLC0415

        return p5
    if part == "p1_outbox":
        from bench.p1_outbox import main as p1_outbox  # noqa: PLC0415

        return p1_outbox
    if part == "p5_relay":
        from bench.p5_relay import main as p5_relay  # noqa: PLC0415

        return p5_relay
    if part == "p6":
        from bench.p6_signing import main as p6  # noqa: PLC0415

        return p6
    if part == "memory":
        from bench.memory import main as memory  # noqa: PLC0415

        return memory
    raise ValueError(part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("part", choices=("all", *PARTS, "report"))
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply repetition counts (default 1)"
    )
    parser.add_argument(
        "--shared-moto",
        action="store_true",
        help="use the moto server of scripts/services (AWS_ENDPOINT_URL) instead of a private one",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    load_services_env()
    started = time.perf_counter()
    parts = PARTS if args.part == "all" else () if args.part == "report" else (args.part,)
    elapsed: dict[str, float] = {}
    failed: list[str] = []
    for part in parts:
        part_started = time.perf_counter()
        progress(f"== {part}")
        kwargs: dict[str, Any] = {"scale": args.scale}
        if part in ("p1", "p4"):
            kwargs["shared_moto"] = args.shared_moto
        try:
            _runner(part)(**kwargs)
        except Exception:  # one broken part must not lose the others' results
            failed.append(part)
            progress(f"== {part} FAILED (its previous results are kept):\n{traceback.format_exc()}")
            continue
        elapsed[part] = time.perf_counter() - part_started
        progress(f"== {part} took {elapsed[part]:.0f} s")
    from bench.report import write_report  # noqa: PLC0415

    words = sys.argv[1:] if argv is None else list(argv)
    command = " ".join([".venv/bin/python -m bench", *words])
    total = time.perf_counter() - started
    path = write_report(
        command=command if parts else None,
        elapsed=elapsed,
        total_elapsed=total,
        full=args.part == "all",
    )
    print(f"\nwrote {path.relative_to(REPO_ROOT)}")
    print(f"total elapsed: {total:.0f} s ({total / 60:.1f} min)")
    if failed:
        print(f"failed parts: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
