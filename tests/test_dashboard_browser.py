"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), served by ``yolov7-studio dashboard``:
every page renders without an exception and draws its figures. Screenshots go to ``runs/screenshots/dashboard_*.png``
(or $STUDIO_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.studio_server import CHROMIUM, CHROMIUM_ARGS, SHOTS
from tests.test_dashboard import make_run

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium on this machine (./scripts/test.sh installs Debian's chromium when run as root)")
    ws = tmp_path_factory.mktemp("dash_browser") / "ws"
    runs = ws / "runs"
    runs.mkdir(parents=True)
    make_run(runs, "tiny-a", 10, quality=0.05, epochs=10, latency=3.1)
    make_run(runs, "tiny-b", 10, quality=0.07, epochs=10, latency=3.4)
    make_run(runs, "big-c", 6, quality=0.09, epochs=10, latency=9.5, model="yolov7", state="stopped")
    make_run(runs, "live-d", 4, quality=0.06, epochs=10, state="running")  # this test process: alive
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dashboard", "--workspace", str(ws), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        found = None
        assert proc.stdout is not None
        while time.time() < deadline and found is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            found = re.search(r"yolov7-studio dashboard: (http://127\.0\.0\.1:\d+)", line)
        assert found, "the dashboard command did not print its URL"
        yield found.group(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def visit(browser, url: str, path: str, title: str, charts: int, name: str, action=None):  # type: ignore[no-untyped-def]
    ctx = browser.new_context(viewport={"width": 1440, "height": 2200})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/{path}", wait_until="load", timeout=120_000)
    page.get_by_role("heading", name=title).wait_for(timeout=180_000)
    if action is not None:
        action(page)
    if charts:
        page.locator(".js-plotly-plot").nth(charts - 1).wait_for(state="attached", timeout=300_000)
    page.wait_for_timeout(1500)  # the last figures settle
    assert page.locator('[data-testid="stException"]').count() == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"dashboard_{name}.png"), full_page=True)
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    return page


def compute_statistics(page) -> None:  # type: ignore[no-untyped-def]
    box = page.get_by_label("Images")
    box.fill("20")
    box.press("Enter")
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Compute the statistics").click()


def open_samples(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("tab", name="Samples").click()
    page.locator('[data-testid="stImage"]').nth(11).wait_for(timeout=120_000)  # a full grid of 12


def explore_one_image(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("tab", name="One image").click()
    page.get_by_role("button", name="Explore this image").click()


@pytest.mark.parametrize(
    ("path", "title", "charts", "action"),
    [
        ("", "Training runs", 4, None),
        ("compare", "Compare runs", 2, None),
        ("datasets", "Datasets", 4, None),
        ("assignments", "Label assignment", 3, compute_statistics),
        ("launch", "Launch a training", 0, None),
        ("datasets", "Datasets", 4, open_samples),
        ("assignments", "Label assignment", 1, explore_one_image),
    ],
    ids=["runs", "compare", "datasets", "assignments", "launch", "datasets_samples", "assignments_image"],
)
def test_every_page_renders(request, browser, url: str, path: str, title: str, charts: int, action) -> None:  # type: ignore[no-untyped-def]
    name = request.node.callspec.id
    visit(browser, url, path, title, charts, name, action)


def test_server_binds_localhost_only(url: str) -> None:
    assert url.startswith("http://127.0.0.1:")
