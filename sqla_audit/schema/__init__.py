"""The JSON Schema of the change-event envelope, shipped with the package."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "change-event-v1.schema.json"


@cache
def change_event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every version-1 change event satisfies."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


__all__ = ["SCHEMA_FILE", "change_event_schema"]
