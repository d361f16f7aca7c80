"""``yolov7-studio reparam CKPT OUT``: write the fused deploy checkpoint and print its self-check."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reparam",
        help="re-parameterize a checkpoint into the fused deploy form (verified on a probe input)",
        description="Fold RepConv and BatchNorm into single convolutions, fold the implicit knowledge into the head, "
        "drop the auxiliary head, then run the original and the deploy network on the same probe input and report "
        "the differences (raw logits, boxes in pixels, probabilities, NMS results). The deploy checkpoint is only "
        "written when the check passes (see --force).",
    )
    p.add_argument("checkpoint", help="yolov7-studio checkpoint or official YOLOv7 .pt file")
    p.add_argument("out", help="where to write the deploy checkpoint (yolov7-studio format)")
    p.add_argument("--img", type=int, default=320, help="probe input size for the check (default 320)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--force", action="store_true", help="write the checkpoint even if the check fails")
    p.add_argument("--json", action="store_true", help="print the check as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.checkpoint.io import CheckpointError, load_model, save_checkpoint
    from core.inference.deploy import convert_for_deploy

    try:
        loaded = load_model(args.checkpoint, use_ema=not args.no_ema)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    conversion = convert_for_deploy(loaded.model, img_size=args.img)
    check = conversion.check
    assert check is not None
    if args.json:
        print(json.dumps({"source": loaded.description, **check.to_dict()}, indent=1))
    else:
        print(f"loaded {loaded.summary()}")
        print(check.to_text())
    if not check.passed and not args.force:
        print(
            f"error: not writing {args.out}: the deploy form does not reproduce the original (use --force)",
            file=sys.stderr,
        )
        return 1
    extra = {
        "reparam_check": check.to_dict(),
        "source_checkpoint": str(args.checkpoint),
        "source_description": loaded.description,
    }
    try:
        path = save_checkpoint(args.out, conversion.model, extra=extra)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"wrote {path} (deploy form, fused, {check.params_after:,} parameters)")
    return 0 if check.passed else 1
