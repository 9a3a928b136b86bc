"""Hostile message mixes for the consumer fuzz tests (unit: memory and SQLite stores, SQS
double and outbox sources; integration: Cassandra).

:func:`mixes` is a hypothesis strategy of message lists. Each :class:`Sent` message knows
what must become of it: ``valid`` ones must be acknowledged and every record of their events
stored exactly once; every other one must be rejected with a reason. The hostile kinds:
random JSON, valid envelopes with one field out of range or of the wrong type, lone
surrogates (escaped, or raw where the source can carry them), huge strings, nesting past
the limit, S3 pointers to missing objects, and duplicates of an earlier event id with
different content (a conflict: the first is kept). Exact duplicates of a valid message are
valid: idempotent redelivery.

:func:`run_mix` sends a mix through :meth:`consumer.worker.Worker.process` until the source
is drained and checks the outcome; it fails if the worker stalls.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from consumer.decoding import Decoder, S3Pointer
from consumer.differ import records_for_event
from consumer.records import AuditRecord
from consumer.sinks.base import AuditStore
from consumer.sources.base import MessageSource
from consumer.testing import make_event
from consumer.worker import Worker
from sqla_audit.errors import DecodeError
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.offload_pointer import make_pointer
from sqla_audit.wire_limits import (
    MAX_NAME_CHARS,
    MAX_RECORD_ID_CHARS,
    MAX_SEQUENCE,
    MAX_VALUE_DEPTH,
)

#: Examples per fuzz test: small for CI, larger with ``SQLA_AUDIT_FUZZ_EXAMPLES``.
FUZZ_EXAMPLES = int(os.environ.get("SQLA_AUDIT_FUZZ_EXAMPLES", "20"))

BUCKET = "audit-payloads"


@dataclass(slots=True)
class Sent:
    """One message body and what must become of it."""

    body: str
    valid: bool
    kind: str
    #: the event(s) a valid message carries
    events: list[ChangeEvent] = field(default_factory=list)


class DictFetcher:
    """S3 in a dict; a missing key is a DecodeError (the object does not exist)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def fetch(self, pointer: S3Pointer) -> bytes:
        try:
            return self.objects[pointer.key]
        except KeyError:
            raise DecodeError(f"s3://{pointer.bucket}/{pointer.key} does not exist") from None


# --------------------------------------------------------------------------- strategies

_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
_NAME = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=12)
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_ROW = st.dictionaries(_NAME, _VALUE, max_size=5)


@st.composite
def valid_events(draw: st.DrawFn, fetcher: DictFetcher) -> Sent:
    """A valid message: one event (raw, in SNS, or offloaded to S3) or a bundle."""
    count = draw(st.integers(1, 3)) if draw(st.booleans()) else 1
    events = []
    for _ in range(count):
        operation = draw(st.sampled_from(list(Operation)))
        record_id = draw(_NAME)
        row = {"id": record_id, **draw(_ROW)}
        other = {**row, "\x00changed": draw(_VALUE)}  # _NAME never makes this key
        fields: dict[str, Any] = {
            "operation": operation,
            "table": draw(_NAME),
            "record_id": record_id,
            "actor": draw(st.none() | _NAME),
            "sequence": draw(st.integers(0, MAX_SEQUENCE)),
            "metadata": draw(st.dictionaries(_NAME, _VALUE, max_size=2)),
        }
        if operation is Operation.INSERT:
            fields["after"] = row
        elif operation is Operation.DELETE:
            fields["before"] = row
        else:
            fields["before"], fields["after"] = row, other
        events.append(make_event(**fields))
    payload = events[0].to_json() if count == 1 else json.dumps([e.to_dict() for e in events])
    shape = draw(st.sampled_from(["raw", "sns", "s3"]))
    if shape == "sns":
        payload = _sns(payload)
    elif shape == "s3":
        key = f"ok/{uuid.uuid4()}"
        fetcher.objects[key] = payload.encode()
        payload = make_pointer(BUCKET, key)
    return Sent(payload, True, f"valid/{shape}", events)


def _sns(message: str) -> str:
    return json.dumps(
        {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:audit", "Message": message}
    )


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


#: (field, a strategy of values that field must not hold)
_HOSTILE_FIELDS: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("sequence", st.integers(min_value=MAX_SEQUENCE + 1) | st.integers(max_value=-1)),
    ("sequence", st.floats() | st.booleans() | st.text()),
    ("previous_record_id", st.dictionaries(_NAME, _SCALAR, max_size=2) | st.just("")),
    ("request_id", st.lists(_TEXT, max_size=2) | st.integers()),
    ("masked_columns", _NAME),
    ("metadata", st.lists(_SCALAR, max_size=2) | _NAME | st.integers()),
    ("actor", st.fixed_dictionaries({"id": _NAME, "attributes": st.lists(_SCALAR)})),
    ("table", _TEXT.map(lambda s: s + "\ud800")),
    ("record_id", _TEXT.map(lambda s: "\udfff" + s)),
    ("service", st.just("s" * (MAX_NAME_CHARS + 1))),
    ("table", st.integers() | st.none()),
    ("event_id", _TEXT | st.integers()),
    ("committed_at", st.sampled_from(["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00"])),
    ("occurred_at", st.sampled_from(["1960-01-01T00:00:00Z", "yesterday", "2026-01-01T00:00:00"])),
    ("after", st.just({"id": "1", "x": "\ud800"})),
    ("after", st.just({"id": "1", "x": _deep(MAX_VALUE_DEPTH + 1)})),
    ("primary_key", st.just({"\udc00": 1}) | st.none()),
    ("operation", _TEXT.filter(lambda s: s not in ("insert", "update", "delete"))),
]


@st.composite
def hostile(draw: st.DrawFn, fetcher: DictFetcher, sent: list[Sent]) -> Sent:
    """A message that must be rejected (or, for a conflict, rejected as the second)."""
    kind = draw(
        st.sampled_from(["json", "field", "missing-s3", "conflict", "not-json", "huge", "raw"])
    )
    if kind == "json":
        data = draw(st.recursive(_SCALAR, lambda i: st.lists(i) | st.dictionaries(_TEXT, i)))
        return Sent(json.dumps(data), False, "random-json")
    if kind == "not-json":
        return Sent(draw(_TEXT) + "{", False, "not-json")
    if kind == "missing-s3":
        return Sent(make_pointer(BUCKET, f"missing/{uuid.uuid4()}"), False, "missing-s3")
    if kind == "conflict":
        earlier = [s.events[0] for s in sent if s.valid and len(s.events) == 1]
        if earlier:
            original = draw(st.sampled_from(earlier))
            data = original.to_dict()
            data["metadata"] = {"forged": draw(_NAME)}
            return Sent(json.dumps(data), False, "conflict")
    event = make_event()
    data = event.to_dict()
    if kind == "huge":  # (a payload above MAX_PAYLOAD_BYTES: tests/unit/test_decoding.py)
        data["record_id"] = "k" * (MAX_RECORD_ID_CHARS + draw(st.integers(1, 10**5)))
        return Sent(json.dumps(data), False, "huge")
    name, values = draw(st.sampled_from(_HOSTILE_FIELDS))
    data[name] = draw(values)
    if kind == "raw":  # raw surrogates in the body text (the SQS double carries them)
        return Sent(json.dumps(data, ensure_ascii=False), False, f"raw/{name}")
    return Sent(json.dumps(data), False, f"field/{name}")


@st.composite
def mixes(draw: st.DrawFn, fetcher: DictFetcher, *, raw_text: bool = True) -> list[Sent]:
    """A list of valid and hostile messages (valid ones first and sometimes repeated)."""
    sent: list[Sent] = []
    for _ in range(draw(st.integers(1, 14))):
        if draw(st.integers(0, 2)) == 0 and sent:
            message = draw(hostile(fetcher, sent))
            if not raw_text and message.kind.startswith("raw/"):
                message.body = json.dumps(json.loads(message.body))
        elif draw(st.integers(0, 5)) == 0 and any(s.valid for s in sent):
            message = draw(st.sampled_from([s for s in sent if s.valid]))  # exact redelivery
        else:
            message = draw(valid_events(fetcher))
        sent.append(message)
    return sent


# --------------------------------------------------------------------------- running


def expected_records(sent: list[Sent]) -> dict[uuid.UUID, AuditRecord]:
    """Every record the valid messages must leave in the store, by event id."""
    return {
        record.event_id: record
        for message in sent
        if message.valid
        for event in message.events
        for record in records_for_event(event)
    }


def run_mix(
    sent: list[Sent],
    source: MessageSource,
    send: Callable[[str], str],
    store: AuditStore,
    fetcher: DictFetcher,
) -> None:
    """Send ``sent`` through a worker until the source is drained; check every outcome."""
    ids = [send(message.body) for message in sent]
    worker = Worker(source, store, decoder=Decoder(fetcher), batch_size=4, concurrency=1)
    outcome: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for _ in range(4 * len(sent) + 4):  # more rounds than messages: a stall fails below
        batch = source.receive(4, 0)
        if not batch:
            break
        result = worker.process(batch)  # never raises
        for received in result.acked:
            outcome[received.message_id] = "acked"
        for received in result.released:
            outcome[received.message_id] = "released"
        for received, reason in result.rejected:
            outcome[received.message_id] = "rejected"
            reasons[received.message_id] = reason
    assert len(outcome) == len({*ids}), f"stalled: {len(outcome)} of {len(set(ids))} settled"
    for message, message_id in zip(sent, ids, strict=True):
        expected = "acked" if message.valid else "rejected"
        assert outcome[message_id] == expected, (message.kind, message.body[:200], reasons)
        if not message.valid:
            assert reasons[message_id].strip(), message.kind
    for event_id, record in expected_records(sent).items():
        history = store.history(record.service, record.table, record.record_id, limit=1000).items
        assert [r for r in history if r.event_id == event_id] == [record]
