"""The wire text builder writes exactly the compact JSON of ``ChangeEvent.to_dict()``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqla_audit.events import Actor, ChangeEvent, Operation, _plain
from sqla_audit.signing import EventSignature
from sqla_audit.wire_text import TransactionText, encode_json, signature_text

#: Awkward characters: escapes JSON requires, non-ASCII, line separators, lone surrogates.
_AWKWARD = ["a", "Z", " ", "é", "\u2028", "\x00", "\x1f", '"', "\\", "/", "\ud800", "\udfff"]
_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(st.sampled_from([*_AWKWARD, "\U0001f600", "\u00ff", "\x7f"]), max_size=12),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=12,
)
_ROWS = st.dictionaries(_TEXT, _VALUES, max_size=6)


def _mapping(row: dict[str, Any], proxied: bool) -> Any:
    return MappingProxyType(row) if proxied else row


_TIMES = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),
    max_value=dt.datetime(9998, 12, 31),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30))]),
)


@st.composite
def events(draw: st.DrawFn) -> ChangeEvent:
    """Any envelope the producer could build, signed or not, with awkward content."""
    proxied = draw(st.booleans())
    signed = draw(st.booleans())
    return ChangeEvent(
        event_id=uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        occurred_at=draw(_TIMES),
        committed_at=draw(_TIMES),
        service=draw(_TEXT),
        table=draw(_TEXT),
        record_id=draw(_TEXT),
        previous_record_id=draw(st.none() | _TEXT),
        primary_key=_mapping(draw(_ROWS), proxied),
        operation=draw(st.sampled_from(list(Operation))),
        before=draw(st.none() | _ROWS.map(lambda row: _mapping(row, proxied))),
        after=draw(st.none() | _ROWS.map(lambda row: _mapping(row, proxied))),
        changed_columns=draw(st.lists(_TEXT, max_size=4)),
        masked_columns=draw(st.lists(_TEXT, max_size=3)),
        actor=draw(st.none() | st.builds(Actor, _TEXT, _ROWS)),
        request_id=draw(st.none() | _TEXT),
        transaction_id=uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        sequence=draw(st.integers(0, 2**53)),
        metadata=_mapping(draw(_ROWS), proxied),
        transaction_event_count=draw(st.integers(1, 2**31)) if signed else None,
        signature=(
            EventSignature(draw(_TEXT), draw(_TEXT), draw(_TEXT))
            if signed and draw(st.booleans())
            else None
        ),
    )


def _reference(event: ChangeEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_to_json_is_the_json_of_to_dict(event: ChangeEvent) -> None:
    """to_json (written by the builder) equals json.dumps of to_dict, byte for byte."""
    assert event.to_json() == _reference(event)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=6), st.booleans())
def test_transaction_texts_equal_each_events_json(batch: list[ChangeEvent], shared: bool) -> None:
    """A transaction's texts, its shared fields encoded once and an actor or metadata mapping
    reused while it is the same object, equal each event's json.dumps(to_dict())."""
    first = batch[0]
    actor = first.actor
    metadata = first.metadata
    batch = [
        dataclasses.replace(
            event,
            committed_at=first.committed_at,
            service=first.service,
            transaction_id=first.transaction_id,
            sequence=sequence,
            transaction_event_count=None,
            signature=None,
            **({"actor": actor, "metadata": metadata} if shared else {}),
        )
        for sequence, event in enumerate(batch)
    ]
    text = TransactionText(
        committed_at=first.committed_at,
        service=first.service,
        transaction_id=str(first.transaction_id),
        plain=_plain,
    )
    texts = text.texts(batch, [str(event.event_id) for event in batch])
    assert texts == [_reference(event) for event in batch]


def test_signature_fields_follow_metadata_in_their_order() -> None:
    """The signature fields come last, count then signature, each only when present."""
    signature = EventSignature("HMAC-SHA256", "k1", "ab")
    assert signature_text(None, None) == ""
    assert signature_text(3, None) == ',"transaction_event_count":3'
    assert signature_text(3, signature) == (
        ',"transaction_event_count":3,"signature":{"alg":"HMAC-SHA256","kid":"k1","mac":"ab"}'
    )


def test_encode_json_is_the_standard_encoder() -> None:
    """encode_json writes what json.dumps with the wire settings writes."""
    value = {"s": "é\ud800\x00\u2028", "n": [1, 2.5, 1e16, 1e-7, float("nan"), -0.0, 2**80]}
    assert encode_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
