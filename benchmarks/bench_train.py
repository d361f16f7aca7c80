"""Training benchmarks.

``iteration``: time per training iteration of yolov7-tiny (img 320, batch 8) split into data, forward, loss
and backward (+ optimizer step), in float32 and with bf16 autocast on the CPU; medians over the timed steps.

``bccd``: yolov7-tiny from scratch on BCCD (train split, img 320, batch 16, 50 epochs by default) with the
recipe chosen in the README; prints test-split mAP50 / mAP50-95 (pycocotools), wall time and peak memory.

    .venv/bin/python benchmarks/bench_train.py iteration [--steps 20] [--data PATH]
    .venv/bin/python benchmarks/bench_train.py bccd [--epochs 50] [--out runs/bench_bccd] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BCCD = REPO.parent / "shared" / "datasets" / "bccd" / "BCCD"


def _now() -> float:
    return time.perf_counter()


def bench_iteration(args: argparse.Namespace) -> None:
    from core.data.check import check_dataset
    from core.data.hyp import get_hyp
    from core.data.load import load_dataset
    from core.data.loader import create_train_loader
    from core.loss import LossHyp, YoloLoss
    from core.models import build_model
    from core.train.optim import build_optimizer

    torch.set_num_threads(args.threads)
    data = args.data or str(BCCD)
    ds = check_dataset(load_dataset(data), decode=False).dataset
    hyp = get_hyp("tiny")
    loader = create_train_loader(ds, args.img, args.batch, hyp, workers=args.workers, seed=0)
    from core.device import cpu_description, cpu_has_native_bf16

    print(cpu_description())
    print(
        f"data {data}: {len(ds.split('train'))} train images; yolov7-tiny, img {args.img}, batch {args.batch}, "
        f"{args.workers} workers, {torch.get_num_threads()} threads"
    )
    modes = args.modes.split(",") if args.modes else ["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"]
    for mode in modes:
        torch.manual_seed(0)
        model = build_model("yolov7-tiny", ds.num_classes, class_names=list(ds.class_names)).train()
        model = model.to(memory_format=torch.channels_last) if args.channels_last else model
        lh = LossHyp.from_dict(hyp.to_dict()).scaled(3, ds.num_classes, args.img)
        loss_fn = YoloLoss.from_model(model, lh, aux=False)
        opt = build_optimizer(model, "sgd", 0.01, 0.937, 5e-4)
        times: dict[str, list[float]] = {"data": [], "forward": [], "loss": [], "backward+step": [], "total": []}
        it = iter(loader)
        for step in range(args.warmup + args.steps):
            t0 = _now()
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            imgs = batch.images.float() / 255
            if args.channels_last:
                imgs = imgs.contiguous(memory_format=torch.channels_last)
            t1 = _now()
            ctx = (
                torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else torch.autocast("cpu", enabled=False)
            )
            with ctx:
                pred = model(imgs)
            t2 = _now()
            loss, _ = loss_fn([p.float() for p in pred], batch.targets, imgs.shape[-1])
            t3 = _now()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t4 = _now()
            if step >= args.warmup:
                for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                    times[k].append(v)
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        print(
            f"{mode:5s} per iteration (median of {args.steps}, ms): "
            + "  ".join(f"{k} {v:.0f}" for k, v in med.items())
            + f"  -> {args.batch / (med['total'] / 1000):.1f} images/s"
        )


def bench_bccd(args: argparse.Namespace) -> None:
    from core.cli.train import _overrides
    from core.train import TrainConfig, Trainer
    from core.train.setup import evaluate_model

    torch.set_num_threads(args.threads)
    if not BCCD.exists() and not args.data:
        raise SystemExit(f"needs {BCCD}")
    out = Path(args.out)
    cfg = TrainConfig(
        data=args.data or str(BCCD), model="yolov7-tiny", out=str(out), epochs=args.epochs, img=args.img,
        batch=args.batch, workers=args.workers, hyp=args.hyp, hyp_overrides=_overrides(args.set), nbs=args.nbs,
        warmup_min_iters=args.warmup_min_iters, close_mosaic=args.close_mosaic, bf16=args.bf16,
        eval_interval=args.eval_interval, progress=False, plots="all", seed=args.seed, optimizer=args.optimizer,
        eval_iou=args.eval_iou, lr_schedule=args.lr_schedule,
    )  # fmt: skip
    t0 = time.time()
    trainer = Trainer(cfg)
    status = trainer.fit()
    wall = time.time() - t0
    from core.checkpoint.io import load_model

    best = load_model(out / "weights" / "best.pt").model
    test = evaluate_model(
        best,
        trainer.dataset,
        cfg.replace(val_split="test"),
        torch.device("cpu"),
        save_json=out / "predictions_test.json",
    )
    from core.device import cpu_description

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "state": status["state"],
        "epochs": cfg.epochs,
        "wall_min": wall / 60,
        "test_mAP50": test.coco.map50,
        "test_mAP50-95": test.coco.map,
        "test_per_class_ap": test.coco.per_class_ap,
        "test_per_class_ap50": test.coco.per_class_ap50,
        "peak_rss_mb": peak_mb,
        "peak_rss_worker_mb": children_mb,
        "config": cfg.to_dict(),
        "machine": cpu_description(),
    }
    (out / "bench_result.json").write_text(json.dumps(result, indent=1, default=str))
    print(test.summary())
    print(cpu_description())
    print(
        f"BCCD yolov7-tiny {cfg.epochs} epochs img {cfg.img} batch {cfg.batch}: test mAP50 {test.coco.map50:.3f} "
        f"mAP50-95 {test.coco.map:.3f}; wall {wall / 60:.1f} min (incl. per-epoch eval); "
        f"peak RSS {peak_mb:.0f} MB (+ workers {children_mb:.0f} MB)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    it = sub.add_parser("iteration")
    it.add_argument("--data", default=None)
    it.add_argument("--img", type=int, default=320)
    it.add_argument("--batch", type=int, default=8)
    it.add_argument("--steps", type=int, default=20)
    it.add_argument("--warmup", type=int, default=3)
    it.add_argument("--workers", type=int, default=2)
    it.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    it.add_argument("--channels-last", action="store_true")
    it.add_argument("--modes", default=None, help="fp32,bf16 (default: bf16 only where the CPU has native bf16)")
    it.set_defaults(func=bench_iteration)
    b = sub.add_parser("bccd")
    b.add_argument("--data", default=None)
    b.add_argument("--out", default="runs/bench_bccd")
    b.add_argument("--epochs", type=int, default=50)
    b.add_argument("--img", type=int, default=320)
    b.add_argument("--batch", type=int, default=16)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--hyp", default="tiny")
    b.add_argument("--set", action="append", default=[])
    b.add_argument("--nbs", type=int, default=16)
    b.add_argument("--warmup-min-iters", type=int, default=100)
    b.add_argument("--close-mosaic", type=int, default=0)
    b.add_argument("--eval-interval", type=int, default=5)
    b.add_argument("--bf16", action="store_true")
    b.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
    b.add_argument("--lr-schedule", default="cosine", choices=("cosine", "linear"))
    b.add_argument("--eval-iou", type=float, default=0.65)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    b.set_defaults(func=bench_bccd)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
