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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the figures here")
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
    med = statistics.median
    print(f"CPU: {out['cpu']}  (load average {', '.join(f'{x:.1f}' for x in out['load_avg'])})")
    print(f"workspace: {args.runs} runs x {args.epochs} epochs (generated in {out['generate_s']:.1f} s)")
    print(f"Runs page     cold {out['runs_cold_s']:.2f} s (first run: imports, demo check, every run read)")
    print(f"Runs page     warm {med(out['runs_warm_s']):.3f} s median of {args.repeats}")
    print(f"Runs page     one run changed {med(out['runs_one_changed_s']):.3f} s median")
    print(f"Compare page  cold {out['compare_cold_s']:.2f} s (4 runs picked)")
    print(f"Compare page  warm {med(out['compare_warm_s']):.3f} s median")
    print(f"Compare page  10 runs picked {med(out['compare_10_runs_s']):.3f} s median")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
