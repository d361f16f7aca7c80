"""The studio in a real headless Chromium (Debian's, driven by Playwright): every tab renders its main component,
detection on an example draws boxes, the Assignments tab draws its figure. Screenshots go to
``runs/screenshots/`` (or $STUDIO_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.studio_server import REPO, studio_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS", REPO / "runs" / "screenshots"))

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium on this machine (./scripts/test.sh installs Debian's chromium when run as root)")
    with studio_process(tmp_path_factory.mktemp("browser") / "ws") as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, page_url):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(page_url, wait_until="load", timeout=120_000)
    pg.get_by_role("tab", name="Compare").wait_for(timeout=60_000)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def test_page_loads_with_every_tab(page):
    names = [t.inner_text().strip() for t in page.get_by_role("tab").all()]
    assert names == ["Detect", "Assignments", "Data", "Fine-tune", "Compare"]
    assert "yolov7-studio" in page.title()
    shot(page, "studio_home")
