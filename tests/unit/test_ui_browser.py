"""The viewer in a real browser (Debian's chromium through chromium-driver, headless) over a
SQLite store filled by the real consumer: search → timeline → as-of → actor → transaction,
checking the rendered text, with a screenshot of each page (``$SQLA_AUDIT_TEST_ARTIFACTS``
or a pytest temporary directory). Deselect with ``-m "not browser"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ui_support
from ui_support import artifacts_dir, chrome, fill_store, make_trail, serve, walk_the_viewer

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
