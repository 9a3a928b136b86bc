"""The web viewer's pages over a SQLite store filled by the real consumer (Starlette TestClient).

Every page, paging with the store's tokens, permalinks, escaping of hostile values, the
restore preview and mounting under a prefix.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from ui_support import HOSTILE, HOSTILE_KEY, INVOICES, ORDERS, SECRET, Trail, fill_store, make_trail

from consumer.query import AuditQuery
from consumer.sinks.memory import MemoryStore
from consumer.sinks.sqlite import SQLiteStore
from consumer.ui import audit_app
from sqla_audit.errors import StoreError
from sqla_audit.events import Operation


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return make_trail(tmp_path_factory.mktemp("ui-apps"))


@pytest.fixture(scope="module")
def store_path(trail: Trail, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-store") / "audit.db"
    store = SQLiteStore(path)
    try:
        fill_store(store, trail)
    finally:
        store.close()
    return path


@pytest.fixture(scope="module")
def client(store_path: Path) -> Iterator[TestClient]:
    store = SQLiteStore.open_read_only(store_path)
    try:
        with TestClient(audit_app(AuditQuery(store))) as test_client:
            yield test_client
    finally:
        store.close()


def text_of(page: str) -> str:
    """The visible text of a page: tags dropped, entities decoded, spaces collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def links(page: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(r'href="([^"]*)"', page)]


def link_to(page: str, path: str, **params: str) -> str:
    """The first link to ``path`` whose query has ``params``."""
    for href in links(page):
        parsed = urllib.parse.urlsplit(href)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        if parsed.path == path and all(query.get(k) == v for k, v in params.items()):
            return href
    raise AssertionError(f"no link to {path} {params} in {links(page)}")


def get(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:2000])
    return response.text


def test_home_has_the_search_form_with_known_tables(client: TestClient) -> None:
    """The search page offers every search field and completes the tables the store knows."""
    page = get(client, "/")
    for name in ("service", "table", "record_id", "actor", "request_id", "transaction_id"):
        assert f'name="{name}"' in page
    options = re.findall(r'<option value="([^"]*)"', page)
    assert ORDERS in options
    assert INVOICES in options


@pytest.mark.parametrize(
    ("params", "target"),
    [
        ({"table": ORDERS, "record_id": "1", "service": "shop"}, "/record"),
        ({"actor": "alice"}, "/actor"),
        ({"request_id": "req-1"}, "/request"),
        ({"transaction_id": "0192e4a1-7b2c-7d3e-8f40-123456789abc"}, "/transaction"),
        ({"service": "shop", "table": ORDERS}, "/table"),
    ],
)
def test_search_redirects_to_the_permalink_of_the_view(
    client: TestClient, params: dict[str, str], target: str
) -> None:
    """A search answers with a redirect to the view's own URL, which can be pasted anywhere."""
    response = client.get("/search", params=params, follow_redirects=False)
    assert response.status_code == 303
    assert urllib.parse.urlsplit(response.headers["location"]).path == target


def test_search_without_a_question_says_what_to_fill_in(client: TestClient) -> None:
    """An empty search shows the form again with a message, not an error page."""
    page = get(client, "/search?table=&actor=", 400)
    assert "Fill in" in text_of(page)


def test_record_timeline_is_newest_first_with_field_diffs(client: TestClient, trail: Trail) -> None:
    """A record's timeline lists every change newest first with old → new per field."""
    page = get(client, f"/record?service=shop&table={ORDERS}&id=1")
    text = text_of(page)
    ids = re.findall(r'id="e-([0-9a-f-]{36})"', page)
    expected = [
        str(e.event_id)
        for e in reversed(trail.events)
        if e.service == "shop" and e.record_id == "1"
    ]
    assert ids == expected
    assert 'status "new" → "paid"' in text
    assert "details.items[0].qty 1 → 2" in text
    assert 'details.address.city "Oslo" → "Bergen"' in text
    assert "card_token *** → ***" in text
    assert "masked" in text
    delete = trail.first(record_id="1", operation=Operation.DELETE)
    assert link_to(page, "/transaction", id=str(delete.transaction_id))
    assert link_to(page, "/request", id="req-5")
    assert link_to(page, "/actor", actor="bob", day=trail.day.isoformat())
    assert re.search(r'<time datetime="[0-9T:.-]+Z"', page)


def test_record_without_service_is_resolved_or_named(client: TestClient) -> None:
    """Without a service the one service that wrote it is used; several are listed as links."""
    page = get(client, f"/record?table={INVOICES}&id=7")
    assert "billing" in text_of(page)
    page = get(client, f"/record?table={ORDERS}&id=99", 409)
    assert link_to(page, "/record", service="billing", table=ORDERS, id="99")
    assert link_to(page, "/record", service="shop", table=ORDERS, id="99")


def test_unknown_record_is_a_404_page(client: TestClient) -> None:
    """A record nothing recorded is a page saying so (status 404)."""
    page = get(client, f"/record?service=shop&table={ORDERS}&id=12345", 404)
    assert "No change recorded" in text_of(page)


def test_timeline_pages_follow_the_store_tokens(client: TestClient, trail: Trail) -> None:
    """Small pages link to the next with the store's token until every change was shown."""
    url = f"/record?service=shop&table={ORDERS}&id=1&size=2"
    seen: list[str] = []
    pages = 0
    while url:
        page = get(client, url)
        seen.extend(re.findall(r'id="e-([0-9a-f-]{36})"', page))
        pages += 1
        older = [h for h in links(page) if "page=" in h and "/record?" in h]
        url = older[0] if older else ""
    expected = [
        str(e.event_id)
        for e in reversed(trail.events)
        if e.service == "shop" and e.record_id == "1"
    ]
    assert seen == expected
    assert pages == 2


def test_state_as_of_a_change_is_one_click(client: TestClient, trail: Trail) -> None:
    """Each change links to the whole record as of that change."""
    timeline = get(client, f"/record?service=shop&table={ORDERS}&id=1")
    insert = trail.first(record_id="1", operation=Operation.INSERT, service="shop")
    at = insert.committed_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    page = get(client, link_to(timeline, "/record/as-of", at=at))
    text = text_of(page)
    assert 'status "new"' in text
    assert "card_token ***" in text
    assert json.dumps(HOSTILE, ensure_ascii=False) in text


def test_state_as_of_a_typed_instant(client: TestClient, trail: Trail) -> None:
    """A typed instant with an offset, after the delete, says the record was deleted."""
    later = (trail.events[-1].committed_at + dt.timedelta(seconds=1)).astimezone(
        dt.timezone(dt.timedelta(hours=2))
    )
    params = urllib.parse.urlencode(
        {"service": "shop", "table": ORDERS, "id": "1", "at": later.isoformat()}
    )
    text = text_of(get(client, f"/record/as-of?{params}"))
    assert "did not exist" in text
    assert "deleted" in text


def test_a_naive_instant_is_refused_with_the_reason(client: TestClient) -> None:
    """An instant without a timezone is a 400 page that says a zone is needed."""
    page = get(client, f"/record/as-of?service=shop&table={ORDERS}&id=1&at=2026-01-01T00:00", 400)
    assert "timezone" in text_of(page)


def test_a_moved_key_links_to_the_new_key(client: TestClient) -> None:
    """The departure under the old key and its state link to the key the row moved to."""
    timeline = get(client, f"/record?service=shop&table={ORDERS}&id=2")
    assert "moved to 3" in text_of(timeline)
    assert link_to(timeline, "/record", service="shop", table=ORDERS, id="3")
    state = get(client, f"/record/as-of?service=shop&table={ORDERS}&id=2&at=now")
    assert link_to(state, "/record", service="shop", table=ORDERS, id="3")
    arrival = get(client, f"/record?service=shop&table={ORDERS}&id=3")
    assert "moved here from 2" in text_of(arrival)


def test_bulk_marker_is_explained(client: TestClient) -> None:
    """A bulk-statement marker says how many rows it stands for and why they are not itemized."""
    text = text_of(get(client, f"/record?service=shop&table={ORDERS}&id=*"))
    assert "Bulk update of 2 rows" in text
    assert "max_bulk_rows" in text
    assert "UPDATE ui_orders SET status=?" in text


def test_actor_activity_by_day(client: TestClient, trail: Trail) -> None:
    """An actor's day lists what they changed, grouped by day, with links to the records."""
    page = get(client, f"/actor?actor=alice&day={trail.day.isoformat()}")
    text = text_of(page)
    assert trail.day.isoformat() in text
    assert link_to(page, "/record", service="shop", table=ORDERS, id="1")
    assert link_to(page, "/record", service="billing", table=INVOICES, id="7")
    assert "bob" not in re.findall(r"actor=([a-z]+)", page)
    assert link_to(
        page, "/actor", actor="alice", day=(trail.day - dt.timedelta(days=1)).isoformat()
    )


def test_actor_pages_follow_the_store_tokens(client: TestClient, trail: Trail) -> None:
    """With a small page size the actor view links on with the store's token."""
    expected = [
        str(e.event_id)
        for e in reversed(trail.events)
        if e.actor is not None and e.actor.id == "bob"
    ]
    url = f"/actor?actor=bob&day={trail.day.isoformat()}&size=2"
    seen: list[str] = []
    while url:
        page = get(client, url)
        seen.extend(re.findall(r'id="e-([0-9a-f-]{36})"', page))
        more = [h for h in links(page) if "page=" in h and "/actor?" in h]
        url = more[0] if more else ""
    assert seen == expected


def test_transaction_lists_its_changes(client: TestClient, trail: Trail) -> None:
    """A transaction page lists every change of the commit in order, linked to the records."""
    update = trail.first(record_id="1", operation=Operation.UPDATE, service="shop")
    page = get(client, f"/transaction?id={update.transaction_id}")
    ids = re.findall(r'id="e-([0-9a-f-]{36})"', page)
    assert ids == [
        str(e.event_id) for e in trail.events if e.transaction_id == update.transaction_id
    ]
    assert link_to(page, "/record", service="shop", table=ORDERS, id="99")


def test_request_spans_services(client: TestClient) -> None:
    """A request page shows the changes of every service under that request id."""
    page = get(client, "/request?id=req-1")
    assert link_to(page, "/record", service="shop", table=ORDERS, id="1")
    assert link_to(page, "/record", service="billing", table=INVOICES, id="7")


def test_table_timeline(client: TestClient, trail: Trail) -> None:
    """A table's timeline lists its changes in a window, newest first, paged."""
    since = (trail.events[0].committed_at - dt.timedelta(minutes=1)).isoformat()
    params = urllib.parse.urlencode({"service": "shop", "table": ORDERS, "since": since})
    page = get(client, f"/table?{params}")
    ids = re.findall(r'id="e-([0-9a-f-]{36})"', page)
    shop_orders = [
        str(e.event_id) for e in reversed(trail.events) if e.service == "shop" and e.table == ORDERS
    ]
    assert ids == shop_orders


def test_restore_preview_plans_from_the_trail(client: TestClient, trail: Trail) -> None:
    """'Restore this version' shows the planned changes and the API call; it never writes."""
    update = trail.first(record_id="1", operation=Operation.UPDATE, service="shop")
    timeline = get(client, f"/record?service=shop&table={ORDERS}&id=1")
    page = get(client, link_to(timeline, "/record/restore", event=str(update.event_id)))
    text = text_of(page)
    assert "Re-insert the row" in text  # it has since been deleted
    assert 'status "paid"' in text
    assert "card_token" in text
    assert "masked" in text
    assert "plan_restore(" in text
    assert str(update.event_id) in text
    assert "dry run" in text
    assert 'method="post"' not in page.lower()


def test_restore_preview_of_an_update_lists_the_columns_to_write(
    client: TestClient, trail: Trail
) -> None:
    """For a row that still exists the preview lists latest → restored per changed column."""
    move = trail.first(record_id="3", operation=Operation.UPDATE)
    page = get(client, f"/record/restore?service=shop&table={ORDERS}&id=3&event={move.event_id}")
    text = text_of(page)
    assert "Update these columns" in text
    assert 'status "shipped" → "new"' in text
    assert "card_token" not in text.split("Update these columns", 1)[1].split("In your", 1)[0]


def test_restore_preview_of_a_moved_record_says_it_moved(client: TestClient, trail: Trail) -> None:
    """A record whose key changed since cannot be restored under its old id: the page says so."""
    insert = trail.first(record_id="2", operation=Operation.INSERT)
    page = get(client, f"/record/restore?service=shop&table={ORDERS}&id=2&event={insert.event_id}")
    text = text_of(page)
    assert "moved to another key (3)" in text
    assert "RecordMoved" in text


def test_restore_preview_of_an_unknown_event_is_a_404(client: TestClient) -> None:
    """An event id that is not one of the record's changes is a 404 page."""
    get(client, f"/record/restore?service=shop&table={ORDERS}&id=1&event=nope", 404)


def test_hostile_values_are_escaped_everywhere(client: TestClient, trail: Trail) -> None:
    """Markup, quotes and non-ASCII in values, keys and actors come back as text, never as tags."""
    update = trail.first(record_id="1", operation=Operation.UPDATE, service="shop")
    insert = trail.first(record_id="1", operation=Operation.INSERT, service="shop")
    at = insert.committed_at.isoformat()
    urls = [
        f"/record?service=shop&table={ORDERS}&id=1",
        "/record/as-of?"
        + urllib.parse.urlencode({"service": "shop", "table": ORDERS, "id": "1", "at": at}),
        f"/record/restore?service=shop&table={ORDERS}&id=1&event={update.event_id}",
        f"/actor?actor=alice&day={trail.day.isoformat()}",
        "/actor?"
        + urllib.parse.urlencode({"actor": "<i>mallory</i>", "day": trail.day.isoformat()}),
        f"/transaction?id={insert.transaction_id}",
        "/request?id=req-1",
        "/record?" + urllib.parse.urlencode({"table": "<script>x</script>", "id": '"><b>'}),
    ]
    for url in urls:
        response = client.get(url)
        page = response.text
        assert "<script>alert" not in page, url
        assert "<img src=x" not in page, url
        assert "<i>mallory</i>" not in page, url
        assert "<b>key</b>" not in page, url
        assert "<script>x</script>" not in page, url
        assert SECRET not in page, url
    page = get(client, urls[0])
    rendered = json.dumps(HOSTILE, ensure_ascii=False)  # strings are shown quoted, as in the CLI
    assert html.escape(rendered, quote=False) in page.replace("&#34;", '"').replace("&#39;", "'")
    assert "ünïcødé" in page
    assert "&lt;b&gt;key&lt;/b&gt;" in page
    assert HOSTILE_KEY in text_of(page)
    assert "&lt;i&gt;mallory&lt;/i&gt;" in page


def test_the_viewer_is_read_only(client: TestClient) -> None:
    """No page accepts a write: POST is refused."""
    assert client.post(f"/record?service=shop&table={ORDERS}&id=1").status_code == 405
    assert client.post("/search").status_code == 405


def test_static_assets_ship_in_the_package(client: TestClient) -> None:
    """The stylesheet and script are served from the package (no CDN)."""
    page = get(client, "/")
    for href in re.findall(r'(?:href|src)="([^"]+\.(?:css|js))"', page):
        assert not href.startswith("http"), href
        assert client.get(href).status_code == 200


def test_mounted_under_a_prefix_every_link_keeps_it(store_path: Path, trail: Trail) -> None:
    """Mounted at /audit in a host application, every link and asset stays under /audit."""
    store = SQLiteStore.open_read_only(store_path)
    try:
        host = Starlette(routes=[Mount("/audit", app=audit_app(AuditQuery(store)))])
        with TestClient(host) as test_client:
            page = get(test_client, f"/audit/record?service=shop&table={ORDERS}&id=1")
            refs = links(page) + re.findall(r'src="([^"]+)"', page)
            local = [h for h in refs if not h.startswith("#")]
            assert local
            for href in local:
                assert href.startswith("/audit/"), href
            response = test_client.get(
                "/audit/search", params={"actor": "alice"}, follow_redirects=False
            )
            assert response.headers["location"].startswith("/audit/actor?")
            assert get(test_client, link_to(page, "/audit/transaction"))
    finally:
        store.close()


class BrokenStore(MemoryStore):
    """A store whose reads fail the way an unreachable Cassandra does."""

    def services_of(self, table: str, record_id: str) -> list[str]:
        raise StoreError("cannot reach cassandra at secret-host.internal:9042")


def test_a_store_failure_is_a_503_page_without_details() -> None:
    """A failing store gives a short 503 page; the store's error text stays in the log."""
    with TestClient(audit_app(AuditQuery(BrokenStore()))) as broken:
        response = broken.get(f"/record?table={ORDERS}&id=1")
    assert response.status_code == 503
    assert "could not be read" in text_of(response.text)
    assert "secret-host" not in response.text


def test_a_large_transaction_is_shown_a_page_at_a_time(client: TestClient, trail: Trail) -> None:
    """A transaction's changes are paged like the other listings (size, then a next link)."""
    insert = trail.first(service="billing", record_id="7")
    expected = [str(e.event_id) for e in trail.events if e.transaction_id == insert.transaction_id]
    assert len(expected) == 2
    page = get(client, f"/transaction?id={insert.transaction_id}&size=1")
    assert re.findall(r'id="e-([0-9a-f-]{36})"', page) == expected[:1]
    more = [h for h in links(page) if "page=" in h and "/transaction?" in h]
    assert more
    page = get(client, more[0])
    assert re.findall(r'id="e-([0-9a-f-]{36})"', page) == expected[1:]
    assert not [h for h in links(page) if "page=" in h and "/transaction?" in h]
