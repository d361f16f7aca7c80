"""Does the FiftyOne bridge find real label errors? Known errors are injected into a copy of BCCD val+test.

1. BCCD's val+test images (../shared/datasets/bccd/BCCD) are copied with errors injected (seeded): ``--rate`` of the
   boxes removed, ``--rate`` flipped to another class, ``--rate`` shifted by 30-50% of their size (one error per box
   at most). The copy is written as YOLO with one split ``val``.
2. A model trained on the clean train split: ``--weights CKPT``, or trained here (``yolov7-studio train``, ``--epochs``
   at ``--img``, into ``--out/train``).
3. :func:`app.fiftyone_bridge.to_fiftyone` builds the FiftyOne dataset (timed: images/s).
4. For each error type, the share found in the top 50 and top 100 of each ranking:
   * ``mistakenness``: ground-truth boxes by max(mistakenness, mistakenness_loc) (FiftyOne Brain);
   * ``possible missing``: predictions the label-error evaluation left unmatched, by confidence; a removed box is
     found when one of them covers it (IoU >= 0.5);
   * ``no_positive``: boxes YOLOv7's assigner gives no fine positive first (then fewest positives);
   * ``unmatched``: boxes the variant's evaluation left unmatched (false negatives) first, by mistakenness;
   * ``random``: the expected share in a random order (mean of 200 seeded permutations).

    python benchmarks/bench_fiftyone_errors.py --weights runs/bccd/weights/best.pt --out runs/bench_fo_errors
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BCCD = REPO.parent / "shared" / "datasets" / "bccd" / "BCCD"
KINDS = ("removed", "flipped", "shifted")


def inject(dataset, rate: float, seed: int):
    """(noisy dataset with one split 'val', list of injected errors {file, kind, box (pixels), cls})."""
    from core.data import ImageRecord

    rng = np.random.default_rng(seed)
    recs = [r for r in dataset.images if r.split in ("val", "test")]
    slots = [(i, g) for i, r in enumerate(recs) for g in range(r.num_boxes)]
    order = rng.permutation(len(slots))
    n = int(round(rate * len(slots)))
    plan = {slots[k]: kind for kind, chunk in zip(KINDS, (order[:n], order[n : 2 * n], order[2 * n : 3 * n]))
            for k in chunk}  # fmt: skip
    errors, images = [], []
    for i, rec in enumerate(recs):
        boxes, classes = [], []
        for g, (box, cls) in enumerate(zip(rec.boxes.copy(), rec.classes.tolist())):
            kind = plan.get((i, g))
            if kind == "removed":
                errors.append({"file": str(rec.path), "kind": kind, "box": box.tolist(), "cls": cls})
                continue
            if kind == "flipped":
                cls = int((cls + rng.integers(1, dataset.num_classes)) % dataset.num_classes)
            if kind == "shifted":
                w, h = box[2] - box[0], box[3] - box[1]
                frac, angle = rng.uniform(0.3, 0.5), rng.uniform(0, 2 * np.pi)
                dx, dy = frac * w * np.cos(angle), frac * h * np.sin(angle)
                box = np.clip(box + [dx, dy, dx, dy], 0, [rec.width, rec.height, rec.width, rec.height])
            if kind is not None:
                errors.append({"file": str(rec.path), "kind": kind, "box": box.tolist(), "cls": cls})
            boxes.append(box)
            classes.append(cls)
        images.append(
            ImageRecord(rec.path, rec.width, rec.height, np.asarray(boxes).reshape(-1, 4), classes, "val", rec.key)
        )
    return dataset.with_images(tuple(images)), errors


def iou(a, b) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.clip(rb - lt, 0, None).prod())
    union = float((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod()) - inter
    return inter / union if union > 0 else 0.0


def train(out: Path, epochs: int, img: int, batch: int) -> Path:
    cmd = [sys.executable, "-m", "core", "train", "--data", str(BCCD), "--model", "yolov7-tiny", "--img", str(img),
           "--epochs", str(epochs), "--batch", str(batch), "--out", str(out), "--workers", "1",
           "--train-split", "train", "--val-split", "val", "--no-progress"]  # fmt: skip
    print("training:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    best = out / "weights" / "best.pt"
    return best if best.is_file() else out / "weights" / "last.pt"


def share_found(ranked_hits: list[set[int]], n_errors: int, k: int) -> float:
    found = set().union(*ranked_hits[:k]) if ranked_hits[:k] else set()
    return len(found) / max(1, n_errors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bccd", type=Path, default=BCCD)
    ap.add_argument("--weights", type=Path, default=None, help="a model trained on BCCD train (else trained here)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--img", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-images", type=int, default=None, help="only the first N noisy images (a quick check)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_fiftyone_errors")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from core.data import check_dataset, load_dataset, write_dataset
    from core.device import cpu_description

    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="fo_bench_db_"))
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    clean = check_dataset(load_dataset(args.bccd)).dataset
    noisy, errors = inject(clean, args.rate, args.seed)
    noisy_dir = args.out / f"noisy_seed{args.seed}"
    if not noisy_dir.exists():
        write_dataset(noisy, "yolo", noisy_dir)
    noisy_yaml = noisy_dir / "data.yaml"
    weights = args.weights or train(args.out / "train", args.epochs, args.img, args.batch)

    from app.fiftyone_bridge import to_fiftyone

    t0 = time.perf_counter()
    res = to_fiftyone(noisy_yaml, [weights], name=f"bench-errors-{args.seed}", max_images=args.max_images, conf=0.05,
                      log=lambda m: None)  # fmt: skip
    seconds = time.perf_counter() - t0
    import fiftyone as fo

    ds = fo.load_dataset(res.name)
    field, eval_key = res.variants[0], "eval_" + res.variants[0][len("pred_") :]
    # the injected errors refer to the original image paths; the YOLO copy keeps the file names
    present = {Path(fp).name for fp in ds.values("filepath")}
    errors = [e for e in errors if Path(e["file"]).name in present]
    by_name: dict[str, list[int]] = {}
    for k, e in enumerate(errors):
        by_name.setdefault(Path(e["file"]).name, []).append(k)
    gt_rows, pred_rows = [], []  # (scores..., set of error ids hit)
    for s in ds.iter_samples():
        w, h = s.metadata.width, s.metadata.height
        mine = [(k, errors[k]) for k in by_name.get(Path(s.filepath).name, [])]
        for d in s.ground_truth.detections:
            x, y, bw, bh = d.bounding_box
            box = np.array([x * w, y * h, (x + bw) * w, (y + bh) * h])
            hit = {k for k, e in mine if e["kind"] != "removed" and np.abs(box - e["box"]).max() < 1.0}
            m = max(d.get_field("mistakenness") or 0, d.get_field("mistakenness_loc") or 0) if d.has_field(
                "mistakenness") else 0.0  # fmt: skip
            fine = d.get_field("fine_total") if d.has_field("fine_total") else 0
            fn = float(d.get_field(eval_key) == "fn") if d.has_field(eval_key) else 0.0
            gt_rows.append({"m": m, "nopos": float(bool(getattr(d, "no_positive", False))), "fine": fine or 0,
                            "fn": fn, "hit": hit})  # fmt: skip
        for d in s[field].detections if s[field] else []:
            if getattr(d, "errors_eval", None) != "fp":  # matches no label (class-agnostic, IoU 0.5)
                continue
            x, y, bw, bh = d.bounding_box
            box = np.array([x * w, y * h, (x + bw) * w, (y + bh) * h])
            hit = {k for k, e in mine if e["kind"] == "removed" and iou(box, np.asarray(e["box"])) >= 0.5}
            pred_rows.append({"conf": d.confidence, "hit": hit})

    rankings = {
        "mistakenness": sorted(gt_rows, key=lambda r: -r["m"]),
        "no_positive": sorted(gt_rows, key=lambda r: (-r["nopos"], r["fine"])),
        "unmatched": sorted(gt_rows, key=lambda r: (-r["fn"], -r["m"])),
        "possible missing": sorted(pred_rows, key=lambda r: -r["conf"]),
    }
    n_by_kind = {kind: sum(e["kind"] == kind for e in errors) for kind in KINDS}
    table = {}
    rng = np.random.default_rng(args.seed)
    for kind in KINDS:
        ids = {k for k, e in enumerate(errors) if e["kind"] == kind}
        row = {}
        for name, ranked in rankings.items():
            for k in (50, 100):
                row[f"{name}@{k}"] = share_found([r["hit"] & ids for r in ranked], len(ids), k)
        pool = rankings["possible missing"] if kind == "removed" else gt_rows
        for k in (50, 100):
            shares = [share_found([pool[j]["hit"] & ids for j in rng.permutation(len(pool))], len(ids), k)
                      for _ in range(200)]  # fmt: skip
            row[f"random@{k}"] = float(np.mean(shares))
        table[kind] = row
    report = {
        "cpu": cpu_description(), "threads": torch.get_num_threads(), "weights": str(weights),
        "images": res.samples, "gt_boxes": res.boxes, "errors": n_by_kind, "build_seconds": round(seconds, 1),
        "images_per_s": round(res.samples / seconds, 2), "mAP": res.evaluation[field]["mAP"], "found": table,
        "unmatched_predictions": len(pred_rows),
    }  # fmt: skip
    (args.out / f"report_seed{args.seed}.json").write_text(json.dumps(report, indent=2))
    print(f"CPU: {report['cpu']} ({report['threads']} threads); weights {weights}; mAP@[.5:.95] {report['mAP']:.3f}")
    print(f"build: {res.samples} images in {seconds:.1f} s ({report['images_per_s']} images/s); errors {n_by_kind}")
    cols = [f"{n}@{k}" for n in (*rankings, "random") for k in (50, 100)]
    print(f"{'error':<9}" + "".join(f"{c:>22}" for c in cols))
    for kind, row in table.items():
        print(f"{kind:<9}" + "".join(f"{row[c]:>22.2f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
