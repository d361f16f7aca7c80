"""``yolov7-studio train`` and ``yolov7-studio val``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

_BOOL = argparse.BooleanOptionalAction


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a YOLOv7 model (official recipe, EMA, resume, DDP)",
        description="Train a YOLOv7 variant on any dataset `yolov7-studio data` reads. The run "
        "directory (--out) gets config.json, status.json, results.csv, weights/last.pt and best.pt, "
        "plots/ and train.log. Create <out>/STOP (or send SIGTERM) to stop cleanly; --resume continues. "
        "--config FILE.json launches exactly the configuration a run directory's config.json holds (or a file "
        "of the same fields); flags given with it override those settings. Defaults are TrainConfig's.",
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override --config
    )
    p.add_argument("--config", metavar="FILE.json", help="start from this configuration (a run's config.json)")
    p.add_argument("--data", help="dataset folder, data.yaml, COCO json, .zip or dataset definition")
    p.add_argument(
        "--recipe",
        choices=("auto", "small", "official"),
        help="training recipe: small = AdamW lr0 0.002, nominal batch 16, no mosaic in the last fifth of the run "
        "(best on small datasets in the README's BCCD runs); official = SGD, nominal batch 64; auto = small under "
        "1000 training images (the log says which and why); explicit flags always win",
    )
    p.add_argument("--model", help="variant (see `yolov7-studio models`)")
    p.add_argument("--weights", help="start from this checkpoint (ours or an official .pt)")
    p.add_argument("--width", type=float, help="channel-width multiple (official width_multiple)")
    p.add_argument("--aux", action=_BOOL, help="auxiliary head (default: as the official config; --aux adds it to P5)")
    p.add_argument(
        "--assign",
        choices=_strategies(),
        help="label assignment of the auxiliary head: independent = from its own predictions (plain deep "
        "supervision); lead-guided = the lead head's fine set; coarse-to-fine = a coarse set from the lead's "
        "predictions (official); coarse-to-fine-bounded = coarse-to-fine with the coarse objectness targets "
        "capped by distance from the box centre (see --assign-bound). No effect without an auxiliary head",
    )
    p.add_argument(
        "--assign-bound",
        type=float,
        metavar="FLOAT",
        help="strength of coarse-to-fine-bounded's cap on coarse objectness targets, >= 0 (0: no cap; default "
        f"{_default_bound():g}, core.loss.DEFAULT_BOUND)",
    )
    p.add_argument(
        "--aux-wiring",
        choices=_wirings(),
        help="where the auxiliary head reads: top-down = the top-down pyramid (official); partial = the middle of "
        "the ELAN block feeding each lead level (the paper's partial auxiliary head; P5 models, needs --aux)",
    )
    p.add_argument("--epochs", type=int, help="default 100")
    p.add_argument("--img", type=int, help="training image size (square; default 640)")
    p.add_argument("--batch", type=int, help="total batch size over all processes (default 16)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", help="run directory (default runs/<model>)")
    p.add_argument("--name", help="a name for the run (shown by the front ends)")
    p.add_argument("--hyp", help="p5 | p6 | tiny | custom | path to a hyp YAML (default: by model)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one hyperparameter, e.g. --set lr0=0.02 (repeatable; added to --config's overrides)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        help="resume the run in --out (or the given run directory / last.pt) from its last checkpoint",
    )
    p.add_argument("--workers", type=int, help="data loader processes (default 2)")
    p.add_argument("--seed", type=int)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    p.add_argument("--lr-schedule", choices=("cosine", "linear"))
    p.add_argument("--nbs", type=int, help="nominal batch size (gradient accumulation target; default 64)")
    p.add_argument("--warmup-min-iters", type=int, help="minimum warmup iterations (default 100; official 1000)")
    p.add_argument("--ema", action=_BOOL, help="EMA of the weights (default on)")
    p.add_argument("--amp", action=_BOOL, help="mixed precision on CUDA (default on)")
    p.add_argument("--bf16", action=_BOOL, help="CPU bf16 autocast (fast only with AVX-512 BF16 or AMX)")
    p.add_argument("--channels-last", action=_BOOL, help="NHWC memory format (default on)")
    p.add_argument("--multi-scale", action=_BOOL)
    p.add_argument("--image-weights", action=_BOOL)
    p.add_argument(
        "--freeze",
        type=int,
        nargs="*",
        help="freeze layers: one number N = the first N layers (official), several = those indices",
    )
    p.add_argument("--freeze-backbone", action="store_true", help="freeze the backbone layers")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--cache", dest="cache_images", action=_BOOL, help="cache decoded images in RAM")
    p.add_argument("--autoanchor", action=_BOOL, help="check and evolve anchors before training (default on)")
    p.add_argument("--noautoanchor", dest="autoanchor", action="store_false", help="same as --no-autoanchor")
    p.add_argument(
        "--patience",
        type=int,
        help="early stopping: stop when this many epochs passed since the best evaluated epoch, looked at "
        "each evaluation (0 = off, the default)",
    )
    p.add_argument("--close-mosaic", type=int, help="no mosaic/mixup in the last N epochs")
    p.add_argument("--eval-interval", type=int, help="evaluate every N epochs (and after the last; default 1)")
    p.add_argument("--eval-conf", type=float, help="confidence threshold of the evaluation (default 0.001)")
    p.add_argument("--eval-iou", type=float, help="NMS IoU of the evaluation (default 0.65)")
    p.add_argument("--val-split", help="split to evaluate on (default val; then test, then train)")
    p.add_argument("--train-split", help="split to train on (default train)")
    p.add_argument("--save-period", type=int, help="also keep weights/epochN.pt every N epochs")
    p.add_argument("--sync-bn", action=_BOOL)
    p.add_argument(
        "--objectness-every",
        type=int,
        help="save lead/aux objectness maps of a fixed val image every N epochs",
    )
    p.add_argument("--plots", choices=("all", "html", "none"), help="all (HTML, PNG at the end; default) | html | none")
    p.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--progress", action=_BOOL, help="progress bars (default on)")
    p.set_defaults(func=run_train)
    _show_config_defaults(p)

    v = sub.add_parser(
        "val",
        help="evaluate a checkpoint with COCO metrics (pycocotools)",
        description="Evaluate a checkpoint on one split of a dataset: COCO AP/AR (pycocotools), precision and "
        "recall at the best F1, per-class AP.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    v.add_argument("--data", required=True, help="dataset folder, data.yaml, COCO json, .zip or dataset definition")
    v.add_argument("--weights", required=True, help="checkpoint (ours, official .pt, or an exported model file)")
    v.add_argument("--split", default="val", help="split to evaluate (train, val or test)")
    v.add_argument("--img", type=int, default=None, help="input size (default: the checkpoint's training size)")
    v.add_argument("--batch", type=int, default=16, help="images per batch")
    v.add_argument("--conf", type=float, default=0.001, help="confidence threshold before NMS")
    v.add_argument("--iou", type=float, default=0.65, help="NMS IoU threshold")
    v.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    v.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime", "openvino", "auto"),
        help="inference runtime (auto: the fastest installed one)",
    )
    v.add_argument("--workers", type=int, default=2, help="data loader processes")
    v.add_argument("--save-json", default=None, help="write the COCO results JSON here")
    v.add_argument("--json", action="store_true", help="print metrics as JSON")
    v.set_defaults(func=run_val)


def _strategies() -> tuple[str, ...]:
    from core.train.config import assign_strategies

    return assign_strategies()


def _default_bound() -> float:
    from core.loss import DEFAULT_BOUND

    return DEFAULT_BOUND


def _wirings() -> tuple[str, ...]:
    from core.models import AUX_WIRINGS

    return AUX_WIRINGS


def _show_config_defaults(p: argparse.ArgumentParser) -> None:
    """Append TrainConfig's default to each flag's help (the parser itself has none: --config must win)."""
    from core.train import TrainConfig

    defaults = TrainConfig(data="")
    for action in p._actions:
        if action.help == argparse.SUPPRESS or not hasattr(defaults, action.dest) or action.dest == "data":
            continue
        text = action.help or ""
        if "default" in text.lower():
            continue
        value = getattr(defaults, action.dest)
        shown = "on" if value is True else "off" if value is False else ("none" if value in (None, ()) else value)
        if action.dest == "out":
            shown = "runs/<model>"
        action.help = f"{text} (default {shown})".strip()


# flags that are TrainConfig fields under the same name (dashes as underscores)
_FIELDS = (
    "data", "recipe", "model", "width", "weights", "aux", "assign", "assign_bound", "aux_wiring", "epochs", "img",
    "batch", "device", "out", "name", "hyp",
    "workers", "seed", "optimizer", "lr_schedule", "nbs", "warmup_min_iters", "ema", "amp", "bf16", "channels_last",
    "multi_scale", "image_weights", "label_smoothing", "cache_images", "autoanchor", "patience", "close_mosaic",
    "eval_interval", "eval_conf", "eval_iou", "val_split", "train_split", "save_period", "sync_bn",
    "objectness_every", "plots", "max_steps", "progress",
)  # fmt: skip


def _overrides(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--set {item}: the value must be a number") from None
    return out


def read_config_file(path: str) -> dict[str, Any]:
    """TrainConfig fields from ``path``: a run directory's config.json (``{"config": {...}, ...}``) or a file
    holding the fields themselves. ``ValueError`` naming the file for anything else."""
    import json
    from pathlib import Path

    from core.train import TrainConfig

    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {path}: not a readable JSON file ({exc})") from None
    fields = payload.get("config", payload) if isinstance(payload, dict) else None
    if not isinstance(fields, dict):
        raise ValueError(f"--config {path}: expected a JSON object of training settings")
    try:
        TrainConfig.from_dict({"data": "", **fields})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--config {path}: {exc}") from None
    return dict(fields)


def config_from_args(args: argparse.Namespace) -> object:
    """The TrainConfig of a new run: TrainConfig's defaults, then ``--config``, then the flags given."""
    from pathlib import Path

    from core.train import TrainConfig

    given = vars(args)
    fields: dict[str, Any] = read_config_file(given["config"]) if "config" in given else {}
    fields.update({k: given[k] for k in _FIELDS if k in given})
    if "set" in given:
        fields["hyp_overrides"] = {**dict(fields.get("hyp_overrides") or {}), **_overrides(given["set"])}
    if not fields.get("data"):
        raise ValueError("--data is required (or --config FILE.json holding it)")
    model = str(fields.get("model", TrainConfig.model))
    fields.setdefault("out", f"runs/{model}")
    data = Path(str(fields["data"]))
    if data.exists():  # absolute, so that a resume from another working directory finds it
        fields["data"] = str(data.resolve())
    if "freeze" in given or given.get("freeze_backbone"):
        freeze_arg = list(given.get("freeze", []))
        freeze = list(range(freeze_arg[0])) if len(freeze_arg) == 1 else freeze_arg
        if given.get("freeze_backbone"):
            import torch

            from core.models import build_model

            with torch.device("meta"):
                freeze = sorted(set(freeze) | set(range(build_model(model, 1).backbone_end)))
        fields["freeze"] = freeze
    cfg = TrainConfig.from_dict(fields)
    from core.models import SPECS

    if not cfg.weights and cfg.model in SPECS:  # fine-tuning: the checkpoint's model is checked once loaded
        cfg.check_model(SPECS[cfg.model])
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.explore import training_hooks
    from core.train import TrainConfig, Trainer
    from core.train.rundir import RunDir
    from core.train.setup import read_resume_checkpoint
    from core.train.trainer import run_root

    resume = None
    given = vars(args)
    try:
        if given.get("resume"):
            target = Path(args.resume) if isinstance(args.resume, str) else Path(given.get("out", ""))
            if not str(target) or str(target) == "." or not target.exists():
                print("error: --resume needs a run directory (--out DIR or --resume DIR)", file=sys.stderr)
                return 2
            ckpt = read_resume_checkpoint(target)
            cfg = TrainConfig.from_dict(ckpt["train"]["config"])
            if given.get("epochs", cfg.epochs) != cfg.epochs:
                print(f"note: the resumed run keeps its schedule of {cfg.epochs} epochs", file=sys.stderr)
            resume = target
            root = run_root(target) or Path(cfg.out)
            if (RunDir(root).read_status() or {}).get("state") == "finished":
                print(f"{root}: the run already finished", file=sys.stderr)
                return 0
        else:
            cfg = config_from_args(args)  # type: ignore[assignment]
        status = Trainer(cfg, hooks=training_hooks(cfg), resume=resume, log=print).fit()
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
    from core.cli.sizes import default_size

    args.img, size_note = default_size(args.img, loaded.checkpoint)
    if size_note and not args.json:
        print(f"note: {size_note}", file=sys.stderr)
    if list(model.names) != list(dataset.class_names):
        print(
            f"error: the model's classes {model.names} differ from the dataset's {list(dataset.class_names)}",
            file=sys.stderr,
        )
        return 2
    if not dataset.split(args.split):
        print(f"error: no images in split '{args.split}' (splits: {dataset.split_counts()})", file=sys.stderr)
        return 2
    from core.inference.backends import backend_network

    try:
        net, backend, _ = backend_network(model, args.backend, select_device(args.device), args.img)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = evaluate(
        net,
        dataset,
        args.split,
        img_size=args.img,
        batch_size=args.batch,
        workers=args.workers,
        nms=NmsConfig(conf=args.conf, iou=args.iou, multi_label=True),
        device=select_device(args.device) if backend == "torch" else "cpu",
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
        print(f"{loaded.summary()}, backend {backend}")
        print(result.coco.summary)
        print(result.summary())
    return 0
