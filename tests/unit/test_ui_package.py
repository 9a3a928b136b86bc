"""The viewer's templates and static files ship in the wheel (nothing is fetched from a CDN)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "consumer" / "ui"


@pytest.mark.slow
def test_wheel_carries_the_viewer_templates_and_assets(tmp_path: Path) -> None:
    """Every template, the stylesheet and the script are in the built wheel."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("sqla_audit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = sorted(
        path.relative_to(ROOT).as_posix()
        for folder in ("templates", "static")
        for path in (UI / folder).iterdir()
        if path.is_file()
    )
    assert shipped
    assert [name for name in shipped if name not in names] == []


def test_pages_load_nothing_from_elsewhere() -> None:
    """No template or asset refers to another host (no CDN, no web fonts)."""
    for path in [*(UI / "templates").iterdir(), *(UI / "static").iterdir()]:
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text, path
        assert "https://" not in text, path
        assert "//cdn" not in text, path
