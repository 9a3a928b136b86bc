"""Helpers for testing code that is audited by sqla-audit.

Use them in your own test suite::

    from sqla_audit.testing import assert_valid_event, capture_events

    def test_rename_is_audited(session_factory):
        with capture_events(session_factory) as published:
            with session_factory.begin() as session:
                session.get(User, 1).name = "bob"
        (event,) = published.events
        assert event.changed_columns == ("name",)
        assert_valid_event(event)

``assert_valid_event`` needs the ``jsonschema`` package (a test dependency, imported only
when the function is called).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqla_audit.events import ChangeEvent
from sqla_audit.install import install_audit, installation_for, uninstall_audit
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.schema import change_event_schema


@contextmanager
def capture_events(
    target: Any, *, service: str = "test", **install_kwargs: Any
) -> Iterator[InMemoryPublisher]:
    """Audit ``target`` into an :class:`InMemoryPublisher` for the duration of the block.

    ``install_kwargs`` are passed to :func:`~sqla_audit.install_audit`. Refuses a target
    that is already audited (the events would go elsewhere). A target whose sessions are
    also covered by another installation -- the application's own ``install_audit(Session,
    ...)`` -- is fine: each installation keeps its own state, so the block sees every
    change under its own settings and the application's installation keeps working.
    """
    if installation_for(target) is not None:
        raise RuntimeError("the target is already audited; uninstall_audit() it first")
    publisher = InMemoryPublisher()
    install_audit(target, publisher=publisher, service=service, **install_kwargs)
    try:
        yield publisher
    finally:
        uninstall_audit(target)


@cache
def _validator() -> Any:
    try:
        jsonschema: Any = importlib.import_module("jsonschema")  # a test-only dependency
    except ImportError as exc:  # pragma: no cover -- depends on the environment
        raise RuntimeError(
            "assert_valid_event needs the 'jsonschema' package: pip install jsonschema"
        ) from exc
    schema = change_event_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_valid_event(event: ChangeEvent | Mapping[str, Any] | str | bytes) -> None:
    """Fail with a readable message unless ``event`` satisfies the v1 JSON Schema.

    Accepts an event object, its dict form or its JSON text. The event must also be
    readable back with :meth:`ChangeEvent.from_dict`.
    """
    if isinstance(event, ChangeEvent):
        data: Any = json.loads(event.to_json())
    elif isinstance(event, str | bytes):
        data = json.loads(event)
    else:
        data = json.loads(json.dumps(event))
    errors = sorted(_validator().iter_errors(data), key=lambda err: list(err.absolute_path))
    if errors:
        details = "; ".join(
            f"{'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}" for err in errors
        )
        raise AssertionError(f"change event does not match the v1 schema: {details}")
    ChangeEvent.from_dict(data)


def assert_valid_events(events: Iterable[ChangeEvent | Mapping[str, Any] | str | bytes]) -> None:
    """:func:`assert_valid_event` for each event."""
    for event in events:
        assert_valid_event(event)


def summary(events: Iterable[ChangeEvent]) -> list[tuple[str, str, str]]:
    """``(operation, table, record_id)`` of each event: compact for assertions."""
    return [(event.operation.value, event.table, event.record_id) for event in events]


__all__ = [
    "InMemoryPublisher",
    "assert_valid_event",
    "assert_valid_events",
    "capture_events",
    "summary",
]
