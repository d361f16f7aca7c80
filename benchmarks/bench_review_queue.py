"""How well the Review tab's queue finds label errors: injected errors on the demo data, share found in the top K.

Usage::

    python benchmarks/bench_review_queue.py                      # 100 fresh demo images, the demo checkpoint
    python benchmarks/bench_review_queue.py --images 200 --checkpoint runs/x/weights/best.pt --assignment --json o.json

Fresh demo images (seed 1: the demo checkpoint was trained on seed 0) get 5% of their boxes removed, 5% of their
classes flipped and 5% shifted by 30-50% of their size (:func:`app.services.review.inject_errors`). The review
queue (:func:`app.services.review.review_queue`) ranks the labels; for K = 50 and 100 the share of the injected
errors of each kind among the first K cases is printed beside what a random order of the labels would find
(K / number of labels). With an untrained checkpoint the model-based signals are empty: the figures then say so.
Every figure names the CPU (:func:`core.device.cpu_description`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.device import cpu_description  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--img-size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--checkpoint", default=None, help="a .pt file (default: the demo checkpoint)")
    ap.add_argument("--conf", type=float, default=0.5)
    ap.add_argument("--assignment", action="store_true", help="also run the lead-guided assignment per image")
    ap.add_argument("--top", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from app.modelcache import ModelCache
    from app.services import review
    from app.workspace import DEMO_CHECKPOINT, Workspace
    from core.data import load_dataset, make_demo_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench_review."))
    data_yaml = make_demo_dataset(tmp / "data", n_images=args.images, img_size=args.img_size, seed=args.seed)
    ds = load_dataset(data_yaml)
    clean = [(r.boxes.copy(), r.classes.copy()) for r in ds.images]
    noisy, errors = review.inject_errors(clean, ds.num_classes, rate=args.rate, seed=args.seed)
    for rec, (boxes, classes) in zip(ds.images, noisy):  # write the corrupted labels back (YOLO rows)
        w, h = rec.width, rec.height
        rows = [
            f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
            for (x1, y1, x2, y2), c in zip(np.clip(boxes, 0, [w, h, w, h]).tolist(), classes.tolist())
        ]
        Path(rec.label_file).write_text("".join(rows))
    ws = Workspace(tmp / "ws", allowed_roots=[tmp])
    dataset = ws.link_folder(data_yaml, "bench").id
    checkpoint = ws.add_checkpoint(args.checkpoint).id if args.checkpoint else "demo"
    ckpt_path = Path(args.checkpoint) if args.checkpoint else DEMO_CHECKPOINT

    t0 = time.perf_counter()
    out = review.review_queue(
        ws, ModelCache(), dataset, checkpoint, split="all", conf=args.conf, max_images=args.images,
        assignment=args.assignment,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    index = {r.key: i for i, r in enumerate(ds.images)}
    ranked = [{**c, "image": index[c["key"]]} for c in out["cases"]]
    n_labels = sum(len(b) for b, _ in noisy) + sum(e["kind"] == "removed" for e in errors)
    per_kind = {k: sum(e["kind"] == k for e in errors) for k in ("removed", "flipped", "shifted")}
    result = {
        "cpu": cpu_description(), "load_avg": os.getloadavg(), "checkpoint": str(ckpt_path), "images": args.images,
        "labels": n_labels, "errors": per_kind, "assignment": args.assignment, "seconds": round(seconds, 1),
        "summary": out["summary"], "top": {},
    }  # fmt: skip
    print(f"# review queue on {args.images} demo images (seed {args.seed}, {args.img_size} px), {n_labels} labels")
    print(f"# injected: {per_kind}; checkpoint {ckpt_path.name}; assignment {'on' if args.assignment else 'off'}")
    print(f"# model recall on these labels (IoU 0.5, conf {args.conf}): {out['summary']['model_recall']:.3f}")
    print(f"# cases by kind: {out['summary']['by_kind']}; {seconds:.1f} s")
    print(f"{'K':>5} {'removed':>8} {'flipped':>8} {'shifted':>8} {'all':>6} {'random':>7}")
    for k in args.top:
        rec = review.recall_at_k(ranked, errors, k)
        rand = min(1.0, k / n_labels)
        result["top"][k] = {**rec, "random": rand}
        row = " ".join(f"{rec.get(kind, 0.0):8.3f}" for kind in ("removed", "flipped", "shifted"))
        print(f"{k:>5} {row} {rec['all']:6.3f} {rand:7.3f}")
    print(f"# CPU: {result['cpu']}; load average {result['load_avg'][0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
