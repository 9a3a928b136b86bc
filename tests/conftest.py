"""Fixtures and policy shared by every test.

``require_service(name, env_var)`` (from ``service_policy``) gives an integration fixture the
setting of a service: from its environment variable, else from testcontainers when a Docker
engine answers, else the test is skipped -- or fails when ``CI=true``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers live in tests/service_policy.py; make them importable whatever pytest's import mode.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from service_policy import is_ci, require_service, stop_containers  # noqa: E402

__all__ = ["require_service"]


@pytest.fixture(scope="session")
def ci() -> bool:
    """True when the suite runs in CI (``CI=true``): missing services fail instead of skipping."""
    return is_ci()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the testcontainers started for this session, if any."""
    stop_containers()
