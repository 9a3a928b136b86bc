"""The viewer in a real browser (Debian's chromium through chromium-driver, headless) over a
SQLite store filled by the real consumer: search → timeline → as-of → actor → transaction,
checking the rendered text, with a screenshot of each page (``$SQLA_AUDIT_TEST_ARTIFACTS``
or a pytest temporary directory). Deselect with ``-m "not browser"``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import ui_support
from demo_support import EXPECTED, SHARED_RECORDS, SHARED_REQUEST
from ui_support import (
    artifacts_dir,
    chrome,
    fill_store,
    make_trail,
    screenshot,
    serve,
    walk_the_viewer,
)

from consumer.demo.runner import DemoConfig, run_demo
from consumer.query import AuditQuery
from consumer.sinks.sqlite import SQLiteStore
from consumer.ui import audit_app


@pytest.mark.browser
def test_search_timeline_as_of_actor_transaction(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A person can walk from a search to a transaction, and every page shows the trail."""
    trail = make_trail(tmp_path)
    path = tmp_path / "audit.db"
    writer = SQLiteStore(path)
    try:
        fill_store(writer, trail)
    finally:
        writer.close()
    store = SQLiteStore.open_read_only(path)
    try:
        with chrome() as driver, serve(audit_app(AuditQuery(store))) as url:
            shots = walk_the_viewer(
                driver, url, trail, artifacts_dir(tmp_path_factory, "ui-sqlite")
            )
    finally:
        store.close()
    assert [p.name for p in shots] == [
        "1-search.png",
        "2-timeline.png",
        "3-as-of.png",
        "4-actor.png",
        "5-transaction.png",
    ]


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_browser_fails_under_ci_and_skips_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    """Without chromium-driver the browser test fails under CI=true and is skipped elsewhere."""
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(ui_support, "CHROMEDRIVER", tmp_path / "no-chromedriver")
    with pytest.raises(outcome, match="chromium-driver"), chrome():
        pass


@pytest.mark.browser
def test_the_demo_trail_in_the_browser(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The demo's store in the viewer: a product's timeline and the request across services
    (the screenshots docs/viewer.md shows come from here)."""
    assert run_demo(DemoConfig(workdir=tmp_path), io.StringIO()) == 0
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    shots = artifacts_dir(tmp_path_factory, "ui-demo")
    store = SQLiteStore.open_read_only(tmp_path / "audit.db")
    try:
        with chrome() as driver, serve(audit_app(AuditQuery(store))) as url:
            driver.get(f"{url}/record?service=shop&table=products&id=MN-03")
            changes = driver.find_elements(By.CSS_SELECTOR, "li.change .who a")
            expected = [actor for _, actor in reversed(EXPECTED[("shop", "products", "MN-03")])]
            assert [link.text for link in changes] == expected
            assert "price" in driver.find_element(By.TAG_NAME, "body").text
            screenshot(driver, shots, "demo-timeline")
            driver.get(f"{url}/request?id={SHARED_REQUEST}")
            text = driver.find_element(By.TAG_NAME, "body").text
            for _service, table, record_id in SHARED_RECORDS:
                assert f"{table} {record_id}" in text
            screenshot(driver, shots, "demo-request")
    finally:
        store.close()
