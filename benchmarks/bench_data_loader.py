"""Benchmark: training loader throughput (images/s) on BCCD with mosaic and mixup on.

Batches of 16 at 320 and 640 px through ``create_train_loader`` (official p5 augmentation: mosaic 1.0 with 20 %
9-mosaics, random perspective, HSV, flips) with MixUp at the official 0.15 and at 1.0 (worst case: every sample
builds two mosaics), 2 worker processes, from JPEG files and with the RAM cache. The first batch of each run
(worker start-up) is not timed. The machine may be shared: rerun when the numbers matter.

    .venv/bin/python benchmarks/bench_data_loader.py [--bccd PATH] [--epochs 2] [--workers 2] [--sizes 320 640]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.data import HYP_PRESETS, check_dataset, create_train_loader, load_dataset  # noqa: E402

DEFAULT_BCCD = Path(os.environ.get("YOLOV7_STUDIO_SHARED", REPO.parent / "shared")) / "datasets" / "bccd" / "BCCD"


def run(dataset, img_size: int, mixup: float, workers: int, epochs: int, cache: bool) -> tuple[float, float]:  # noqa: ANN001
    """(images per second after the first batch, share of labels lost by augmentation)."""
    hyp = HYP_PRESETS["p5"].replace(mixup=mixup)
    loader = create_train_loader(
        dataset, img_size=img_size, batch_size=16, hyp=hyp, workers=workers, seed=0, cache_images=cache
    )
    images, start = 0, None
    for _ in range(epochs):
        for batch in loader:
            if start is None:  # worker start-up and first batch excluded
                start = time.perf_counter()
                continue
            images += len(batch.images)
    elapsed = time.perf_counter() - start
    return images / elapsed, loader.label_counts(0).lost_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=DEFAULT_BCCD, help="BCCD folder (Pascal VOC layout)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs over the 205 training images per setting")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    args = parser.parse_args()
    if not args.bccd.exists():
        sys.exit(f"BCCD not found at {args.bccd} (pass --bccd)")
    torch.set_num_threads(1)
    dataset = check_dataset(load_dataset(args.bccd), decode=False).dataset
    n = len(dataset.split("train"))
    print(f"BCCD train split: {n} images 640x480; batch 16, {args.workers} workers, {args.epochs} epochs per row")
    print(f"CPU cores visible: {os.cpu_count()} (shared machine: other jobs may be running)")
    print(f"{'size':>5} {'mixup':>6} {'source':>9} {'images/s':>9} {'labels lost':>12}")
    for size in args.sizes:
        for mixup in (0.15, 1.0):
            for cache in (False, True):
                ips, lost = run(dataset, size, mixup, args.workers, args.epochs, cache)
                print(f"{size:>5} {mixup:>6.2f} {'RAM' if cache else 'JPEG':>9} {ips:>9.1f} {lost:>11.1%}", flush=True)


if __name__ == "__main__":
    main()
