"""P1 SNS mode, old and new commit path side by side.

The P1 workloads of 1 and 100 rows on PostgreSQL with three contenders in their own
processes, interleaved round-robin as in P1: ``none`` (no audit), ``sns`` (``SNSPublisher``
of this tree: the application's thread hands its captured changes over and the publisher's
thread builds the envelopes) and ``sns_base`` (``SNSPublisher`` of a baseline revision: the
same contender running that revision's ``sqla_audit``). ``commit`` is what the
application waits for (P1's figure); the ratios are to ``none`` of the same run.

A second measure does not depend on the machine's load: the CPU time of the application's
thread (``time.thread_time()``) per transaction of 1 and 100 inserted rows, in one process on
in-memory SQLite, with ``SNSPublisher`` building the envelopes on its thread (``deferred``) and
the same publisher with that capability hidden, so the capture library builds them at the
commit as before (``at commit``). The publisher's client is a null double: what is measured
is the application's thread, not delivery.

Run: ``python -m bench.p1_sns --baseline REV [--scale S]``; results in
``bench/results/p1_sns.json``.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PrivateMoto,
    interleaved,
    load_services_env,
    markdown_table,
    postgres_url,
    progress,
    ratio,
    save_result,
    summarize,
    unique_name,
)
from bench.p1_commit import (
    REPS,
    SMALL_WORKLOADS,
    WorkerProcess,
    _create_pg_database,
    _drop_pg_database,
    export_revision,
    interleaved_commits,
    sample_cells,
    workload_label,
)

WORKLOADS = SMALL_WORKLOADS
CONTENDERS = ("none", "sns", "sns_base")


def measure(baseline: str, scale: float = 1.0) -> dict[str, Any]:
    started = time.perf_counter()
    library = export_revision(baseline, Path(tempfile.mkdtemp(prefix="sqla_audit_base_")))
    base_pg = postgres_url()
    cells: list[dict[str, Any]] = []
    with PrivateMoto() as moto:
        topic_arn = moto.client("sns").create_topic(Name=unique_name("sqla_audit_p1sns"))[
            "TopicArn"
        ]
        pg_name, url = _create_pg_database(base_pg)
        workers: dict[str, WorkerProcess] = {}
        try:
            for contender in CONTENDERS:
                kind = "sns" if contender == "sns_base" else contender
                workers[contender] = WorkerProcess(
                    kind, topic_arn, moto.endpoint, library if contender == "sns_base" else None
                )
            for worker in workers.values():
                worker.request(op="target", name="postgres", url=url)
            for workload, n in WORKLOADS:
                reps = max(3, round(REPS[n] * scale))
                progress(f"P1 SNS postgres: {workload_label(workload, n)} x{reps}")
                for worker in workers.values():  # warm-up round, not counted
                    worker.request(op="run", db="postgres", workload=workload, n=n, check=False)
                samples = interleaved_commits(
                    workers, CONTENDERS, reps, db="postgres", workload=workload, n=n
                )
                cells.extend(sample_cells(samples, workload=workload, n=n))
        finally:
            for worker in workers.values():
                worker.close()
            _drop_pg_database(base_pg, pg_name)
    return {
        "baseline": baseline,
        "cells": cells,
        "scale": scale,
        "elapsed_s": time.perf_counter() - started,
    }


class _NullSNS:
    """A client double that accepts every entry at once."""

    def publish_batch(self, **kwargs: Any) -> dict[str, Any]:
        entries = kwargs["PublishBatchRequestEntries"]
        return {"Successful": [{"Id": e["Id"], "MessageId": "m"} for e in entries]}


def app_thread_cpu(rounds: int) -> dict[str, Any]:
    """Application-thread CPU per transaction: envelopes at commit vs on the publisher."""
    import sqlalchemy as sa  # noqa: PLC0415
    from sqlalchemy.orm import sessionmaker  # noqa: PLC0415

    from bench.models import build_models, new_object  # noqa: PLC0415
    from sqla_audit import install_audit, uninstall_audit  # noqa: PLC0415
    from sqla_audit.publishers.sns import SNSPublisher  # noqa: PLC0415

    class AtCommit(SNSPublisher):
        publish_deferred = None  # type: ignore[assignment]  # capability hidden

    setups: dict[str, Any] = {}
    for name, cls in (("at commit", AtCommit), ("deferred", SNSPublisher)):
        models = build_models(f"cpu_item_{name.replace(' ', '_')}")
        engine = sa.create_engine("sqlite://")
        models.base.metadata.create_all(engine)
        maker = sessionmaker(engine)
        publisher = cls("arn:aws:sns:us-east-1:1:cpu", client=_NullSNS(), register_atexit=False)
        install_audit(maker, publisher=publisher, service="bench")
        setups[name] = (models, maker, publisher, engine)
    next_id = 0

    def insert(rows: int, name: str, _turn: int) -> float:
        """App-thread CPU time of one transaction inserting ``rows`` rows."""
        nonlocal next_id
        models, maker, publisher, _ = setups[name]
        objects = [new_object(models, next_id + i) for i in range(rows)]
        next_id += rows
        started = time.thread_time()
        with maker.begin() as session:
            session.add_all(objects)
        spent = time.thread_time() - started
        publisher.flush(30)
        return spent

    out: dict[str, Any] = {}
    try:
        for rows in (1, 100):
            samples = interleaved(setups, rounds, functools.partial(insert, rows))
            for name, values in samples.items():
                out[f"{name}/{rows}"] = summarize(values) | {"samples": values}
    finally:
        for _models, maker, publisher, engine in setups.values():
            uninstall_audit(maker)
            publisher.close(5)
            engine.dispose()
    return out


def render_cpu(cpu: dict[str, Any]) -> str:
    rows = []
    for n in (1, 100):
        old = cpu[f"at commit/{n}"]["median"]
        new = cpu[f"deferred/{n}"]["median"]
        rows.append(
            [
                f"insert {n}",
                f"{old * 1e6:,.0f} µs",
                f"{new * 1e6:,.0f} µs",
                f"{(old - new) / n * 1e6:,.1f} µs",
            ]
        )
    return markdown_table(
        [
            "SQLite in memory, transaction",
            "app-thread CPU, envelopes built at the commit",
            "built on the publisher's thread",
            "saved per row",
        ],
        rows,
    )


def render(result: dict[str, Any]) -> str:
    medians = {
        (c["workload"], c["n"], c["contender"]): c["stats"]["median"] for c in result["cells"]
    }
    rows = []
    for workload, n in WORKLOADS:
        none = medians.get((workload, n, "none"))
        new = medians.get((workload, n, "sns"))
        old = medians.get((workload, n, "sns_base"))
        rows.append(
            [
                workload_label(workload, n),
                f"{none * 1e3:.2f} ms" if none else "-",
                f"{old * 1e3:.2f} ms" if old else "-",
                f"{new * 1e3:.2f} ms" if new else "-",
                f"{ratio(old, none):.2f}x" if ratio(old, none) else "-",
                f"{ratio(new, none):.2f}x" if ratio(new, none) else "-",
            ]
        )
    return markdown_table(
        [
            "PostgreSQL transaction",
            "no audit",
            f"SNSPublisher at {result['baseline']}",
            "SNSPublisher, this code",
            "ratio before",
            "ratio now",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.p1_sns", description=__doc__)
    parser.add_argument("--baseline", required=True, help="git revision for sns_base")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    load_services_env()
    result = measure(args.baseline, args.scale)
    result["app_thread_cpu"] = app_thread_cpu(max(20, round(200 * args.scale)))
    print(render(result))
    print()
    print(render_cpu(result["app_thread_cpu"]))
    save_result("p1_sns", result)


if __name__ == "__main__":
    main()


__all__ = ["main", "measure", "render"]
