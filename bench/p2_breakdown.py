"""P2 breakdown: the consumer's own CPU per event, stage by stage, without Cassandra.

``python -m bench.p2_breakdown`` runs the stages the consumer adds to the raw limit's
requests over the P2 event stream (:func:`bench.eventgen.event_stream`), one stage at a time
in one thread, and prints the CPU time per event of each (the best of a few passes):
decoding the message body, the diff and the records, the flat row and the statements, the
content digest, and binding the statements -- the store's binding next to the driver's own
``bind`` of the same statements. The statements are the driver's own prepared statements,
built without a node from the store's CQL (as in ``tests/unit/test_cassandra_binding.py``).
Sending is not here: that is the raw limit's CPU per event in the P2 table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

PASSES = 5
EVENTS = 2000


def _best(work: Callable[[], object], passes: int = PASSES) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def measure(events: int = EVENTS) -> dict[str, float]:
    """CPU seconds per event of each stage."""
    from bench.eventgen import event_stream  # noqa: PLC0415
    from consumer.decoding import Decoder  # noqa: PLC0415
    from consumer.differ import records_for_event  # noqa: PLC0415
    from consumer.sinks.digest import content_digest  # noqa: PLC0415
    from tests.unit.test_cassandra_binding import _store  # noqa: PLC0415

    store = _store()
    bodies = [event.to_json() for event in event_stream(events, seed=11, table="accounts")]
    decoder = Decoder()
    decoded = [event for body in bodies for event in decoder.decode(body)]
    records = [record for event in decoded for record in records_for_event(event)]
    pairs = [list(store._statements_for(record)) for record in records]

    def bind_store() -> None:
        for record, statements in zip(records, pairs, strict=True):
            memo: list[Any] = []
            for statement, params in statements:
                store._bind(record, statement, params, memo)

    def bind_driver() -> None:
        for statements in pairs:
            for statement, params in statements:
                _ = statement.bind(params).routing_key

    stages: Sequence[tuple[str, Callable[[], object]]] = (
        ("decode (JSON, envelope checks)", lambda: [decoder.decode(body) for body in bodies]),
        ("diff and records", lambda: [records_for_event(event) for event in decoded]),
        (
            "flat row and statements",
            lambda: [list(store._statements_for(record)) for record in records],
        ),
        ("content digest", lambda: [content_digest(record) for record in records]),
        ("binding (the store's)", bind_store),
        ("binding (the driver's bind, for comparison)", bind_driver),
    )
    return {name: _best(work) / len(bodies) for name, work in stages}


def main() -> int:
    from bench.common import fmt_seconds, markdown_table  # noqa: PLC0415

    result = measure()
    print(
        markdown_table(["stage", "CPU per event"], [[k, fmt_seconds(v)] for k, v in result.items()])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
