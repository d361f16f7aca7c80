"""The studio in a real headless Chromium (Debian's, driven by Playwright): every tab renders its main component,
detection on an example draws boxes, the Assignments tab draws its figure. Screenshots go to
``runs/screenshots/`` (or $STUDIO_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.studio_server import CHROMIUM, CHROMIUM_ARGS, SHOTS, studio_process

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
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
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
    assert names == ["Detect", "Assignments", "Data", "Annotate", "Review", "Fine-tune", "Compare"]
    assert "yolov7-studio" in page.title()
    shot(page, "studio_home")


def test_detect_on_an_example_draws_boxes(page):
    open_tab(page, "Detect")
    panel = page.locator("[role=tabpanel]:visible").first
    panel.get_by_text("demo test images").wait_for(timeout=30_000)
    examples = panel.locator(".gallery-item, button.gallery")
    assert examples.count() >= 2
    examples.nth(1).click()  # a demo test image with several shapes
    page.wait_for_timeout(1500)  # the example is uploaded into the image input before it can be detected
    panel.get_by_role("button", name="Detect", exact=True).click()
    # one table row per detection, each naming a demo class, and the summary with the latency and the backend
    row = page.get_by_role("row").filter(has_text=re.compile("circle|square|triangle|cross"))
    row.first.wait_for(timeout=120_000)
    assert row.count() >= 2
    assert panel.get_by_text(re.compile(r"\d+(\.\d+)? ms")).count() >= 1
    assert panel.locator("img").count() >= 1
    shot(page, "studio_detect")


def test_assignments_tab_draws_the_figure_and_the_box_table(page):
    open_tab(page, "Assignments")
    panel = page.locator("[role=tabpanel]:visible").first
    panel.get_by_role("button", name="Explore assignment").click()
    panel.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    assert panel.locator(".js-plotly-plot .heatmaplayer, .js-plotly-plot .hm").count() >= 1  # objectness maps
    assert page.get_by_role("row").filter(has_text=re.compile("circle|square|triangle|cross")).count() >= 1  # a box
    shot(page, "studio_assign")


@pytest.mark.parametrize(
    ("tab", "component"),
    [
        ("Data", "Check"),
        ("Annotate", "Save"),
        ("Review", "Build the queue"),
        ("Fine-tune", "Start training"),
        ("Compare", "Compare"),
    ],
)
def test_each_tab_renders_its_main_component(page, tab, component):
    open_tab(page, tab)
    panel = page.locator("[role=tabpanel]:visible").first
    button = panel.get_by_role("button", name=component, exact=True)
    button.first.wait_for(timeout=30_000)
    assert button.first.is_visible()
    shot(page, f"studio_{tab.lower().replace('-', '')}")


def test_data_tab_checks_the_demo_dataset(page):
    open_tab(page, "Data")
    panel = page.locator("[role=tabpanel]:visible").first
    panel.get_by_role("button", name="Check", exact=True).click()
    panel.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    shot(page, "studio_data")
