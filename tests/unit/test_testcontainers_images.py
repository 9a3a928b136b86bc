"""The images the testcontainers fallback starts can be replaced through the environment."""

from __future__ import annotations

import pytest
from service_policy import CASSANDRA_IMAGE, POSTGRES_IMAGE, image


def test_image_is_the_docker_hub_default_without_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without SQLA_AUDIT_TEST_POSTGRES_IMAGE the official image is used."""
    monkeypatch.delenv("SQLA_AUDIT_TEST_POSTGRES_IMAGE", raising=False)
    assert image("postgres", POSTGRES_IMAGE) == POSTGRES_IMAGE


def test_image_variable_names_another_image_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLA_AUDIT_TEST_<SERVICE>_IMAGE replaces that service's image only; blank means unset."""
    monkeypatch.setenv("SQLA_AUDIT_TEST_POSTGRES_IMAGE", "localhost/sqla-audit-postgres:bookworm")
    monkeypatch.setenv("SQLA_AUDIT_TEST_CASSANDRA_IMAGE", "  ")
    assert image("postgres", POSTGRES_IMAGE) == "localhost/sqla-audit-postgres:bookworm"
    assert image("cassandra", CASSANDRA_IMAGE) == CASSANDRA_IMAGE
