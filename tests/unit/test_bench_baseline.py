"""A benchmark contender run at a baseline revision imports that revision's package."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.common import REPO_ROOT
from bench.p1_commit import python_command


def test_the_baseline_library_comes_before_the_checkout(tmp_path: Path) -> None:
    """`python -m` puts the working directory first; the baseline's sqla_audit must win."""
    package = tmp_path / "sqla_audit"
    package.mkdir()
    (package / "__init__.py").write_text("BASELINE = True\n")
    argv, env = python_command(str(tmp_path))
    probe = "import sqla_audit, bench.common; print(sqla_audit.__file__)"
    out = subprocess.run(
        [*argv, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()) == package / "__init__.py"


def test_without_a_baseline_the_checkout_is_imported() -> None:
    """No library path: the checkout's own package, as before."""
    argv, env = python_command(None)
    probe = "import sqla_audit; print(sqla_audit.__file__)"
    out = subprocess.run(
        [*argv, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()) == Path(REPO_ROOT) / "sqla_audit" / "__init__.py"
