"""Dashboard page load times on a large workspace: the Runs and Compare pages with 50 runs of 100 epochs each.

Usage::

    python benchmarks/bench_dashboard.py                    # 50 runs x 100 epochs, 5 repeats
    python benchmarks/bench_dashboard.py --runs 100 --epochs 300 --repeats 3 --json out.json

The workspace is generated with ``core.train.RunDir``'s own writers (status.json, config.json, results.csv with lead
and aux losses, lr, mAPs and per-class AP). Each page is run through ``streamlit.testing.v1.AppTest`` (the script run
a browser's request triggers, without the browser's drawing):

* **cold**: the first run in this process (Streamlit's caches empty: every run folder is read and summarized);
* **warm**: a rerun (what a click or a refresh tick costs: the cached summaries are reused; only file mtimes are
  read);
* **one run changed**: a rerun after one run appended an epoch (only that run is read again).

With ``--browser``, also the real thing: ``yolov7-studio dashboard`` serving the same workspace, Debian's Chromium
(Playwright) opening each page and waiting until its table and figures are drawn: the first visit after start-up
and then reloads (a new browser session, the server's caches warm).

Every figure names the CPU it came from (:func:`core.device.cpu_description`) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.workspace import Workspace  # noqa: E402
from core.device import cpu_description  # noqa: E402
from core.train import RunDir  # noqa: E402

APP = REPO / "app" / "dashboard" / "app.py"
CLASSES = ("circle", "square", "triangle", "cross")
MODELS = ("yolov7-tiny", "yolov7", "yolov7x", "yolov7-w6")


def row(epoch: int, epochs: int, quality: float) -> dict[str, Any]:
    progress = epoch / epochs
    r: dict[str, Any] = {
        "epoch": epoch, "box": 0.08 * (1 - 0.6 * progress), "obj": 0.02 * (1 - 0.3 * progress),
        "cls": 0.03 * (1 - progress / 2),
        "aux_box": 0.03 * (1 - 0.6 * progress), "aux_obj": 0.006, "aux_cls": 0.01, "total": 0.2 * (1 - progress / 2),
        "lr0": 0.01 * (1 - progress), "lr1": 0.01 * (1 - progress), "lr2": 0.01 * (1 - progress), "precision": 0.6,
        "recall": 0.5, "mAP50": quality * progress, "mAP50-95": quality * progress / 2,
    }  # fmt: skip
    for k, c in enumerate(CLASSES):
        r[f"AP50/{c}"] = quality * progress * (0.7 + 0.1 * k)
        r[f"AP50-95/{c}"] = quality * progress * (0.35 + 0.05 * k)
    return r


def make_workspace(root: Path, runs: int, epochs: int) -> Workspace:
    ws = Workspace(root)
    ws.ensure_demo()
    for i in range(runs):
        run = RunDir(ws.runs_dir / f"run{i:03d}").create()
        model = MODELS[i % len(MODELS)]
        config = {
            "config": {"model": model, "width": 1.0, "aux": True, "epochs": epochs, "data": str(ws.demo_dataset_dir)},
            "hyp": {"lr0": 0.01},
            "model": {"name": model, "aux": True, "num_classes": len(CLASSES), "class_names": list(CLASSES)},
        }
        run.config.write_text(json.dumps(config))
        quality = 0.5 + 0.4 * ((i * 37) % 50) / 50
        for e in range(1, epochs + 1):
            run.append_result(row(e, epochs, quality))
        run.write_status("finished", epoch=epochs, epochs=epochs, message="done")
        (run.root / "metrics.json").write_text(json.dumps({"speed_ms_per_image": {"inference": 5.0 + 3 * (i % 4)}}))
    return ws


def timed(at: Any, page: str | None) -> float:
    t = time.perf_counter()
    if page:
        at.switch_page(page)
    at.run()
    took = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(f"{page or 'runs'}: {[e.value for e in at.exception]}")
    return took


def browser_times(root: Path, repeats: int, runs: int) -> dict[str, Any]:
    """Seconds from navigation to the page drawn (Runs: the table and the run's 4 figures; Compare: 2 figures)."""
    import signal
    import socket
    import subprocess

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "app.cli", "dashboard", "--workspace", str(root), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    out: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the command prints the URL once the server answers
            if "yolov7-studio dashboard: http" in line:
                break
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            for path, charts in (("", 4), ("compare", 2)):
                times = []
                for _ in range(repeats + 1):
                    ctx = browser.new_context(viewport={"width": 1440, "height": 1800})
                    page = ctx.new_page()
                    t = time.perf_counter()
                    page.goto(f"http://127.0.0.1:{port}/{path}", wait_until="commit", timeout=300_000)
                    page.locator(".js-plotly-plot").nth(charts - 1).wait_for(state="attached", timeout=300_000)
                    if not path:
                        page.get_by_text(f"run{runs - 1:03d}").first.wait_for(state="attached", timeout=300_000)
                    times.append(time.perf_counter() - t)
                    ctx.close()
                out[f"browser_{path or 'runs'}_s"] = times
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--browser", action="store_true", help="also time the pages in Chromium through HTTP")
    args = ap.parse_args()

    from streamlit.testing.v1 import AppTest

    out: dict[str, Any] = {"cpu": cpu_description(), "load_avg": os.getloadavg(), **vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench_dashboard_") as tmp:
        t = time.perf_counter()
        ws = make_workspace(Path(tmp) / "ws", args.runs, args.epochs)
        out["generate_s"] = time.perf_counter() - t
        os.environ["YOLOV7_DASHBOARD_WORKSPACE"] = str(ws.root)
        at = AppTest.from_file(str(APP), default_timeout=600)
        out["runs_cold_s"] = timed(at, None)
        assert len(at.dataframe[0].value) == args.runs
        out["runs_warm_s"] = [timed(at, None) for _ in range(args.repeats)]
        victim = RunDir(ws.runs_dir / "run000")
        changed = []
        for k in range(args.repeats):
            victim.append_result(row(args.epochs + k + 1, args.epochs, 0.5))
            changed.append(timed(at, None))
        out["runs_one_changed_s"] = changed
        out["compare_cold_s"] = timed(at, "views/compare.py")
        out["compare_warm_s"] = [timed(at, None) for _ in range(args.repeats)]
        at.multiselect(key="compare_runs").set_value([f"run{i:03d}" for i in range(10)])
        out["compare_10_runs_s"] = [timed(at, None) for _ in range(args.repeats)]
        from app.dashboard.context import _context

        _context(str(ws.root), ()).jobs.close()  # the page's job runner stops polling before the folder goes
        if args.browser:
            out.update(browser_times(ws.root, args.repeats, args.runs))
    med = statistics.median
    print(f"CPU: {out['cpu']}  (load average {', '.join(f'{x:.1f}' for x in out['load_avg'])})")
    print(f"workspace: {args.runs} runs x {args.epochs} epochs (generated in {out['generate_s']:.1f} s)")
    print(f"Runs page     cold {out['runs_cold_s']:.2f} s (first run: imports, demo check, every run read)")
    print(f"Runs page     warm {med(out['runs_warm_s']):.3f} s median of {args.repeats}")
    print(f"Runs page     one run changed {med(out['runs_one_changed_s']):.3f} s median")
    print(f"Compare page  cold {out['compare_cold_s']:.2f} s (4 runs picked)")
    print(f"Compare page  warm {med(out['compare_warm_s']):.3f} s median")
    print(f"Compare page  10 runs picked {med(out['compare_10_runs_s']):.3f} s median")
    for page in ("runs", "compare"):
        times = out.get(f"browser_{page}_s")
        if times:
            print(
                f"browser {page:8s} first visit {times[0]:.2f} s, reload median {med(times[1:]):.2f} s (Chromium, HTTP)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
