"""Golden rows: what the consumer stores for a fixed set of message bodies.

The bodies cover every shape the differ and the stores handle (inserts, scalar and nested
updates, arrays of scalars, DeepDiff's conventions for nested detail, masked columns, no-op
updates, key changes with their departure records, bulk markers, bundles and SNS
envelopes). ``golden_consumer_rows.json`` holds the bodies and, for each, the flat row of
every record (:func:`consumer.records.record_to_row`) and a digest of its Cassandra
statements with their bound values (with and without a time bucket), as the consumer
produced them before its CPU tuning. Any change to a stored row shows up here. (The
statement digests were regenerated deliberately twice, the rows unchanged: when absent values
became ``UNSET_VALUE`` instead of ``None``, and for audit layout 2 -- history keyed by
service, the request, trace and table views, every view enabled.)

Regenerate (only for an intended change of the stored form) with
``python -m tests.unit.test_sinks_golden_rows``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from cassandra.query import UNSET_VALUE

from consumer.config import CassandraSchemaConfig
from consumer.decoding import Decoder
from consumer.differ import records_for_event
from consumer.records import record_to_row
from consumer.sinks.cassandra import CassandraStore, KeyspaceLayout
from consumer.sinks.views import DEFAULT_VIEWS

GOLDEN = Path(__file__).with_name("golden_consumer_rows.json")
_T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class _Prepared:
    """Stands in for a driver prepared statement: keeps the CQL text."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.is_idempotent = False


class _Session:
    def prepare(self, query: str) -> _Prepared:
        return _Prepared(query)


def _plain(value: Any) -> Any:
    """A JSON form of a bound value that keeps its Python type visible."""
    if value is UNSET_VALUE:
        return {"unset": True}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    return value


def stored_rows(body: str) -> list[dict[str, Any]]:
    """The flat row of every record of ``body``."""
    return [
        {k: _plain(v) for k, v in record_to_row(record).items()}
        for event in Decoder().decode(body)
        for record in records_for_event(event)
    ]


def statement_digests(body: str, bucket: str) -> list[str]:
    """Per record of ``body``: a digest of its Cassandra statements and bound values."""
    layout = KeyspaceLayout(2, views=DEFAULT_VIEWS, time_bucket=bucket)
    store = CassandraStore(
        _Session(), CassandraSchemaConfig(keyspace="ks", time_bucket=bucket), layout=layout
    )
    out = []
    for event in Decoder().decode(body):
        for record in records_for_event(event):
            statements = [
                [statement.query, [_plain(v) for v in params]]
                for statement, params in store._statements_for(record)
            ]
            text = json.dumps(statements, sort_keys=True, ensure_ascii=False)
            out.append(hashlib.sha256(text.encode()).hexdigest())
    return out


# --------------------------------------------------------------------------- the bodies


def _document(rng: random.Random) -> dict[str, Any]:
    return {
        "prefs": {"lang": rng.choice(["en", "fr"]), "mail": rng.random() < 0.5},
        "tags": [f"t{rng.randrange(6)}" for _ in range(rng.randrange(5))],
        "lines": [
            {"sku": f"S{k}", "qty": rng.randrange(1, 5), "price": {"$type": "decimal", "v": "9.50"}}
            for k in range(rng.randrange(1, 4))
        ],
        "__internal": {"rev": rng.randrange(3)},
        "note": 'café ☕ \u2028 "quoted"',
    }


def _row(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"Account {i} ü",
        "balance": {"$type": "decimal", "v": f"{rng.randrange(10_000)}.{rng.randrange(100):02d}"},
        "active": rng.random() < 0.7,
        "ratio": rng.choice([0.5, 1.0, 2.25, -0.0, 1e-7]),
        "seen": {"$type": "datetime", "v": "2026-01-31T12:00:00.000001+00:00"},
        "doc": _document(rng),
        "codes": [rng.randrange(4) for _ in range(rng.randrange(6))],
        "secret": "***",
    }


def _nested_edits(rng: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    new = json.loads(json.dumps(doc))
    kind = rng.randrange(7)
    if kind == 0:
        new["lines"][0]["qty"] += 1
    elif kind == 1:
        new["tags"] = [*new["tags"], "added"]
    elif kind == 2:
        new["tags"] = [*reversed(new["tags"]), "x"]
    elif kind == 3:
        new["__internal"]["rev"] += 1
    elif kind == 4:
        new = {"other": 1, "keys": 2, "entirely": 3, "prefs": new["prefs"]}
    elif kind == 5:
        new["lines"][0]["price"] = {"$type": "decimal", "v": "10.00"}
        del new["prefs"]["mail"]
        new["prefs"]["theme"] = "dark"
    else:
        new["lines"] = new["lines"][:-1] or [{"sku": "S9", "qty": 1}]
    return new


def _event(rng: random.Random, n: int, **fields: Any) -> dict[str, Any]:
    at = _T0 + dt.timedelta(milliseconds=n * 7, microseconds=rng.randrange(1000))
    event = {
        "schema_version": 1,
        "event_id": str(uuid.UUID(int=(int(at.timestamp() * 1000) << 80) | (7 << 76) | n)),
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "committed_at": (at + dt.timedelta(microseconds=321)).isoformat().replace("+00:00", "Z"),
        "service": "billing",
        "table": "public.accounts",
        "record_id": "1",
        "previous_record_id": None,
        "primary_key": {"id": 1},
        "operation": "update",
        "before": None,
        "after": None,
        "changed_columns": [],
        "masked_columns": ["secret"],
        "actor": {"id": f"user-{n % 3}", "attributes": {"role": "admin", "n": n}},
        "request_id": f"req-{n}",
        "transaction_id": str(uuid.UUID(int=1000 + n // 3)),
        "sequence": n % 3,
        "metadata": {"source": "golden"},
    }
    event.update(fields)
    return event


def bodies() -> list[str]:
    """The fixed message bodies of the golden file (deterministic)."""
    rng = random.Random(20260301)
    events: list[dict[str, Any]] = []
    for n in range(48):
        i = n % 9
        before = _row(rng, i)
        op = ("insert", "update", "update", "update", "delete")[n % 5]
        if op == "insert":
            events.append(_event(rng, n, operation="insert", after=before, record_id=str(i)))
            continue
        if op == "delete":
            events.append(_event(rng, n, operation="delete", before=before, record_id=str(i)))
            continue
        after = json.loads(json.dumps(before))
        changed = []
        if n % 3 == 0:
            after["doc"] = _nested_edits(rng, before["doc"])
            changed.append("doc")
        if n % 4 == 0:
            after["codes"] = [rng.randrange(4) for _ in range(rng.randrange(6))]
            changed.append("codes")
        if n % 2 == 0:
            after["balance"] = {"$type": "decimal", "v": "1.00"}
            changed.append("balance")
        if n % 7 == 0:
            changed.append("secret")  # masked: same marker on both sides, reported changed
        extra: dict[str, Any] = {}
        if n % 11 == 0:
            extra = {"previous_record_id": "old-" + str(i)}
        if n % 13 == 0:
            extra["actor"] = None
            extra["request_id"] = None
        events.append(
            _event(
                rng,
                n,
                before=before,
                after=after,
                changed_columns=changed,
                record_id=str(i),
                **extra,
            )
        )
    marker = _event(
        rng,
        100,
        record_id="*",
        operation="update",
        before={},
        after={},
        metadata={"sqla_audit.bulk": {"statement": "UPDATE accounts SET x=?"}},
    )
    out = [json.dumps(e, ensure_ascii=False) for e in events]
    out.append(json.dumps(marker))
    out.append(json.dumps(events[:3]))  # a bundle
    out.append(
        json.dumps(
            {
                "Type": "Notification",
                "TopicArn": "arn:aws:sns:us-east-1:000000000000:audit",
                "Message": json.dumps(events[3]),
            }
        )
    )
    return out


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


def test_stored_rows_match_the_golden_file() -> None:
    """Every body yields exactly the pinned flat rows."""
    golden = _load()
    assert golden["bodies"] == bodies()
    for body, expected in zip(golden["bodies"], golden["rows"], strict=True):
        assert stored_rows(body) == expected


@pytest.mark.parametrize("bucket", ["none", "month"])
def test_cassandra_statements_match_the_golden_file(bucket: str) -> None:
    """Every record is written with exactly the pinned statements and bound values."""
    golden = _load()
    for body, expected in zip(golden["bodies"], golden["statements"][bucket], strict=True):
        assert statement_digests(body, bucket) == expected


def test_golden_file_covers_the_interesting_shapes() -> None:
    """The golden bodies include moves, markers, no-op updates and nested detail."""
    golden = _load()
    rows = [row for records in golden["rows"] for row in records]
    details = [
        change.get("detail")
        for row in rows
        for change in json.loads(row["changes"]).values()
        if change.get("detail")
    ]
    assert any(row["record_id"].startswith("old-") for row in rows)  # departures
    assert any(row["record_id"] == "*" for row in rows)  # marker
    assert any(records == [] for records in golden["rows"])  # an update that changed nothing
    assert len(details) >= 10
    assert any(d[0]["path"] == [] for d in details)  # a whole object replaced (diff deeper)


def _regenerate() -> None:  # pragma: no cover - run by hand for an intended change
    texts = bodies()
    data = {
        "bodies": texts,
        "rows": [stored_rows(body) for body in texts],
        "statements": {
            bucket: [statement_digests(body, bucket) for body in texts]
            for bucket in ("none", "month")
        },
    }
    GOLDEN.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    _regenerate()
