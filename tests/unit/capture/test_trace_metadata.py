"""OpenTelemetry correlation: a change captured inside a span carries its trace and span ids."""

from __future__ import annotations

import sys

import pytest
from capture_support import User
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from sqla_audit import audit_context
from sqla_audit.publishers.memory import InMemoryPublisher
from sqla_audit.tracing import SPAN_ID_KEY, TRACE_ID_KEY, trace_metadata

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


def _span(span_id: int = SPAN_ID) -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(trace_id=TRACE_ID, span_id=span_id, is_remote=True, trace_flags=TraceFlags(1))
    )


def test_flush_inside_a_span_records_its_ids(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """An ORM change made inside a span has otel.trace_id and otel.span_id in its metadata."""
    with trace.use_span(_span()), maker.begin() as session:
        session.add(User(id=1, display_name="ann"))
    (event,) = published.events
    assert event.metadata[TRACE_ID_KEY] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.metadata[SPAN_ID_KEY] == "00f067aa0ba902b7"


def test_the_span_in_force_at_capture_wins_over_the_one_at_context_entry(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """audit_context entered in one span and a change made in another: the later span counts."""
    with maker.begin() as session:
        session.add(User(id=2, display_name="bob"))
    published.clear()
    with maker() as session, trace.use_span(_span(1)), audit_context(actor="ann"):
        session.add(User(id=1, display_name="ann"))
        with trace.use_span(_span(2)):
            session.flush()
        with trace.use_span(_span(3)):
            session.execute(update(User).where(User.id == 2).values(email="b@x"))
        session.commit()
    spans = {event.record_id: event.metadata[SPAN_ID_KEY] for event in published.events}
    assert spans == {"1": format(2, "016x"), "2": format(3, "016x")}
    assert all(event.actor is not None and event.actor.id == "ann" for event in published.events)


def test_application_metadata_under_the_same_key_wins(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Metadata the application sets as otel.trace_id is not overwritten."""
    with (
        trace.use_span(_span()),
        audit_context(**{TRACE_ID_KEY: "mine"}),
        maker.begin() as session,
    ):
        session.add(User(id=1, display_name="ann"))
    assert published.events[0].metadata[TRACE_ID_KEY] == "mine"


def test_outside_a_span_no_trace_keys(
    maker: sessionmaker[Session], published: InMemoryPublisher
) -> None:
    """Without a valid current span the metadata has no trace keys."""
    with maker.begin() as session:
        session.add(User(id=1, display_name="ann"))
    assert TRACE_ID_KEY not in published.events[0].metadata


def test_without_opentelemetry_imported_nothing_is_looked_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the application never imported OpenTelemetry, trace_metadata is None."""
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    with trace.use_span(_span()):
        assert trace_metadata() is None
