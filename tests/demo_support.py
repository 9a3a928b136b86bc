"""The demo scenario's expected outcome, shared by its SQLite and Cassandra tests.

The same scripted run must leave the same histories in every store, so the oracle and the
way it is read back live here once.
"""

from __future__ import annotations

import datetime as dt

from consumer.sinks.base import AuditStore

History = dict[tuple[str, str], list[tuple[str, str | None]]]

#: The history every record of the scenario must have: (operation, actor), oldest first.
EXPECTED: History = {
    ("customers", "1"): [("insert", "alice"), ("update", "bob"), ("delete", "alice")],
    ("customers", "2"): [("insert", "alice")],
    ("products", "KB-01"): [("insert", "carol"), ("update", "carol")],
    ("products", "MS-02"): [("insert", "carol"), ("update", "carol")],
    ("products", "MN-03"): [("insert", "carol"), ("update", "bob"), ("update", "carol")],
    ("orders", "1"): [("insert", "bob"), ("update", "carol")],
    ("customers", "3"): [],
    ("orders", "2"): [],
}


def stored(store: AuditStore, since: dt.datetime | None = None) -> History:
    """Each scenario record's (operation, actor) list in ``store``, oldest first."""
    return {
        key: [
            (r.operation.value, r.actor_id)
            for r in sorted(store.history(*key, since=since).items, key=lambda r: r.sort_key)
        ]
        for key in EXPECTED
    }
