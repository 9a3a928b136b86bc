"""Synthetic change events shaped like the ones the capture library sends.

Rows have twelve columns with the types applications use -- strings, integers, a boolean, a
decimal and two timestamps (type-tagged on the wire, as the codec encodes them) -- and,
when asked, a JSON column holding a nested document (about 40 leaves, three levels deep).
Values are encoded with the real codec (:func:`sqla_audit.serialization.encode_value`), so
the consumer sees exactly what it sees in production.

The stream mixes operations like a typical service: 25 % inserts, 60 % updates of two
scalar columns, 10 % updates of one leaf inside the JSON document, 5 % deletes; events come
in transactions of five, from twenty actors, over 5,000 records per table.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
import uuid
from typing import Any

from sqla_audit.events import Actor, ChangeEvent, Operation, new_event_id, utcnow
from sqla_audit.serialization import JSONValue, encode_value

_T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def document(i: int, version: int = 0) -> dict[str, Any]:
    """A nested JSON document: preferences, an address, tags and a list of line items."""
    return {
        "preferences": {
            "language": ("en", "fr", "de")[i % 3],
            "newsletter": bool(i % 2),
            "theme": {"mode": "dark" if i % 2 else "light", "accent": f"#{i % 4096:03x}"},
        },
        "address": {
            "street": f"{i} Main Street",
            "city": ("Lyon", "Berlin", "Leeds")[i % 3],
            "zip": f"{10000 + i % 89999}",
            "geo": {"lat": 45.0 + (i % 100) / 100, "lon": 4.0 + (i % 50) / 100},
        },
        "tags": [f"tag{(i + k) % 50}" for k in range(5)],
        "lines": [
            {"sku": f"SKU-{(i + k) % 1000:04d}", "qty": (i + k + version) % 9 + 1, "price": 9.5}
            for k in range(4)
        ],
    }


def python_row(i: int, *, version: int = 0, nested: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": i,
        "sku": f"SKU-{i:08d}",
        "name": f"Customer account number {i}",
        "email": f"customer{i}@example.com",
        "phone": f"+33 1 23 45 {i % 100:02d} {(i // 100) % 100:02d}",
        "balance": decimal.Decimal(f"{(i * 37 + version * 11) % 100000}.{(i + version) % 100:02d}"),
        "quantity": (i * 7 + version) % 1000,
        "status": ("new", "active", "suspended", "closed")[(i + version) % 4],
        "is_active": (i + version) % 5 != 0,
        "created_at": _T0 + dt.timedelta(seconds=i),
        "updated_at": _T0 + dt.timedelta(seconds=i, minutes=version),
        "note": f"account {i} " + "lorem ipsum dolor " * 3,
    }
    if nested:
        row["attributes"] = document(i, version)
    return row


def encoded_row(i: int, *, version: int = 0, nested: bool = False) -> dict[str, JSONValue]:
    return {k: encode_value(v) for k, v in python_row(i, version=version, nested=nested).items()}


def scalar_update(
    i: int, version: int, *, nested: bool = False
) -> tuple[dict[str, JSONValue], dict[str, JSONValue]]:
    """Before/after of an update changing two scalar columns (balance and updated_at)."""
    before = encoded_row(i, version=version, nested=nested)
    after = dict(before)
    new = python_row(i, version=version + 1, nested=nested)
    after["balance"] = encode_value(new["balance"])
    after["updated_at"] = encode_value(new["updated_at"])
    return before, after


def nested_update(i: int, version: int) -> tuple[dict[str, JSONValue], dict[str, JSONValue]]:
    """Before/after of an update changing one leaf inside the JSON document."""
    before = encoded_row(i, version=version, nested=True)
    after = dict(before)
    doc = document(i, version)
    doc["lines"][1]["qty"] = doc["lines"][1]["qty"] % 9 + 1 + 10
    after["attributes"] = doc
    after["updated_at"] = encode_value(python_row(i, version=version + 1)["updated_at"])
    return before, after


def make_event(
    operation: Operation,
    i: int,
    before: dict[str, JSONValue] | None,
    after: dict[str, JSONValue] | None,
    *,
    table: str = "accounts",
    actor: str = "user-1",
    transaction_id: uuid.UUID | None = None,
    sequence: int = 0,
) -> ChangeEvent:
    now = utcnow()
    changed = sorted(
        name
        for name in set(before or {}) | set(after or {})
        if (before or {}).get(name) != (after or {}).get(name)
    )
    return ChangeEvent(
        event_id=new_event_id(),
        occurred_at=now,
        committed_at=now,
        service="bench",
        table=table,
        record_id=str(i),
        primary_key={"id": i},
        operation=operation,
        before=before,
        after=after,
        changed_columns=tuple(changed),
        actor=Actor(actor, {"role": "clerk"}),
        request_id=f"req-{i}",
        transaction_id=transaction_id or new_event_id(),
        sequence=sequence,
        metadata={"source": "bench"},
    )


def event_stream(count: int, *, seed: int = 1, table: str = "accounts") -> list[ChangeEvent]:
    """``count`` events of the mix described in the module docstring."""
    rng = random.Random(seed)
    events: list[ChangeEvent] = []
    transaction = new_event_id()
    for k in range(count):
        if k % 5 == 0:
            transaction = new_event_id()
        i = rng.randrange(1, 5001)
        version = rng.randrange(0, 1000)
        draw = rng.random()
        actor = f"user-{rng.randrange(20)}"
        nested = i % 3 == 0
        if draw < 0.25:
            op, before, after = Operation.INSERT, None, encoded_row(i, nested=nested)
        elif draw < 0.85:
            op = Operation.UPDATE
            before, after = scalar_update(i, version, nested=nested)
        elif draw < 0.95:
            op = Operation.UPDATE
            before, after = nested_update(i, version)
        else:
            op, before, after = Operation.DELETE, encoded_row(i, nested=nested), None
        events.append(
            make_event(
                op,
                i,
                before,
                after,
                table=table,
                actor=actor,
                transaction_id=transaction,
                sequence=k % 5,
            )
        )
    return events


__all__ = [
    "document",
    "encoded_row",
    "event_stream",
    "make_event",
    "nested_update",
    "python_row",
    "scalar_update",
]
