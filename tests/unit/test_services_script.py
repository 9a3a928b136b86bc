"""scripts/services: the command-line contract other scripts rely on."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_status_of_one_service_lists_only_that_service() -> None:
    """`status moto` prints exactly one line, about moto (a script may take its first pid)."""
    result = _run("status", "moto")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    assert lines[0].split()[0] == "moto"
    assert result.returncode in (0, 3)


def test_status_keeps_the_canonical_order_for_several_services() -> None:
    """`status cassandra postgres` lists postgres then cassandra, nothing else."""
    result = _run("status", "cassandra", "postgres")
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert names == ["postgres", "cassandra"]


def test_status_of_an_unknown_service_is_a_usage_error() -> None:
    """An unknown service name is refused with one line naming the known ones."""
    result = _run("status", "redis")
    assert result.returncode != 0
    assert result.returncode != 3
    assert "unknown service 'redis'" in result.stderr


def test_status_knows_the_secure_cassandra_node() -> None:
    """`status cassandra-secure` reports the TLS + auth node (one line), not an unknown service."""
    result = _run("status", "cassandra-secure")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert "unknown service" not in result.stderr
    assert len(lines) == 1, result.stdout
    assert lines[0].split()[0] == "cassandra-secure"
    assert result.returncode in (0, 3)


def test_the_cluster_is_known_but_not_part_of_all() -> None:
    """`status cassandra-cluster` reports the opt-in three-node profile; plain `status`
    (every default service) does not list it."""
    named = _run("status", "cassandra-cluster")
    assert "unknown service" not in named.stderr
    lines = [line for line in named.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, named.stdout
    assert lines[0].split()[0] == "cassandra-cluster"
    assert named.returncode in (0, 3)
    everything = _run("status")
    assert "cassandra-cluster" not in everything.stdout


def _classpath_jar(classpath: str, pattern: str) -> subprocess.CompletedProcess[str]:
    common = SCRIPT.parent / "lib" / "common.sh"
    script = f'set -euo pipefail; source "{common}"; classpath_jar "$1" "$2"'
    return subprocess.run(
        ["bash", "-c", script, "classpath_jar", classpath, pattern],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_jar_is_found_first_in_a_long_classpath(tmp_path: Path) -> None:
    """The lookup reads the whole classpath: no early exit that breaks a pipe under pipefail."""
    entries = ["/m2/jamm-0.4.0.jar"] + [f"/m2/dependency/artifact-{i:05d}.jar" for i in range(4000)]
    classpath = tmp_path / "classpath.txt"
    classpath.write_text(":".join(entries))  # as Maven writes it: no final newline
    found = _classpath_jar(str(classpath), "jamm-*.jar")
    assert (found.returncode, found.stdout) == (0, "/m2/jamm-0.4.0.jar\n"), found.stderr
    last = _classpath_jar(str(classpath), "artifact-03999.jar")
    assert last.stdout == "/m2/dependency/artifact-03999.jar\n", last.stderr


def test_a_jar_missing_from_the_classpath_is_a_failure(tmp_path: Path) -> None:
    """No matching entry: status 1 and nothing printed."""
    classpath = tmp_path / "classpath.txt"
    classpath.write_text("/m2/a.jar:/m2/b.jar")
    missing = _classpath_jar(str(classpath), "jamm-*.jar")
    assert (missing.returncode, missing.stdout) == (1, "")
