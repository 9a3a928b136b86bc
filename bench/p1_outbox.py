"""P1 outbox: what outbox mode adds to a transaction, one row per event against one per transaction.

Two measurements on PostgreSQL, run side by side in one run:

* **Transactions** -- the P1 workloads (1-row and 100-row insert, update, delete, and 100
  inserts + 100 updates) with four contenders, each in its own process
  (:mod:`bench.p1_worker`): ``none`` (no audit, the baseline of every ratio), ``memory``
  (capture, envelopes and JSON with the in-memory publisher: what any mode pays), ``outbox``
  (this code: one outbox row per transaction, layout 2) and ``outbox_base`` (the
  ``sqla_audit`` package of the baseline revision, one outbox row per event, run against its
  own database on the same server).
* **The outbox write alone**, per transaction of N synthetic events (``bench.eventgen``,
  about 1.4 KB each): the JSON encoding of the N events (``to_json``), then INSERT + COMMIT
  of the already encoded events as N rows (layout 1, what the writer did before) and as one
  row holding the array (layout 2), interleaved round-robin in one process.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import (
    BenchError,
    fmt_ratio,
    fmt_seconds,
    interleaved,
    machine_info,
    markdown_table,
    now_iso,
    postgres_url,
    progress,
    ratio,
    run_part,
    summarize,
    timed,
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

#: The last revision writing one outbox row per event.
BASELINE = "ee84cca"
CONTENDERS = ("none", "memory", "outbox", "outbox_base")
LABELS = {
    "none": "no audit",
    "memory": "capture only (in-memory publisher)",
    "outbox": "outbox, one row per transaction",
    "outbox_base": "outbox, one row per event (baseline)",
}
WORKLOADS = SMALL_WORKLOADS
#: Targets for outbox mode: 100-row transactions, and one-row transactions.
TARGETS = {100: 1.3, 1: 1.15}
WRITE_SIZES = (1, 100, 1000)
WRITE_REPS = {1: 60, 100: 25, 1000: 8}
PIECES = ("json", "insert_rows", "insert_array")
PIECE_LABELS = {
    "json": "JSON encoding (to_json)",
    "insert_rows": "INSERT + COMMIT, one row per event",
    "insert_array": "INSERT + COMMIT, one row per transaction",
}
_NO_TOPIC = "arn:aws:sns:us-east-1:000000000000:unused"
_NO_ENDPOINT = "http://127.0.0.1:9"


def measure_transactions(
    base_url: str, baseline: str, scale: float, workloads: Sequence[tuple[str, int]]
) -> list[dict[str, Any]]:
    library = export_revision(baseline, Path(tempfile.mkdtemp(prefix="sqla_audit_base_")))
    names: list[str] = []
    workers: dict[str, WorkerProcess] = {}
    cells: list[dict[str, Any]] = []
    try:
        name, url = _create_pg_database(base_url)
        names.append(name)
        base_name, base_db_url = _create_pg_database(base_url)
        names.append(base_name)
        for contender in CONTENDERS:
            kind = "outbox" if contender == "outbox_base" else contender
            worker = WorkerProcess(
                kind,
                _NO_TOPIC,
                _NO_ENDPOINT,
                library if contender == "outbox_base" else None,
            )
            worker.contender = contender
            workers[contender] = worker
            answer = worker.request(
                op="target",
                name="postgres",
                url=base_db_url if contender == "outbox_base" else url,
            )
            if not answer.get("ok"):
                raise BenchError(f"{contender}: {answer.get('error')}")
        for workload, n in workloads:
            reps = max(3, round(REPS[n] * scale))
            progress(f"P1 outbox: {workload_label(workload, n)} x{reps}")
            checked: dict[str, int] = {}
            for contender in CONTENDERS:  # warm-up, and one event per changed row
                answer = workers[contender].request(
                    op="run", db="postgres", workload=workload, n=n, check=True
                )
                checked[contender] = int(answer.get("events", -1))
            samples = interleaved_commits(
                workers, CONTENDERS, reps, db="postgres", workload=workload, n=n
            )
            cells.extend(
                cell | {"events": checked[cell["contender"]]}
                for cell in sample_cells(samples, workload=workload, n=n)
            )
    finally:
        for worker in workers.values():
            worker.close()
        for name in names:
            _drop_pg_database(base_url, name)
        shutil.rmtree(library, ignore_errors=True)
    return cells


def _write_pieces(
    engine: sa.Engine, table: sa.Table, events: Sequence[Any]
) -> dict[str, Callable[[], None]]:
    """The parts of the outbox write for one transaction of ``events``."""
    from sqla_audit.events import utcnow  # noqa: PLC0415
    from sqla_audit.outbox.payloads import batch_payload  # noqa: PLC0415

    texts = [event.to_json() for event in events]
    first = events[0]
    now = utcnow()

    def row(text: str, count: int) -> dict[str, Any]:
        return {
            "event_id": str(first.event_id),
            "transaction_id": str(first.transaction_id),
            "table_name": first.table,
            "record_id": first.record_id,
            "payload": text,
            "created_at": now,
            "layout": 1 if count == 1 else 2,
            "event_count": count,
        }

    one_per_event = [row(text, 1) for text in texts]

    def encode() -> None:
        for event in events:
            event.to_json()

    def insert_rows() -> None:
        with engine.begin() as connection:
            for start in range(0, len(one_per_event), 500):
                connection.execute(table.insert(), one_per_event[start : start + 500])

    def insert_array() -> None:
        with engine.begin() as connection:
            if len(texts) == 1:
                connection.execute(table.insert(), row(texts[0], 1))
                return
            for start in range(0, len(texts), 500):
                chunk = texts[start : start + 500]
                connection.execute(table.insert(), row(batch_payload(chunk), len(chunk)))

    return {"json": encode, "insert_rows": insert_rows, "insert_array": insert_array}


def _time_piece(pieces: dict[str, Callable[[], None]], piece: str, _turn: int) -> float:
    """The wall time of one call of ``pieces[piece]``."""
    return timed(pieces[piece])[1]


def _empty(engine: sa.Engine, table: sa.Table) -> None:
    with engine.begin() as connection:
        connection.execute(table.delete())


def measure_write(base_url: str, scale: float) -> list[dict[str, Any]]:
    """The outbox write's parts, in one process, on a database of its own."""
    from bench.eventgen import event_stream  # noqa: PLC0415
    from sqla_audit.outbox import outbox_table  # noqa: PLC0415

    name, url = _create_pg_database(base_url)
    engine = sa.create_engine(url)
    table = outbox_table(sa.MetaData(), name="bench_outbox_parts")
    table.create(engine)
    cells: list[dict[str, Any]] = []
    try:
        for size in WRITE_SIZES:
            pieces = _write_pieces(engine, table, event_stream(size, seed=size))
            for warm_up in pieces.values():
                warm_up()
            reps = max(3, round(WRITE_REPS[size] * scale))
            progress(f"P1 outbox write: {size} event(s) x{reps}")
            samples = interleaved(
                PIECES,
                reps,
                functools.partial(_time_piece, pieces),
                lambda _turn: _empty(engine, table),
            )
            for piece, values in samples.items():
                cells.append(
                    {"events": size, "piece": piece, "stats": summarize(values), "samples": values}
                )
    finally:
        engine.dispose()
        _drop_pg_database(base_url, name)
    return cells


def measure(
    scale: float = 1.0,
    baseline: str = BASELINE,
    workloads: Sequence[tuple[str, int]] = WORKLOADS,
) -> dict[str, Any]:
    started = time.perf_counter()
    base_url = postgres_url()
    result: dict[str, Any] = {
        "scale": scale,
        "baseline": baseline,
        "machine": machine_info(),
    }
    result["transactions"] = measure_transactions(base_url, baseline, scale, workloads)
    result["write"] = measure_write(base_url, scale)
    result["elapsed_s"] = time.perf_counter() - started
    result["finished_at"] = now_iso()
    return result


def _median(cells: Sequence[dict[str, Any]], **where: Any) -> float | None:
    for cell in cells:
        if all(cell.get(k) == v for k, v in where.items()):
            return float(cell["stats"]["median"])
    return None


def _paired(cells: Sequence[dict[str, Any]], workload: str, n: int, contender: str) -> float | None:
    base = next(
        (c for c in cells if (c["workload"], c["n"], c["contender"]) == (workload, n, "none")),
        None,
    )
    other = next(
        (c for c in cells if (c["workload"], c["n"], c["contender"]) == (workload, n, contender)),
        None,
    )
    if base is None or other is None:
        return None
    pairs = [a / b for a, b in zip(other["samples"], base["samples"], strict=False) if b > 0]
    return statistics.median(pairs) if pairs else None


def render(result: dict[str, Any]) -> str:
    cells = result.get("transactions", [])
    workloads = list(dict.fromkeys((c["workload"], c["n"]) for c in cells))
    rows = []
    verdicts = []
    for workload, n in workloads:
        base = _median(cells, workload=workload, n=n, contender="none")
        line = [workload_label(workload, n)]
        for contender in CONTENDERS:
            value = _median(cells, workload=workload, n=n, contender=contender)
            if contender == "none":
                line.append(fmt_seconds(value))
            else:
                line.append(f"{fmt_seconds(value)} ({fmt_ratio(ratio(value, base))})")
        rows.append(line)
        limit = TARGETS.get(n)
        value = ratio(_median(cells, workload=workload, n=n, contender="outbox"), base)
        paired = _paired(cells, workload, n, "outbox")
        if limit is not None and value is not None and paired is not None:
            within = [value <= limit, paired <= limit]
            verdict = "met" if all(within) else "MISSED" if not any(within) else "unclear (noise)"
            verdicts.append(
                f"- {workload_label(workload, n)}: {fmt_ratio(value)} (per-round median "
                f"{fmt_ratio(paired)}; target ≤ {limit:.2f}x) — {verdict}"
            )
    parts = [
        f"Transactions on PostgreSQL (baseline revision {result.get('baseline')}), median "
        "per transaction (ratio to no audit):\n",
        markdown_table(["transaction", *(LABELS[c] for c in CONTENDERS)], rows),
        "\nOutbox mode against its targets (≤ 1.30x on 100 rows, ≤ 1.15x on one row):\n",
        "\n".join(verdicts),
    ]
    write = result.get("write", [])
    if write:
        write_rows = []
        for size in WRITE_SIZES:
            line = [f"{size:,}"]
            for piece in PIECES:
                value = _median(write, events=size, piece=piece)
                per_event = f"{fmt_seconds(value / size)}/event" if value is not None else "-"
                line.append(f"{fmt_seconds(value)} ({per_event})")
            write_rows.append(line)
        parts += [
            "\nThe outbox write alone (median per transaction, per event in parentheses):\n",
            markdown_table(["events", *(PIECE_LABELS[p] for p in PIECES)], write_rows),
        ]
    return "\n".join(parts)


def main(scale: float = 1.0, baseline: str = BASELINE) -> dict[str, Any]:
    return run_part(
        "p1_outbox", "P1 outbox", lambda: measure(scale=scale, baseline=baseline), render
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--baseline", default=BASELINE, help="revision writing a row per event")
    args = parser.parse_args()
    main(scale=args.scale, baseline=args.baseline)


__all__ = ["main", "measure", "render"]
