"""The demo scenario's expected outcome, shared by its SQLite and Cassandra tests.

The same scripted run must leave the same histories in every store, so the oracle and the
way it is read back live here once.
"""

from __future__ import annotations

import datetime as dt

from consumer.sinks.base import AuditStore

History = dict[tuple[str, str, str], list[tuple[str, str | None]]]

#: The history every record of the scenario must have: (operation, actor), oldest first,
#: by (service, table, record id).
EXPECTED: History = {
    ("shop", "customers", "1"): [("insert", "alice"), ("update", "bob"), ("delete", "alice")],
    ("shop", "customers", "2"): [("insert", "alice")],
    ("shop", "products", "KB-01"): [("insert", "carol"), ("update", "carol")],
    ("shop", "products", "MS-02"): [("insert", "carol"), ("update", "carol")],
    ("shop", "products", "MN-03"): [("insert", "carol"), ("update", "bob"), ("update", "carol")],
    ("shop", "orders", "1"): [("insert", "bob"), ("update", "carol")],
    ("billing", "invoices", "1"): [("insert", "bob")],
    ("shop", "customers", "3"): [],
    ("shop", "orders", "2"): [],
}

#: The request that changed rows in both services, and (service, table, id) of each change.
SHARED_REQUEST = "demo-req-003"
SHARED_RECORDS = [
    ("billing", "invoices", "1"),
    ("shop", "orders", "1"),
    ("shop", "products", "MN-03"),
]


def stored(store: AuditStore, since: dt.datetime | None = None) -> History:
    """Each scenario record's (operation, actor) list in ``store``, oldest first."""
    return {
        key: [
            (r.operation.value, r.actor_id)
            for r in sorted(store.history(*key, since=since).items, key=lambda r: r.sort_key)
        ]
        for key in EXPECTED
    }


def stored_request(store: AuditStore, since: dt.datetime | None = None) -> list[tuple[str, ...]]:
    """(service, table, record id, operation) of each change of the shared request, in the
    store's request view order (commit order), changes before ``since`` left out."""
    return [
        (r.service, r.table, r.record_id, r.operation.value)
        for r in store.by_request(SHARED_REQUEST, limit=100).items
        if since is None or r.event_time >= since
    ]
