"""podman for the container tests, and the Docker commands of README.md that they run.

``scripts/container`` is the one place that knows how podman must be called on these machines
(the runc runtime, no default ulimits); the tests go through it. Without podman a container
test is skipped -- or fails under ``CI=true`` (``scripts/test`` installs it there).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from service_policy import is_ci

ROOT = Path(__file__).resolve().parents[1]
CONTAINER_SCRIPT = ROOT / "scripts" / "container"
README = ROOT / "README.md"
RUNC = Path(os.environ.get("SQLA_AUDIT_PODMAN_RUNTIME", "/usr/sbin/runc"))

# The bash code blocks of README.md's "## Docker" section.
_SECTION = re.compile(r"^## Docker\n(.*?)(?=^## )", re.MULTILINE | re.DOTALL)
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def require_podman() -> None:
    """Skip the test when podman or runc is missing; fail instead under ``CI=true``."""
    missing = [] if shutil.which("podman") else ["podman"]
    if not RUNC.exists():
        missing.append(str(RUNC))
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (scripts/container prepare installs them)"
    if is_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def container_script(*args: str, timeout: float, check: bool = True) -> str:
    """Run ``scripts/container ARGS`` and return its standard output."""
    proc = subprocess.run(
        [str(CONTAINER_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"scripts/container {' '.join(args)} exited {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """``podman ARGS`` with this machine's settings; its standard output."""
    return container_script("podman", *args, timeout=timeout, check=check)


def readme_docker_commands(readme: Path = README) -> list[str]:
    """The commands of the first bash block of README.md's Docker section, in order.

    A command keeps its continuation lines (``\\`` + newline) and trailing comment: bash reads
    them as the README's reader would.
    """
    section = _SECTION.search(readme.read_text(encoding="utf-8"))
    if section is None:
        raise AssertionError("README.md has no '## Docker' section")
    block = _BASH_BLOCK.search(section.group(1))
    if block is None:
        raise AssertionError("README.md's Docker section has no bash code block")
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if not line.endswith("\\"):
            if pending.strip() and not pending.lstrip().startswith("#"):
                commands.append(pending)
            pending = ""
    return commands


def pick(commands: Sequence[str], prefix: str, containing: str = "") -> str:
    """The one command that starts with ``prefix`` (and contains ``containing``)."""
    found = [c for c in commands if c.startswith(prefix) and containing in c]
    if len(found) != 1:
        raise AssertionError(f"README.md: {len(found)} commands start with {prefix!r}")
    return found[0]


def run_with_docker_as_podman(
    command: str, env: Mapping[str, str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a README command in bash, ``docker`` being podman through scripts/container."""
    script = f'docker() {{ "{CONTAINER_SCRIPT}" podman "$@"; }}\n{command}\n'
    return subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
