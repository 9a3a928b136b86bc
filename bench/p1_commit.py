"""P1: what auditing adds to the application's transactions (the commit path).

Workloads: transactions of 1, 100 and 1,000 rows that insert, update or delete, plus one
that inserts 100 rows and updates 100 others, plus one ORM-enabled bulk ``UPDATE ... WHERE``
and one bulk ``DELETE ... WHERE`` of 1,000 rows, on SQLite (a file, default journal), on
PostgreSQL and on MariaDB (when ``SQLA_AUDIT_TEST_MARIADB_URL`` is set).
Contenders, each in its own process (see :mod:`bench.p1_worker`):

* ``none`` -- plain SQLAlchemy, the baseline of every ratio;
* ``memory`` -- sqla-audit with ``InMemoryPublisher`` (capture + envelope + JSON, no I/O);
* ``sns`` -- sqla-audit with ``SNSPublisher`` to a local SNS endpoint (moto). ``commit`` is
  what the application waits for; ``delivered`` is from the start of the transaction until
  ``publisher.flush()`` returned, i.e. until SNS accepted every event (background work);
* ``outbox`` -- sqla-audit in outbox mode: events inserted by ``OutboxWriter`` in the same
  transaction (the relay is not running: its cost is not on the commit path);
* ``continuum`` -- SQLAlchemy-Continuum 2.x, default configuration (``user_cls=None``), on
  the same model and workload: the usual alternative, writing version rows in-transaction
  (not run on bulk statements, which it does not version);
* ``memory_base`` and ``sns_base`` -- only with a baseline revision (``--baseline REV``,
  bulk statements only): the ``memory`` and ``sns`` contenders running the ``sqla_audit``
  package of that git revision, so a change to the capture is measured against the old
  code in the same run.

Each repetition runs every contender once, in an order that rotates every round, so slow
phases of the machine hit all contenders alike. The 1-row transactions get one
warm-up round (not counted) that loads every code path; the first timed round of every
workload also checks that each audit contender produced one event (or version row) per
changed row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.common import (
    REPO_ROOT,
    BenchError,
    PrivateMoto,
    fmt_ratio,
    fmt_seconds,
    interleaved,
    mariadb_url,
    markdown_table,
    postgres_url,
    progress,
    ratio,
    run_part,
    save_result,
    summarize,
    unique_name,
)

CONTENDERS: tuple[str, ...] = ("none", "memory", "sns", "outbox", "continuum")
#: With a baseline revision (bulk statements only): its in-memory and SNS contenders.
BASELINE_CONTENDERS: tuple[str, ...] = ("memory_base", "sns_base")
#: The databases P1 runs on (MariaDB only when its URL is configured).
DATABASES: tuple[str, ...] = ("sqlite", "postgres", "mariadb")
LABELS = {
    "none": "no audit",
    "memory": "sqla-audit, in-memory publisher",
    "memory_base": "sqla-audit at the baseline revision, in-memory publisher",
    "sns_base": "sqla-audit at the baseline revision, SNSPublisher (commit)",
    "sns": "sqla-audit, SNSPublisher (commit)",
    "sns_delivered": "SNSPublisher, until delivered",
    "outbox": "sqla-audit, outbox mode",
    "continuum": "SQLAlchemy-Continuum",
}
#: The transactions of one and of 100 rows (P1 outbox and P1 SNS measure these alone).
SMALL_WORKLOADS: tuple[tuple[str, int], ...] = (
    ("insert", 1),
    ("update", 1),
    ("delete", 1),
    ("insert", 100),
    ("update", 100),
    ("delete", 100),
    ("mixed", 100),
)
WORKLOADS: tuple[tuple[str, int], ...] = (
    *SMALL_WORKLOADS,
    ("insert", 1000),
    ("update", 1000),
    ("delete", 1000),
    ("bulk_update", 1000),
    ("bulk_delete", 1000),
)
#: The ORM-enabled bulk statements (``session.execute(update(...).where(...))``).
BULK_WORKLOADS: tuple[tuple[str, int], ...] = tuple(w for w in WORKLOADS if w[0].startswith("bulk"))
#: Timed repetitions per transaction size (scaled by ``--scale``).
REPS = {1: 20, 100: 15, 1000: 4}
#: Timed repetitions of a bulk statement (one statement is quick: more rounds).
BULK_REPS = 9

#: Targets of the issue, for the 100-row transactions on PostgreSQL.
TARGETS = {"sns": 1.15, "outbox": 1.3}
#: Bulk statements on PostgreSQL: audited at most this many times the unaudited statement.
BULK_TARGET = 3.0


def workload_label(workload: str, n: int) -> str:
    if workload == "mixed":
        return f"insert {n} + update {n}"
    if workload.startswith("bulk_"):
        return f"bulk {workload[5:].upper()} {n:,}"
    return f"{workload} {n:,}"


def runs(contender: str, workload: str) -> bool:
    """Whether ``contender`` takes part in ``workload``."""
    bulk = workload.startswith("bulk_")
    if contender == "continuum":
        return not bulk  # Continuum versions unit-of-work changes only
    if contender in BASELINE_CONTENDERS:
        return bulk
    return True


def python_command(library_path: str | None) -> tuple[list[str], dict[str, str] | None]:
    """The interpreter command and environment of a contender process.

    With ``library_path`` (another revision's ``sqla_audit``, see :func:`export_revision`)
    that package must come first. ``python -m`` would put the working directory -- this
    checkout, with its own ``sqla_audit`` -- ahead of ``PYTHONPATH``, so the process runs
    with ``-P`` (no such entry) and finds the ``bench`` package through ``PYTHONPATH``
    after the library.
    """
    if library_path is None:
        return [sys.executable], None
    path = os.pathsep.join([library_path, str(REPO_ROOT)])
    return [sys.executable, "-P"], {**os.environ, "PYTHONPATH": path}


class WorkerProcess:
    """A contender process driven over stdin/stdout (JSON lines)."""

    def __init__(
        self, contender: str, topic_arn: str, endpoint: str, library_path: str | None = None
    ) -> None:
        self.contender = contender
        self.error: str | None = None
        python, env = python_command(library_path)
        self.process = subprocess.Popen(
            [
                *python,
                "-m",
                "bench.p1_worker",
                "--contender",
                contender.removesuffix("_base"),
                "--topic-arn",
                topic_arn,
                "--endpoint",
                endpoint,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )
        hello = self._read()
        if not hello.get("ok"):
            self.error = str(hello.get("error"))

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            return {"ok": False, "error": f"worker {self.contender} exited"}
        answer: dict[str, Any] = json.loads(line)
        return answer

    def request(self, **command: Any) -> dict[str, Any]:
        if self.error is not None:
            return {"ok": False, "error": self.error}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if not answer.get("ok"):
            self.error = str(answer.get("error"))
            progress(f"  {self.contender}: {self.error}\n{answer.get('trace', '')}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                if self.error is None:
                    self.request(op="quit")
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(30)
                if self.process.stdout is not None:
                    self.process.stdout.close()
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.process.kill()
                self.process.wait(10)


def _create_pg_database(base_url: str) -> tuple[str, str]:
    name = unique_name("sqla_audit_bench")
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if admin.dialect.name == "postgresql":
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    admin.dispose()
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    return name, url


def _drop_pg_database(base_url: str, name: str, attempts: int = 10) -> None:
    """Drop a benchmark database. ``WITH (FORCE)`` is refused while an autovacuum worker
    (a superuser's process) works on it, which is likely right after a benchmark wrote and
    deleted many rows: then the plain ``DROP`` (which stops autovacuum itself) is retried."""
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if admin.dialect.name != "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
                return
            for attempt in range(attempts):
                force = " WITH (FORCE)" if attempt == 0 else ""
                try:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"{force}'))
                    return
                except sa.exc.DBAPIError:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(1.0)
    finally:
        admin.dispose()


def export_revision(revision: str, into: Path) -> str:
    """Write the ``sqla_audit`` package of git ``revision`` under ``into``; its import path."""
    archive = subprocess.run(
        ["git", "archive", revision, "sqla_audit"], cwd=REPO_ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return str(into)


def _expected_events(contender: str, workload: str, n: int) -> int:
    if contender == "none":
        return 0
    return 2 * n if workload == "mixed" else n


def available_databases() -> tuple[str, ...]:
    """SQLite, PostgreSQL, and MariaDB when its URL is configured."""
    try:
        mariadb_url()
    except BenchError as exc:
        progress(f"P1 without MariaDB: {exc}")
        return ("sqlite", "postgres")
    return DATABASES


def measure(
    scale: float = 1.0,
    dbs: Sequence[str] = ("sqlite", "postgres"),
    shared_moto: bool = False,
    contenders: Sequence[str] = CONTENDERS,
    workloads: Sequence[tuple[str, int]] = WORKLOADS,
    baseline: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    base_pg = postgres_url() if "postgres" in dbs else ""
    base_maria = mariadb_url() if "mariadb" in dbs else ""
    tmp = Path(tempfile.mkdtemp(prefix="sqla_audit_bench_"))
    pg_name = maria_name = ""
    urls: dict[str, str] = {}
    library: str | None = None
    if baseline is not None:
        contenders = [*contenders, *BASELINE_CONTENDERS]
        library = export_revision(baseline, Path(tempfile.mkdtemp(prefix="sqla_audit_base_")))
    workers: dict[str, WorkerProcess] = {}
    cells: list[dict[str, Any]] = []
    servers: dict[str, str] = {}
    failures: dict[str, str] = {}
    with PrivateMoto(shared=shared_moto) as moto:
        sns = moto.client("sns")
        topic_arn = sns.create_topic(Name=unique_name("sqla_audit_bench"))["TopicArn"]
        try:
            if base_pg:
                pg_name, urls["postgres"] = _create_pg_database(base_pg)
            if base_maria:
                maria_name, urls["mariadb"] = _create_pg_database(base_maria)
            for contender in contenders:
                workers[contender] = WorkerProcess(
                    contender,
                    topic_arn,
                    moto.endpoint,
                    library if contender in BASELINE_CONTENDERS else None,
                )
            for db in dbs:
                for contender, worker in workers.items():
                    url = f"sqlite:///{tmp / (contender + '.db')}" if db == "sqlite" else urls[db]
                    info = worker.request(op="target", name=db, url=url)
                    if info.get("ok"):
                        servers[db] = str(info.get("server"))
            for db in dbs:
                for workload, n in workloads:
                    bulk = workload.startswith("bulk_")
                    reps = max(3, round((BULK_REPS if bulk else REPS[n]) * scale))
                    progress(f"P1 {db}: {workload_label(workload, n)} x{reps}")
                    cells.extend(_workload_cells(workers, db, workload, n, reps, failures))
        finally:
            for worker in workers.values():
                worker.close()
            for contender, worker in workers.items():
                if worker.error is not None:
                    failures.setdefault(contender, worker.error)
            try:
                sns.delete_topic(TopicArn=topic_arn)
            except Exception as exc:
                progress(f"could not delete the topic: {exc}")
            if pg_name:
                _drop_pg_database(base_pg, pg_name)
            if maria_name:
                _drop_pg_database(base_maria, maria_name)
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "scale": scale,
        "dbs": list(dbs),
        "workloads": [list(w) for w in workloads],
        "baseline": baseline,
        "servers": servers,
        "moto": "shared" if shared_moto else "private",
        "cells": cells,
        "failures": failures,
        "elapsed_s": time.perf_counter() - started,
    }


def _workload_cells(
    workers: dict[str, WorkerProcess],
    db: str,
    workload: str,
    n: int,
    reps: int,
    failures: dict[str, str],
) -> list[dict[str, Any]]:
    """One workload on one database: every live contender, interleaved over ``reps`` rounds.

    A wrong event count in the first (checked) round goes into ``failures``."""
    executes: dict[str, list[float]] = {c: [] for c in workers}
    row_images: dict[str, list[float]] = {c: [] for c in workers}
    delivered: list[float] = []
    live = [c for c in workers if workers[c].error is None and runs(c, workload)]
    # warm-up: the first bulk statement, and the first transactions of each kind, load code
    if workload.startswith("bulk_") or n == 1:
        for contender in live:
            workers[contender].request(op="run", db=db, workload=workload, n=n, check=False)

    def run(contender: str, rep: int) -> float | None:
        # The first round also checks one event per changed row (the counting happens
        # outside the timed region).
        answer = workers[contender].request(op="run", db=db, workload=workload, n=n, check=rep == 0)
        if not answer.get("ok"):
            return None
        expected = _expected_events(contender, workload, n)
        if rep == 0 and answer.get("events") != expected:
            failures[f"{contender}/{db}/{workload}/{n}"] = (
                f"expected {expected} events, got {answer.get('events')}"
            )
        if "execute" in answer:
            executes[contender].append(float(answer["execute"]))
        if "row_images" in answer:
            row_images[contender].append(float(answer["row_images"]))
        if "delivered" in answer and contender == "sns":
            delivered.append(float(answer["delivered"]))
        return float(answer["commit"])

    series = {c: s for c, s in interleaved(live, reps, run).items() if s}
    if delivered:
        series["sns_delivered"] = delivered
    cells = sample_cells(series, db=db, workload=workload, n=n)
    for cell in cells:
        if executes.get(cell["contender"]):
            cell["execute_samples"] = executes[cell["contender"]]
        if row_images.get(cell["contender"]):
            cell["row_images_samples"] = row_images[cell["contender"]]
    return cells


def interleaved_commits(
    workers: Mapping[str, WorkerProcess], contenders: Sequence[str], reps: int, **run: Any
) -> dict[str, list[float]]:
    """Commit times of ``run`` (``db``, ``workload``, ``n``; unchecked) in each contender's
    worker, interleaved over ``reps`` rounds; a failed run gives no sample."""

    def commit(contender: str, _turn: int) -> float | None:
        answer = workers[contender].request(op="run", check=False, **run)
        return float(answer["commit"]) if answer.get("ok") else None

    return interleaved(contenders, reps, commit)


def sample_cells(samples: Mapping[str, list[float]], **keys: Any) -> list[dict[str, Any]]:
    """A result cell per contender that has samples: ``keys``, the contender, the samples'
    statistics and the samples."""
    return [
        {**keys, "contender": contender, "stats": summarize(values), "samples": values}
        for contender, values in samples.items()
        if values
    ]


# --------------------------------------------------------------------------- tables


def _cell(
    cells: Sequence[dict[str, Any]], db: str, workload: str, n: int, contender: str
) -> dict[str, Any] | None:
    """The first cell of ``contender`` on ``db`` for the workload, if any."""
    for cell in cells:
        if (cell["db"], cell["workload"], cell["n"], cell["contender"]) == (
            db,
            workload,
            n,
            contender,
        ):
            return cell
    return None


def _median(
    cells: Sequence[dict[str, Any]], db: str, workload: str, n: int, contender: str
) -> float | None:
    cell = _cell(cells, db, workload, n, contender)
    return None if cell is None else float(cell["stats"]["median"])


def ratio_tables(result: dict[str, Any]) -> str:
    """Per database: median time per transaction and its ratio to no audit."""
    cells = result["cells"]
    columns = ["none", "memory", "sns", "sns_delivered", "outbox", "continuum"]
    out = []
    for db in result["dbs"]:
        rows = []
        for workload, n in _workloads(result):
            base = _median(cells, db, workload, n, "none")
            row = [workload_label(workload, n)]
            for contender in columns:
                value = _median(cells, db, workload, n, contender)
                if value is None:
                    row.append("-")
                elif contender == "none":
                    row.append(fmt_seconds(value))
                else:
                    row.append(f"{fmt_seconds(value)} ({fmt_ratio(ratio(value, base))})")
            rows.append(row)
        server = result.get("servers", {}).get(db, db)
        headers = ["transaction", *(LABELS[c] for c in columns)]
        out.append(f"**{server}** — median per transaction (ratio to no audit)\n")
        out.append(markdown_table(headers, rows))
        out.append("")
    return "\n".join(out)


def _workloads(result: dict[str, Any]) -> list[tuple[str, int]]:
    return [(str(w), int(n)) for w, n in result.get("workloads", WORKLOADS)]


def bulk_table(result: dict[str, Any]) -> str:
    """Bulk statements per database: no audit, audited before (baseline) and after, ratios."""
    cells = result["cells"]
    baseline = result.get("baseline")
    headers = ["database", "statement", "no audit"]
    if baseline:
        headers += [f"in-memory publisher, {baseline}", f"SNSPublisher (commit), {baseline}"]
    headers += ["audited (in-memory publisher)", "SNSPublisher (commit)", "outbox mode"]
    rows = []
    for db in result["dbs"]:
        for workload, n in _workloads(result):
            if not workload.startswith("bulk_"):
                continue
            base = _median(cells, db, workload, n, "none")
            row = [db, workload_label(workload, n), fmt_seconds(base)]
            wanted = list(BASELINE_CONTENDERS) if baseline else []
            for contender in [*wanted, "memory", "sns", "outbox"]:
                value = _median(cells, db, workload, n, contender)
                paired = paired_ratio(result, db, workload, n, contender)
                row.append(
                    "-"
                    if value is None
                    else f"{fmt_seconds(value)} ({fmt_ratio(ratio(value, base))}; "
                    f"per-round {fmt_ratio(paired)})"
                )
            rows.append(row)
    return markdown_table(headers, rows) if rows else ""


def _execute_median(
    cells: Sequence[dict[str, Any]],
    db: str,
    workload: str,
    n: int,
    contender: str,
    key: str = "execute_samples",
) -> float | None:
    cell = _cell(cells, db, workload, n, contender)
    return float(statistics.median(cell[key])) if cell is not None and cell.get(key) else None


def bulk_steps_table(result: dict[str, Any]) -> str:
    """Bulk statements split in two: ``session.execute()`` (the statement and, audited, its
    capture) and the commit after it (audited: the events built and handed over), with
    what auditing adds to each (medians of the same rounds)."""
    cells = result["cells"]
    contenders = ["none", "memory", "sns", "outbox"]
    if result.get("baseline"):
        contenders += [c for c in BASELINE_CONTENDERS if c != "memory_base"]
    rows = []
    for db in result["dbs"]:
        for workload, n in _workloads(result):
            if not workload.startswith("bulk_"):
                continue
            executes = {c: _execute_median(cells, db, workload, n, c) for c in contenders}
            totals = {c: _median(cells, db, workload, n, c) for c in contenders}
            if executes["none"] is None or totals["none"] is None:
                continue
            images = {
                c: _execute_median(cells, db, workload, n, c, "row_images_samples")
                for c in contenders
            }
            steps = ["statement", "commit"]
            if any(value is not None for value in images.values()):
                steps.insert(1, "of which row images")
            for step in steps:
                row = [db, workload_label(workload, n), step]
                base: float | None = None
                for contender in contenders:
                    execute, total = executes[contender], totals[contender]
                    if step == "of which row images":
                        image = images[contender]
                        row.append("-" if image is None else fmt_seconds(image))
                        continue
                    if execute is None or total is None:
                        row.append("-")
                        continue
                    value = execute if step == "statement" else max(total - execute, 0.0)
                    if contender == "none":
                        base = value
                        row.append(fmt_seconds(value))
                    else:
                        added = value - (base or 0.0)
                        row.append(f"{fmt_seconds(value)} (+{fmt_seconds(max(added, 0.0))})")
                rows.append(row)
    if not rows:
        return ""
    return markdown_table(["database", "statement", "step", *(LABELS[c] for c in contenders)], rows)


def spread_table(result: dict[str, Any]) -> str:
    """Every cell with its quartiles and p90, for readers who want the spread."""
    rows = []
    for cell in result["cells"]:
        stats = cell["stats"]
        rows.append(
            [
                cell["db"],
                workload_label(cell["workload"], cell["n"]),
                LABELS[cell["contender"]],
                str(int(stats["n"])),
                fmt_seconds(stats["median"]),
                f"{fmt_seconds(stats['q1'])} - {fmt_seconds(stats['q3'])}",
                fmt_seconds(stats["p90"]),
            ]
        )
    return markdown_table(
        ["db", "transaction", "contender", "reps", "median", "IQR (q1 - q3)", "p90"], rows
    )


def _samples(
    cells: Sequence[dict[str, Any]], db: str, workload: str, n: int, contender: str
) -> list[float]:
    for cell in cells:
        if (cell["db"], cell["workload"], cell["n"], cell["contender"]) == (
            db,
            workload,
            n,
            contender,
        ):
            return [float(x) for x in cell["samples"]]
    return []


def paired_ratio(
    result: dict[str, Any], db: str, workload: str, n: int, contender: str
) -> float | None:
    """Median of the per-round ratios contender / no audit (rounds are interleaved).

    Less sensitive than the ratio of medians to slow phases of the machine: both
    transactions of a pair ran within a second of each other.
    """
    mine = _samples(result["cells"], db, workload, n, contender)
    base = _samples(result["cells"], db, workload, n, "none")
    pairs = [a / b for a, b in zip(mine, base, strict=False) if b > 0]
    return statistics.median(pairs) if pairs else None


def target_lines(result: dict[str, Any]) -> list[str]:
    """The targets (PostgreSQL, 100-row transactions and bulk statements): met or missed.

    A target counts as met when both the ratio of medians and the median of per-round
    ratios are within it; when only one is, the run was too noisy to tell.
    """
    lines: list[str] = []
    if "postgres" not in result["dbs"]:
        return lines
    for workload, n in _workloads(result):
        bulk = workload.startswith("bulk_")
        if n != 100 and not bulk:
            continue
        base = _median(result["cells"], "postgres", workload, n, "none")
        limits = dict.fromkeys(("memory", "sns"), BULK_TARGET) if bulk else TARGETS
        for contender, limit in limits.items():
            value = ratio(_median(result["cells"], "postgres", workload, n, contender), base)
            paired = paired_ratio(result, "postgres", workload, n, contender)
            if value is None or paired is None:
                continue
            within = [value <= limit, paired <= limit]
            verdict = "met" if all(within) else "MISSED" if not any(within) else "unclear (noise)"
            lines.append(
                f"- {workload_label(workload, n)}, {LABELS[contender]}: {fmt_ratio(value)} "
                f"(per-round median {fmt_ratio(paired)}; target ≤ {limit:.2f}x) — {verdict}"
            )
    return lines


def render(result: dict[str, Any]) -> str:
    parts = [ratio_tables(result)]
    bulk = bulk_table(result)
    if bulk:
        parts.append("Bulk statements (median per transaction; ratio to no audit):\n")
        parts.append(bulk + "\n")
    steps = bulk_steps_table(result)
    if steps:
        parts.append(
            "Bulk statements by step (medians; in parentheses what auditing adds): "
            "`statement` is until `session.execute()` returned (the statement and its "
            "capture), `of which row images` the capture's Python work building the row "
            "changes from the rows read (compare, encode both images, `RowChange`), "
            "`commit` the rest of the transaction (the events built and handed to the "
            "publisher, or written to the outbox):\n"
        )
        parts.append(steps + "\n")
    targets = target_lines(result)
    if targets:
        parts.append("Targets (PostgreSQL, 100-row transactions and bulk statements):\n")
        parts.append("\n".join(targets))
    if result.get("failures"):
        parts.append("\nProblems:\n")
        parts.extend(f"- {k}: {v}" for k, v in result["failures"].items())
    return "\n".join(parts)


def main(scale: float = 1.0, shared_moto: bool = False) -> dict[str, Any]:
    return run_part(
        "p1",
        "P1 — commit-path overhead",
        lambda: measure(scale=scale, shared_moto=shared_moto, dbs=available_databases()),
        render,
    )


def main_bulk(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m bench.p1_commit --only-bulk [--baseline REV]``: the bulk rows of P1 alone.

    Saved as ``bench/results/p1_bulk.json`` (the full P1 result is left as it is).
    """
    parser = argparse.ArgumentParser(description=main_bulk.__doc__)
    parser.add_argument("--only-bulk", action="store_true", required=True)
    parser.add_argument(
        "--baseline",
        help="git revision whose sqla_audit runs as memory_base and sns_base",
    )
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = measure(
        scale=args.scale,
        dbs=available_databases(),
        contenders=("none", "memory", "sns", "outbox"),
        workloads=BULK_WORKLOADS,
        baseline=args.baseline,
    )
    print(render(result))
    save_result("p1_bulk", result)
    return result


__all__ = ["BULK_WORKLOADS", "CONTENDERS", "WORKLOADS", "main", "main_bulk", "measure", "render"]


if __name__ == "__main__":
    main_bulk()
