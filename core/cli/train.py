"""``yolov7-studio train`` and ``yolov7-studio val``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a YOLOv7 model (official recipe, EMA, resume, DDP)",
        description="Train a YOLOv7 variant on any dataset `yolov7-studio data` reads. The run "
        "directory (--out) gets config.json, status.json, results.csv, weights/last.pt and best.pt, "
        "plots/ and train.log. Create <out>/STOP (or send SIGTERM) to stop cleanly; --resume continues.",
    )
    p.add_argument("--data", required=False, help="dataset folder, data.yaml, COCO json, .zip or dataset definition")
    p.add_argument("--model", default="yolov7-tiny", help="variant (see `yolov7-studio models`)")
    p.add_argument("--weights", default=None, help="start from this checkpoint (ours or an official .pt)")
    p.add_argument("--width", type=float, default=1.0, help="channel-width multiple (official width_multiple)")
    p.add_argument(
        "--aux",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="auxiliary head (default: as the official config; --aux adds it to P5 models)",
    )
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--img", type=int, default=640, help="training image size (square)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    p.add_argument("--hyp", default="auto", help="p5 | p6 | tiny | custom | path to a hyp YAML (default: by model)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one hyperparameter, e.g. --set lr0=0.02 (repeatable)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="resume the run in --out (or the given run directory / last.pt) from its last checkpoint",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    p.add_argument("--lr-schedule", choices=("cosine", "linear"), default="cosine")
    p.add_argument("--nbs", type=int, default=64, help="nominal batch size (gradient accumulation target)")
    p.add_argument("--warmup-min-iters", type=int, default=100, help="minimum warmup iterations (official: 1000)")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--bf16", action="store_true", help="CPU bf16 autocast (fast only with AVX-512 BF16 or AMX)")
    p.add_argument("--no-channels-last", action="store_true", help="keep the NCHW memory format")
    p.add_argument("--multi-scale", action="store_true")
    p.add_argument("--image-weights", action="store_true")
    p.add_argument(
        "--freeze",
        type=int,
        nargs="*",
        default=[],
        help="freeze layers: one number N = the first N layers (official), several = those indices",
    )
    p.add_argument("--freeze-backbone", action="store_true", help="freeze the backbone layers")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--cache", action="store_true", help="cache decoded images in RAM")
    p.add_argument("--noautoanchor", action="store_true")
    p.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0 = off)")
    p.add_argument("--close-mosaic", type=int, default=0, help="no mosaic/mixup in the last N epochs")
    p.add_argument("--eval-interval", type=int, default=1)
    p.add_argument("--save-period", type=int, default=0)
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument(
        "--objectness-every",
        type=int,
        default=0,
        help="save lead/aux objectness maps of a fixed val image every N epochs",
    )
    p.add_argument("--max-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)

    v = sub.add_parser("val", help="evaluate a checkpoint with COCO metrics (pycocotools)")
    v.add_argument("--data", required=True)
    v.add_argument("--weights", required=True)
    v.add_argument("--split", default="val")
    v.add_argument("--img", type=int, default=640)
    v.add_argument("--batch", type=int, default=16)
    v.add_argument("--conf", type=float, default=0.001)
    v.add_argument("--iou", type=float, default=0.65)
    v.add_argument("--device", default="auto")
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--save-json", default=None, help="write the COCO results JSON here")
    v.add_argument("--json", action="store_true", help="print metrics as JSON")
    v.set_defaults(func=run_val)


def _overrides(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = float(value)
    return out


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.train import TrainConfig, Trainer
    from core.train.rundir import RunDir
    from core.train.setup import read_resume_checkpoint

    resume = None
    if args.resume:
        target = Path(args.resume) if isinstance(args.resume, str) else Path(args.out or "")
        if not str(target) or not target.exists():
            print("error: --resume needs a run directory (--out DIR or --resume DIR)", file=sys.stderr)
            return 2
        ckpt = read_resume_checkpoint(target)
        cfg = TrainConfig.from_dict(ckpt["train"]["config"])
        if args.epochs != 100 and args.epochs > cfg.epochs:
            print(f"note: the resumed run keeps its schedule of {cfg.epochs} epochs", file=sys.stderr)
        resume = target
        if (RunDir(cfg.out).read_status() or {}).get("state") == "finished":
            print(f"{cfg.out}: the run already finished", file=sys.stderr)
            return 0
    else:
        if not args.data:
            print("error: --data is required", file=sys.stderr)
            return 2
        freeze = list(range(args.freeze[0])) if len(args.freeze) == 1 else list(args.freeze)
        if args.freeze_backbone:
            import torch

            from core.models import build_model

            with torch.device("meta"):
                freeze = sorted(set(freeze) | set(range(build_model(args.model, 1).backbone_end)))
        cfg = TrainConfig(
            data=args.data, model=args.model, width=args.width, out=args.out or f"runs/{args.model}",
            weights=args.weights,
            aux=args.aux, epochs=args.epochs, img=args.img, batch=args.batch, device=args.device, hyp=args.hyp,
            hyp_overrides=_overrides(args.set), workers=args.workers, seed=args.seed, optimizer=args.optimizer,
            lr_schedule=args.lr_schedule, nbs=args.nbs, warmup_min_iters=args.warmup_min_iters, ema=not args.no_ema,
            bf16=args.bf16, channels_last=not args.no_channels_last, multi_scale=args.multi_scale,
            image_weights=args.image_weights, freeze=tuple(freeze),
            label_smoothing=args.label_smoothing, cache_images=args.cache, autoanchor=not args.noautoanchor,
            patience=args.patience, close_mosaic=args.close_mosaic, eval_interval=args.eval_interval,
            save_period=args.save_period, sync_bn=args.sync_bn, objectness_every=args.objectness_every,
            max_steps=args.max_steps, progress=not args.no_progress,
        )  # fmt: skip
    try:
        status = Trainer(cfg, resume=resume).fit()
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except torch_oom_errors() as exc:  # pragma: no cover - needs a GPU
        print(f"error: out of memory ({exc}); lower --batch or --img", file=sys.stderr)
        return 3
    return 0 if status.get("state") in ("finished", "stopped") else 1


def torch_oom_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else (RuntimeError,)


def run_val(args: argparse.Namespace) -> int:
    import json

    from core.checkpoint.io import CheckpointError, load_model
    from core.data.check import check_dataset
    from core.data.load import load_dataset
    from core.device import select_device
    from core.eval import evaluate
    from core.nms import NmsConfig

    try:
        dataset = check_dataset(load_dataset(args.data), decode=False).dataset
        loaded = load_model(args.weights)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = loaded.model
    if list(model.names) != list(dataset.class_names):
        print(
            f"error: the model's classes {model.names} differ from the dataset's {list(dataset.class_names)}",
            file=sys.stderr,
        )
        return 2
    if not dataset.split(args.split):
        print(f"error: no images in split '{args.split}' (splits: {dataset.split_counts()})", file=sys.stderr)
        return 2
    result = evaluate(
        model,
        dataset,
        args.split,
        img_size=args.img,
        batch_size=args.batch,
        workers=args.workers,
        nms=NmsConfig(conf=args.conf, iou=args.iou, multi_label=True),
        device=select_device(args.device),
        save_json=args.save_json,
        progress=not args.json,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "coco": result.coco.stats,
                    "per_class_ap50": result.coco.per_class_ap50,
                    "per_class_ap": result.coco.per_class_ap,
                    "precision": result.precision,
                    "recall": result.recall,
                    "images": result.num_images,
                    "boxes": result.num_boxes,
                },
                indent=1,
            )
        )
    else:
        print(loaded.summary())
        print(result.coco.summary)
        print(result.summary())
    return 0
