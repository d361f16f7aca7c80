"""Benchmark: assignment + loss + backward per batch, vectorized ``core.loss.YoloLoss`` vs the per-image reference.

Batch 16 at 640, 80 classes, random predictions: P5 (3 levels, yolov7 anchors) and P6 with the auxiliary head
(4 lead + 4 aux levels, yolov7-w6 anchors), with 10 and 100 boxes per image. Prints the median of several runs.

    .venv/bin/python benchmarks/bench_assign_loss.py [--runs 5] [--ref-runs 3] [--threads 2] [--no-ref]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.loss import LossHyp, YoloLoss  # noqa: E402

P5_ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
P5_STRIDES = [8, 16, 32]
P6_ANCHORS = [
    [19, 27, 44, 40, 38, 94],
    [96, 68, 86, 152, 180, 137],
    [140, 301, 303, 264, 238, 542],
    [436, 615, 739, 380, 925, 792],
]
P6_STRIDES = [8, 16, 32, 64]


def grid_anchors(pixels: list[list[int]], strides: list[int]) -> torch.Tensor:
    """``[nl, na, 2]`` anchors in grid units from official pixel anchors."""
    a = torch.tensor(pixels, dtype=torch.float32).view(len(pixels), -1, 2)
    return a / torch.tensor(strides, dtype=torch.float32).view(-1, 1, 1)


def random_targets(batch: int, per_image: int, nc: int, gen: torch.Generator) -> torch.Tensor:
    """``[batch * per_image, 6]`` random boxes: log-uniform size and aspect ratio, inside the image."""
    n = batch * per_image
    s = torch.exp(torch.empty(n).uniform_(-4.0, -0.5, generator=gen))
    ar = torch.exp(torch.empty(n).uniform_(-1.1, 1.1, generator=gen))
    w, h = (s * ar.sqrt()).clamp(max=0.98), (s / ar.sqrt()).clamp(max=0.98)
    x = w / 2 + torch.rand(n, generator=gen) * (1 - w)
    y = h / 2 + torch.rand(n, generator=gen) * (1 - h)
    img = torch.arange(batch).repeat_interleave(per_image).float()
    cls = torch.randint(0, nc, (n,), generator=gen).float()
    return torch.stack((img, cls, x, y, w, h), 1)


def time_one(
    loss_fn: YoloLoss, preds: list[torch.Tensor], targets: torch.Tensor, img: int, runs: int
) -> tuple[float, float]:
    """Median wall and process-CPU seconds of loss (assignment included) + backward."""
    wall, cpu = [], []
    for _ in range(runs):
        ps = [p.detach().requires_grad_() for p in preds]
        t0, c0 = time.perf_counter(), time.process_time()
        loss, _ = loss_fn(ps, targets, img)
        loss.backward()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ref-runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--img", type=int, default=640)
    ap.add_argument("--no-ref", action="store_true", help="skip the (slow) per-image reference")
    ap.add_argument("--only", choices=("P5", "P6+aux"), default=None, help="run one model only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tests.assign_reference import ReferenceLoss

    nc = 80
    rows = []
    for name, pixels, strides, aux in (("P5", P5_ANCHORS, P5_STRIDES, False), ("P6+aux", P6_ANCHORS, P6_STRIDES, True)):
        if args.only and name != args.only:
            continue
        nl = len(strides)
        anchors = grid_anchors(pixels, strides)
        hyp = LossHyp().scaled(nl, nc, args.img)
        gen = torch.Generator().manual_seed(0)
        shapes = [(args.batch, 3, args.img // s, args.img // s, 5 + nc) for s in strides]
        preds = [torch.randn(*s, generator=gen) for s in shapes * (2 if aux else 1)]
        for per_image in (10, 100):
            targets = random_targets(args.batch, per_image, nc, gen)
            fast = YoloLoss(nc, anchors, strides, hyp, aux=aux)
            t_fast = time_one(fast, preds, targets, args.img, args.runs)
            t_ref = (float("nan"), float("nan"))
            if not args.no_ref:
                ref = ReferenceLoss(nc, anchors, strides, hyp, aux=aux)
                t_ref = time_one(ref, preds, targets, args.img, args.ref_runs)
            rows.append((name, per_image, t_fast, t_ref))
            line = f"{name:7s} {per_image:4d} boxes/img  vectorized {t_fast[0]:7.3f} s   per-image {t_ref[0]:7.3f} s"
            line += f"   (load average {os.getloadavg()[0]:.1f}: other processes skew timings on a shared machine)"
            print(line, flush=True)
    print()
    print(f"batch {args.batch} at {args.img}, {nc} classes, {args.threads} threads; loss + backward, median")
    print("| model | boxes/image | vectorized wall (cpu) s | per-image reference wall (cpu) s | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for name, n, tf, tr in rows:
        print(f"| {name} | {n} | {tf[0]:.3f} ({tf[1]:.3f}) | {tr[0]:.3f} ({tr[1]:.3f}) | {tr[0] / tf[0]:.1f}x |")


if __name__ == "__main__":
    main()
