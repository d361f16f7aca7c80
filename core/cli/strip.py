"""``yolov7-studio strip CKPT OUT``: a small checkpoint for inference and fine-tuning (no optimizer, no resume state).

Keeps the weights that evaluation uses (the EMA weights when present) as the checkpoint's only state dict, in fp16
unless ``--fp32``, with the model record, the resolved training configuration, the epoch and the metrics; drops the
optimizer, the second copy of the weights, the scheduler, the RNG state and the other resume data. The result loads
with ``load_model`` like any of our checkpoints (fp16 tensors are cast to the model's dtype) but cannot be resumed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

KEEP_TRAIN_KEYS = ("config", "hyp", "epoch", "best_fitness", "metrics")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "strip",
        help="strip a training checkpoint for inference/fine-tuning (EMA weights, fp16, no optimizer)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a yolov7-studio checkpoint (e.g. runs/x/weights/best.pt)")
    p.add_argument("out", help="where to write the stripped checkpoint")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16)")
    p.add_argument("--no-ema", action="store_true", help="keep the raw weights instead of the EMA weights")
    p.set_defaults(func=run)


def strip_checkpoint(src: str | Path, out: str | Path, *, half: bool = True, use_ema: bool = True) -> Path:
    """Write the stripped form of our checkpoint ``src`` to ``out`` (atomically) and return ``out``."""
    import torch

    from core.checkpoint.io import atomic_save, read_checkpoint

    ckpt = read_checkpoint(src)
    sd = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["state_dict"]

    def small(t: torch.Tensor) -> torch.Tensor:
        return t.half() if half and t.is_floating_point() else t

    train: dict[str, Any] | None = ckpt.get("train")
    stripped = {
        **ckpt,
        "state_dict": {k: small(v) for k, v in sd.items()},
        "ema": None,
        "optimizer": None,
        "train": {k: train[k] for k in KEEP_TRAIN_KEYS if k in train} if train else None,
        "extra": {**(ckpt.get("extra") or {}), "stripped": {"from": str(src), "fp16": half, "ema": sd is ckpt["ema"]}},
    }
    return atomic_save(stripped, out)


def run(args: argparse.Namespace) -> int:
    from core.checkpoint.io import CheckpointError

    try:
        out = strip_checkpoint(args.checkpoint, args.out, half=not args.fp32, use_ema=not args.no_ema)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    before, after = Path(args.checkpoint).stat().st_size, out.stat().st_size
    print(f"{out}: {after / 1e6:.1f} MB (from {before / 1e6:.1f} MB)")
    return 0
