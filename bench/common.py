"""What every benchmark part shares: services, statistics, tables, results, machine facts.

Statistics are order statistics (median, quartiles, p90/p99) because benchmark timings have
long right tails (a garbage collection, a neighbour's compile job): a mean would move with
every outlier, a median does not. Ratios are ratios of medians measured in the same run.

Results are written as JSON under ``bench/results/`` (one file per part) so that
``python -m bench report`` can rebuild ``docs/benchmarks.md`` without measuring again.
"""

from __future__ import annotations

import datetime as dt
import gc
import ipaddress
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench.loopback import free_port

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SERVICES_ENV_FILE = REPO_ROOT / ".services.env"

POSTGRES_ENV = "SQLA_AUDIT_TEST_POSTGRES_URL"
MARIADB_ENV = "SQLA_AUDIT_TEST_MARIADB_URL"
AWS_ENV = "AWS_ENDPOINT_URL"
CASSANDRA_ENV = "SQLA_AUDIT_TEST_CASSANDRA"


class BenchError(RuntimeError):
    """A benchmark cannot run (a service is missing or misconfigured)."""


# --------------------------------------------------------------------------- services


def load_services_env(path: Path = SERVICES_ENV_FILE) -> dict[str, str]:
    """Read ``.services.env`` (``export K=V`` lines) into ``os.environ`` where unset.

    Variables already in the environment win, so a caller can point a part elsewhere --
    as long as it is a loopback address (see :func:`require_loopback`).
    """
    found: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)$", line)
            if match:
                name, value = match.group(1), match.group(2).strip().strip("'\"")
                found[name] = value
                os.environ.setdefault(name, value)
    return found


def require_env(name: str) -> str:
    """The value of a service variable, or a :class:`BenchError` saying how to get it."""
    load_services_env()
    value = os.environ.get(name, "").strip()
    if not value:
        raise BenchError(f"{name} is not set: run `scripts/services up` (it writes .services.env)")
    return value


def require_loopback(host: str | None, what: str) -> str:
    """Refuse any host that is not this machine: benchmarks never leave it."""
    if host is None or not host:
        raise BenchError(f"{what}: no host")
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise BenchError(f"{what}: {host!r} is not a loopback address; benchmarks only run locally")


def postgres_url() -> str:
    url = require_env(POSTGRES_ENV)
    require_loopback(urlsplit(url.replace("+psycopg", "")).hostname, POSTGRES_ENV)
    return url


def mariadb_url() -> str:
    url = require_env(MARIADB_ENV)
    require_loopback(urlsplit(url.replace("+pymysql", "")).hostname, MARIADB_ENV)
    return url


def aws_endpoint() -> str:
    url = require_env(AWS_ENV)
    require_loopback(urlsplit(url).hostname, AWS_ENV)
    return url


def cassandra_contact() -> tuple[str, int]:
    value = require_env(CASSANDRA_ENV)
    host, _, port = value.rpartition(":")
    if not host:
        host, port = value, "9042"
    return require_loopback(host, CASSANDRA_ENV), int(port)


def unique_name(prefix: str) -> str:
    """A database/keyspace/topic name no other run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- statistics


def quantile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between order statistics."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, p90, p99, min and count of ``samples``."""
    return {
        "n": float(len(samples)),
        "median": statistics.median(samples),
        "q1": quantile(samples, 0.25),
        "q3": quantile(samples, 0.75),
        "p90": quantile(samples, 0.90),
        "p99": quantile(samples, 0.99),
        "min": min(samples),
        "max": max(samples),
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """``items`` starting at position ``turn`` (round-robin order that moves each round)."""
    if not items:
        return []
    k = turn % len(items)
    return [*items[k:], *items[:k]]


def interleaved(
    contenders: Iterable[str],
    rounds: int,
    run: Callable[[str, int], T | None],
    after_round: Callable[[int], object] | None = None,
) -> dict[str, list[T]]:
    """Run every contender once per round, side by side, the order rotating every round.

    ``run(contender, turn)`` measures one contender in round ``turn`` (from 0); its results
    are collected per contender, in round order, leaving out ``None`` (a failed run).
    ``after_round(turn)``, if given, runs after each round (a reset, not measured). Each
    contender runs in every round and the first place moves round by round, so background
    load slows every contender alike and no contender always runs after the same other one.
    """
    names = list(contenders)
    samples: dict[str, list[T]] = {name: [] for name in names}
    for turn in range(rounds):
        for name in rotated(names, turn):
            value = run(name, turn)
            if value is not None:
                samples[name].append(value)
        if after_round is not None:
            after_round(turn)
    return samples


def per_call(fn: Callable[[], object], loops: int) -> float:
    """The wall time of one call of ``fn``: ``loops`` calls timed together, the garbage
    collector paused (a collection would land on whichever contender runs at the time)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        return (time.perf_counter() - start) / loops
    finally:
        gc.enable()


def interleaved_slices(
    contenders: Mapping[str, Callable[[], object]], rounds: int, slice_seconds: float
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Per-call times of quick ``contenders``, interleaved over ``rounds``: each sample is a
    loop of calls lasting about ``slice_seconds`` (the count estimated from 20 calls, which
    also warm up). Returns the samples and each contender's loop count."""
    loops = {
        name: max(20, int(slice_seconds / max(per_call(fn, 20), 1e-7)))
        for name, fn in contenders.items()
    }
    samples = interleaved(
        contenders, rounds, lambda name, _turn: per_call(contenders[name], loops[name])
    )
    return samples, loops


# --------------------------------------------------------------------------- formatting


def fmt_seconds(value: float | None) -> str:
    """A duration with a unit that keeps 3 significant digits."""
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (also readable as plain text)."""
    rows = [list(row) for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"

    out = [line(headers), "| " + " | ".join("-" * w for w in widths) + " |"]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def progress(message: str) -> None:
    """A progress line on stderr (tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- results


def save_result(part: str, data: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{part}.json"
    payload = {"part": part, "finished_at": now_iso(), "machine": machine_info(), **data}
    path.write_text(json.dumps(payload, indent=1, sort_keys=False, default=str) + "\n")
    return path


def run_part(
    part: str,
    title: str,
    measure: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """``measure()``, its table printed under ``## title``, saved as the results of ``part``.

    A :class:`BenchError` (a service missing) is saved instead, as the reason the part was
    skipped, so the report says so."""
    try:
        result = measure()
    except BenchError as exc:
        progress(f"{part} skipped: {exc}")
        result = {"skipped": str(exc)}
        save_result(part, result)
        return result
    return report_part(part, title, result, render)


def report_part(
    part: str, title: str, result: dict[str, Any], render: Callable[[dict[str, Any]], str]
) -> dict[str, Any]:
    """``result``'s table printed under ``## title``, saved as the results of ``part``."""
    print(f"\n## {title}\n")
    print(render(result))
    save_result(part, result)
    return result


def update_result(part: str, key: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Store ``data`` (with its own time and machine) as ``key`` of the results of ``part``,
    keeping the rest of that file: a sub-measurement rerun on its own. Returns what was
    stored under ``key``."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{part}.json"
    payload: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"part": part}
    stored = {"finished_at": now_iso(), "machine": machine_info(), **data}
    payload[key] = stored
    path.write_text(json.dumps(payload, indent=1, sort_keys=False, default=str) + "\n")
    return stored


def load_results() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if RESULTS_DIR.exists():
        for path in sorted(RESULTS_DIR.glob("*.json")):
            if path.name == "run.json":  # the run log, not a part
                continue
            data = json.loads(path.read_text())
            out[str(data.get("part", path.stem))] = data
    return out


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version(module)
    except Exception:
        return "not installed"


def _load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _command_output(command: Sequence[str]) -> str:
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The facts a reader needs to compare these numbers with their own."""
    info = {
        "date": now_iso(),
        "cpus (nproc)": _command_output(["nproc"]) or str(os.cpu_count()),
        "cpu model": _cpu_model(),
        "memory": _memory_total(),
        "load average (1/5/15 min)": _load_average(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "SQLAlchemy": _version("SQLAlchemy"),
        "SQLAlchemy-Continuum": _version("SQLAlchemy-Continuum"),
        "cassandra-driver": _version("cassandra-driver"),
        "deepdiff": _version("deepdiff"),
        "boto3": _version("boto3"),
        "moto": _version("moto"),
        "psycopg": _version("psycopg"),
    }
    info["code measured"] = _code_version()
    if extra:
        info.update(extra)
    return info


def _code_version() -> str:
    """The commit measured, and whether the library/consumer had uncommitted changes."""
    head = _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    if not head:
        return "unknown (not a git checkout)"
    dirty = _command_output(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "sqla_audit", "consumer"]
    )
    changed = sorted(line.split(maxsplit=1)[-1] for line in dirty.splitlines() if line.strip())
    if changed:
        return f"{head} + uncommitted changes in {', '.join(changed)}"
    return head


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its wall time in seconds (``perf_counter``)."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


# --------------------------------------------------------------------------- private moto


class PrivateMoto:
    """A moto server of the project's pinned version, started for one benchmark run.

    Why not the shared one from ``scripts/services``: moto keeps every topic, queue and
    message of every test run in memory and scans some of them on each publish, and other
    test runs use it at the same time; a benchmark against it measures that history and
    that load. A fresh server listening on a free loopback port gives numbers that do not
    depend on what ran before. ``--shared-moto`` uses ``AWS_ENDPOINT_URL`` instead.
    """

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def __enter__(self) -> PrivateMoto:
        import urllib.request  # noqa: PLC0415

        load_services_env()
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        if self.shared:
            self.endpoint = aws_endpoint()
            return self
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError("the private moto server exited at start")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise BenchError("the private moto server did not answer within 30 s")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def client(self, service: str) -> Any:
        import boto3  # noqa: PLC0415

        factory: Any = boto3.client
        return factory(service, endpoint_url=self.endpoint)
