"""The web viewer over a real Cassandra store filled by the real consumer: every view answers
from Cassandra, paging follows its tokens, and a real browser (Debian's chromium) walks
search → timeline → as-of → actor → transaction with a screenshot of each page.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cassandra_support import cassandra_config
from starlette.testclient import TestClient
from ui_support import (
    INVOICES,
    ORDERS,
    SECRET,
    Trail,
    artifacts_dir,
    chrome,
    fill_store,
    make_trail,
    serve,
    walk_the_viewer,
)

from consumer.query import AuditQuery
from consumer.sinks.cassandra import CassandraStore, apply_schema
from consumer.ui import audit_app
from sqla_audit.events import Operation

if TYPE_CHECKING:
    from cassandra.cluster import Session as CassandraSession


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return make_trail(tmp_path_factory.mktemp("ui-apps"))


@pytest.fixture(scope="module")
def query(
    trail: Trail, cassandra_contact: str, cassandra_session: CassandraSession
) -> Iterator[AuditQuery]:
    """A fresh keyspace holding the trail, written by the worker."""
    keyspace = f"sqla_audit_ui_{uuid.uuid4().hex[:8]}"
    config = cassandra_config(cassandra_contact, keyspace)
    apply_schema(config)
    store = CassandraStore.connect(config)
    try:
        fill_store(store, trail)
        yield AuditQuery(store)
    finally:
        store.close()
        cassandra_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


@pytest.fixture(scope="module")
def client(query: AuditQuery) -> Iterator[TestClient]:
    with TestClient(audit_app(query)) as test_client:
        yield test_client


def event_ids(page: str) -> list[str]:
    return re.findall(r'id="e-([0-9a-f-]{36})"', page)


def next_link(page: str, path: str) -> str | None:
    for found in re.findall(r'href="([^"]*)"', page):
        href = html.unescape(found)
        if href.startswith(path + "?") and "page=" in href:
            return href
    return None


def test_timeline_pages_follow_cassandra_tokens(client: TestClient, trail: Trail) -> None:
    """A record's timeline on Cassandra, two changes a page, lists every change newest first."""
    url: str | None = f"/record?service=shop&table={ORDERS}&id=1&size=2"
    seen: list[str] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text[:500]
        assert SECRET not in response.text
        assert "<script>alert" not in response.text
        seen.extend(event_ids(response.text))
        url = next_link(response.text, "/record")
    expected = [
        str(e.event_id)
        for e in reversed(trail.events)
        if e.service == "shop" and e.record_id == "1"
    ]
    assert seen == expected


def test_every_view_answers_from_cassandra(client: TestClient, trail: Trail) -> None:
    """As-of, restore preview, actor, transaction, request and table views read Cassandra."""
    insert = trail.first(service="shop", record_id="1", operation=Operation.INSERT)
    update = trail.first(service="shop", record_id="1", operation=Operation.UPDATE)
    at = insert.committed_at.isoformat()
    since = (trail.events[0].committed_at - dt.timedelta(minutes=1)).isoformat()
    pages = {
        "/record/as-of?"
        + urllib.parse.urlencode({"service": "shop", "table": ORDERS, "id": "1", "at": at}): [
            str(insert.event_id)
        ],
        f"/record/restore?service=shop&table={ORDERS}&id=1&event={update.event_id}": [
            str(update.event_id)
        ],
        f"/actor?actor=alice&day={trail.day.isoformat()}": [
            str(e.event_id)
            for e in reversed(trail.events)
            if e.actor is not None and e.actor.id == "alice"
        ],
        f"/transaction?id={insert.transaction_id}": [
            str(e.event_id) for e in trail.events if e.transaction_id == insert.transaction_id
        ],
        "/request?id=req-1": [str(e.event_id) for e in trail.events if e.request_id == "req-1"],
        "/table?"
        + urllib.parse.urlencode({"service": "billing", "table": INVOICES, "since": since}): [
            str(e.event_id) for e in trail.events if e.table == INVOICES
        ],
    }
    for url, expected in pages.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:500])
        assert event_ids(response.text) == expected, url
        assert SECRET not in response.text


@pytest.mark.browser
def test_browser_walk_on_cassandra(
    query: AuditQuery, trail: Trail, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """In Chromium, over Cassandra: search → timeline → as-of → actor → transaction."""
    with chrome() as driver, serve(audit_app(query)) as url:
        shots = walk_the_viewer(driver, url, trail, artifacts_dir(tmp_path_factory, "ui-cassandra"))
    assert len(shots) == 5
    assert all(Path(shot).stat().st_size > 0 for shot in shots)
