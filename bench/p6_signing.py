"""P6: what event signatures cost -- per event, on the commit path (P1) and in the consumer (P2).

* ``per event`` -- the producer's :meth:`sqla_audit.signing.EventSigner.sign` of one event
  (canonical form + HMAC-SHA256 + the signed copy), the consumer's check
  (:meth:`consumer.verification.EventVerifier.check`: canonical form of the decoded event +
  HMAC, constant-time compare) and ``sqla-audit verify``'s check of one stored record
  (:func:`consumer.verify.check_record`: rebuild the event from record and seal, strict
  decode, HMAC, recomputed changes). For scale, the costs the same event already pays:
  ``ChangeEvent.to_json`` on the producer, ``ChangeEvent.from_json`` on the consumer. Two
  events of :mod:`bench.eventgen`: a 12-column scalar update and one with a nested JSON
  column.
* ``P1 with signing`` -- the commit path of an audited SQLAlchemy session (SQLite in memory,
  in-memory publisher, so only the library's own work is measured): a transaction inserting
  10 rows, and one updating 1 row, committed without audit, with audit, and with audit and
  signing, interleaved.
* ``P2 with signing`` -- the consumer (:class:`consumer.worker.Worker`, 4 pollers, batches of
  10, the real Cassandra store with every view) fed the same kind of stream unsigned under
  policy ``off`` and signed under ``require``, interleaved, in events per second; a signed
  record also writes its seal row (``event_seals``).

Each per-event measurement times a loop of about 50 ms with the garbage collector paused;
rounds are interleaved so a busy machine slows every contender alike. Read the ratios.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from bench.common import (
    fmt_ratio,
    fmt_seconds,
    interleaved,
    interleaved_slices,
    markdown_table,
    per_call,
    progress,
    ratio,
    report_part,
    summarize,
    unique_name,
)
from bench.eventgen import event_stream, make_event, nested_update, scalar_update
from sqla_audit.events import ChangeEvent, Operation
from sqla_audit.signing import EventSigner, Keyring

ROUNDS = 9
SLICE_SECONDS = 0.05
P1_ROUNDS = 11
P1_COMMITS = 100
P2_ROUNDS = 3
P2_EVENTS = 3000
KEY = b"bench-signing-key-0123456789abcdef"
RING = Keyring(signing_key_id="bench", keys={"bench": KEY})


def _timed(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, Any]:
    samples, _loops = interleaved_slices(contenders, rounds, SLICE_SECONDS)
    return {name: summarize(values) for name, values in samples.items()}


def signed(events: Sequence[ChangeEvent]) -> list[ChangeEvent]:
    """``events`` signed, each with the event count of its transaction."""
    counts = Counter(event.transaction_id for event in events)
    signer = EventSigner(RING)
    return signer.sign(
        [
            dataclasses.replace(event, transaction_event_count=counts[event.transaction_id])
            for event in events
        ]
    )


# --------------------------------------------------------------------------- per event


def measure_per_event(rounds: int) -> dict[str, Any]:
    from consumer.differ import records_for_event  # noqa: PLC0415
    from consumer.verification import EventVerifier  # noqa: PLC0415
    from consumer.verify import check_record  # noqa: PLC0415

    out: dict[str, Any] = {}
    for kind, (before, after) in {
        "scalar": scalar_update(42, 7),
        "nested": nested_update(42, 7),
    }.items():
        event = dataclasses.replace(
            make_event(Operation.UPDATE, 42, before, after), transaction_event_count=1
        )
        signer = EventSigner(RING)
        (sealed,) = signer.sign([event])
        text = sealed.to_json()
        verifier = EventVerifier("require", RING)
        decoded = ChangeEvent.from_json(text)
        (record,) = records_for_event(decoded)
        assert record.seal is not None
        seal = record.seal
        if check_record(record, seal, RING) is not None:
            raise AssertionError("the benchmark's record does not verify")
        contenders: dict[str, Callable[[], object]] = {
            "to_json": event.to_json,
            "sign": functools.partial(signer.sign, [event]),
            "from_json": functools.partial(ChangeEvent.from_json, text),
            "check": functools.partial(verifier.check, [decoded]),
            "verify_record": functools.partial(check_record, record, seal, RING),
        }
        out[kind] = {
            "stats": _timed(contenders, rounds),
            "bytes_unsigned": len(event.to_json().encode()),
            "bytes_signed": len(text.encode()),
        }
        progress(f"P6 per event {kind}: done")
    return out


# --------------------------------------------------------------------------- P1


class Base(DeclarativeBase):
    pass


class Item(Base):
    """The P1 table: an id and four columns."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    owner: Mapped[str]
    qty: Mapped[int]
    price: Mapped[float]


def measure_p1(rounds: int, commits: int) -> dict[str, Any]:
    from sqla_audit import install_audit, uninstall_audit  # noqa: PLC0415
    from sqla_audit.publishers.memory import InMemoryPublisher  # noqa: PLC0415

    def factory(mode: str) -> tuple[Any, Any]:
        engine = sa.create_engine("sqlite://")
        Base.metadata.create_all(engine)
        maker = sessionmaker(engine)
        publisher = InMemoryPublisher()
        if mode != "none":
            signer = EventSigner(RING) if mode == "signed" else None
            install_audit(maker, publisher=publisher, service="bench", signing=signer)
        with maker.begin() as session:
            session.add_all(
                [Item(id=i, name=f"n{i}", owner="o", qty=i, price=1.5) for i in range(1, 11)]
            )
        return maker, publisher

    makers = {mode: factory(mode) for mode in ("none", "audit", "signed")}
    counters = dict.fromkeys(makers, 1000)

    def insert10(mode: str) -> Callable[[], object]:
        maker, _publisher = makers[mode]

        def run() -> None:
            start = counters[mode]
            counters[mode] += 10
            with maker.begin() as session:
                session.add_all(
                    [
                        Item(id=start + i, name=f"n{i}", owner="o", qty=i, price=2.5)
                        for i in range(10)
                    ]
                )

        return run

    def update1(mode: str) -> Callable[[], object]:
        maker, _publisher = makers[mode]

        def run() -> None:
            counters[mode] += 1
            with maker.begin() as session:
                item = session.get_one(Item, 1)
                item.qty = counters[mode]

        return run

    def per_commit(make: Callable[[str], Callable[[], object]], mode: str, _turn: int) -> float:
        return per_call(make(mode), commits)

    out: dict[str, Any] = {}
    for workload, make in (("insert 10 rows", insert10), ("update 1 row", update1)):
        samples = interleaved(makers, rounds, functools.partial(per_commit, make))
        out[workload] = {mode: summarize(values) for mode, values in samples.items()}
        # each round runs the three side by side: the ratio within a round is what a busy
        # machine disturbs least
        out[workload]["paired"] = {
            "signed_vs_audit": statistics.median(
                s / a for s, a in zip(samples["signed"], samples["audit"], strict=True)
            ),
            "audit_vs_none": statistics.median(
                a / n for a, n in zip(samples["audit"], samples["none"], strict=True)
            ),
        }
        progress(f"P6 P1 {workload}: done")
    for maker, _publisher in makers.values():
        uninstall_audit(maker)
    return out


# --------------------------------------------------------------------------- P2


def measure_p2(rounds: int, count: int) -> dict[str, Any]:
    from bench.p2_consumer import Bench  # noqa: PLC0415
    from consumer.decoding import Decoder  # noqa: PLC0415
    from consumer.verification import EventVerifier  # noqa: PLC0415

    bench = Bench(unique_name("bench_p6"))
    try:

        def consume(mode: str) -> dict[str, float]:
            bench.seed += 1
            events = event_stream(count, seed=bench.seed, table=f"accounts_{bench.seed}")
            if mode == "require":
                events = signed(events)
            verifier = EventVerifier("require", RING) if mode == "require" else None
            return bench.consume(
                [event.to_json() for event in events], decoder=Decoder(verifier=verifier)
            )

        consume("off")  # warm-up: prepared statements, connections
        samples = interleaved(("off", "require"), rounds, lambda mode, _turn: consume(mode))
        progress("P6 P2: done")
        return {
            mode: {
                "rate": summarize([m["rate"] for m in runs]),
                "client_cpu_us": summarize([m["cpu_per_event"] * 1e6 for m in runs]),
            }
            for mode, runs in samples.items()
        }
    finally:
        bench.close()


# --------------------------------------------------------------------------- report


def measure(scale: float = 1.0) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "scale": scale,
        "per_event": measure_per_event(max(3, round(ROUNDS * scale))),
        "p1": measure_p1(max(3, round(P1_ROUNDS * scale)), max(20, round(P1_COMMITS * scale))),
    }
    try:
        result["p2"] = measure_p2(
            max(1, round(P2_ROUNDS * scale)), max(300, round(P2_EVENTS * scale))
        )
    except Exception as exc:
        result["p2_error"] = f"{type(exc).__name__}: {exc}"
    result["elapsed_s"] = time.perf_counter() - started
    return result


_LABELS = {
    "to_json": "producer, for scale: ChangeEvent.to_json",
    "sign": "producer: EventSigner.sign (canonical form + HMAC + signed copy)",
    "from_json": "consumer, for scale: ChangeEvent.from_json",
    "check": "consumer: EventVerifier.check (canonical form + HMAC)",
    "verify_record": "sqla-audit verify: check_record (rebuild + decode + HMAC + changes)",
}


def render(result: dict[str, Any]) -> str:
    rows = []
    for kind, data in result["per_event"].items():
        stats = data["stats"]
        describe = (
            f"{kind} update ({data['bytes_unsigned']} B unsigned, {data['bytes_signed']} B signed)"
        )
        for name, label in _LABELS.items():
            reference = "to_json" if name == "sign" else "from_json" if name == "check" else None
            rows.append(
                [
                    describe,
                    label,
                    fmt_seconds(stats[name]["median"]),
                    fmt_seconds(stats[name]["p90"]),
                    fmt_ratio(ratio(stats[name]["median"], stats[reference]["median"]))
                    if reference
                    else "-",
                ]
            )
    parts = [
        "Per event:",
        "",
        markdown_table(["event", "step", "median", "p90", "vs the serialization beside it"], rows),
        "",
        "P1 with signing (commit path, SQLite in memory, in-memory publisher; per commit):",
        "",
    ]
    p1_rows = []
    for workload, modes in result["p1"].items():
        paired = modes.get("paired", {})
        p1_rows.append(
            [
                workload,
                fmt_seconds(modes["none"]["median"]),
                fmt_seconds(modes["audit"]["median"]),
                fmt_seconds(modes["signed"]["median"]),
                fmt_ratio(paired.get("audit_vs_none")),
                fmt_ratio(paired.get("signed_vs_audit")),
            ]
        )
    parts.append(
        markdown_table(
            [
                "workload",
                "no audit",
                "audit",
                "audit + signing",
                "audit vs none (paired)",
                "signing vs audit (paired)",
            ],
            p1_rows,
        )
    )
    parts += ["", "P2 with signing (consumer into Cassandra, every view):", ""]
    if "p2" in result:
        off, required = result["p2"]["off"], result["p2"]["require"]
        parts.append(
            markdown_table(
                ["policy", "events/s (median)", "client CPU per event", "rate vs off"],
                [
                    [
                        "off, unsigned events",
                        f"{off['rate']['median']:,.0f}",
                        f"{off['client_cpu_us']['median']:.0f} µs",
                        "1.00x",
                    ],
                    [
                        "require, signed events",
                        f"{required['rate']['median']:,.0f}",
                        f"{required['client_cpu_us']['median']:.0f} µs",
                        fmt_ratio(ratio(required["rate"]["median"], off["rate"]["median"])),
                    ],
                ],
            )
        )
    else:
        parts.append(f"Not measured: {result.get('p2_error', 'no result')}")
    return "\n".join(parts)


def main(scale: float = 1.0) -> dict[str, Any]:
    return report_part("p6", "P6 — signing and verification costs", measure(scale=scale), render)


__all__ = ["main", "measure", "render", "signed"]
