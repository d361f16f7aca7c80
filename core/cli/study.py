"""``yolov7-studio study``: the paper's ablations as commands (``study assignment``, ``study scaling``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="the paper's studies: assignment strategies, model scaling",
                       description="Rerun the YOLOv7 paper's ablations on your own data and models.")  # fmt: skip
    studies = p.add_subparsers(dest="study", metavar="STUDY")
    studies.required = True

    a = studies.add_parser(
        "assignment",
        help="train every auxiliary-head assignment strategy with the same data, seeds and recipe, then compare",
        description="Trains one run per condition and seed under OUT/runs (none = no auxiliary head; independent, "
        "lead-guided, coarse-to-fine (official), coarse-to-fine-bounded), evaluates each on the test split with "
        "pycocotools and writes OUT/study.json, table.md (printed), table.csv and objectness.png/.html (the lead and "
        "aux objectness maps of one test image under every condition). Resumable: run the same command again.",
    )  # fmt: skip
    a.add_argument("--data", required=True, help="dataset (folder, data.yaml, COCO json, .zip)")
    a.add_argument("--model", default="yolov7-tiny", help="variant (see `yolov7-studio models`)")
    a.add_argument("--width", type=float, default=1.0, help="channel-width multiple (< 1 for quick studies)")
    a.add_argument("--epochs", type=int, default=30, help="epochs per run")
    a.add_argument("--img", type=int, default=320, help="training and evaluation image size")
    a.add_argument("--batch", type=int, default=16, help="batch size")
    a.add_argument("--out", required=True, help="study folder (created; an existing study there is continued)")
    a.add_argument("--strategies", nargs="+", default=None, metavar="S",
                   help="conditions to run (default: all five: none independent lead-guided coarse-to-fine "
                   "coarse-to-fine-bounded)")  # fmt: skip
    a.add_argument("--seeds", nargs="+", type=int, default=[1], metavar="K",
                   help="K (one number): seeds 0..K-1; several numbers: those seeds (default 1: seed 0)")  # fmt: skip
    a.add_argument("--aux-wiring", default="top-down", choices=("top-down", "partial"), help="aux head wiring")
    a.add_argument("--assign-bound", type=float, default=None,
                   help="strength of coarse-to-fine-bounded's ceiling (default: the loss's)")  # fmt: skip
    a.add_argument("--recipe", default="auto", help="auto | official | small (as `train --recipe`)")
    a.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a.add_argument("--workers", type=int, default=2, help="data-loading workers")
    a.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU for every run (as `train --bf16`)")
    a.add_argument("--max-steps", type=int, default=0, help="stop each run after N optimizer steps (smoke tests)")
    a.add_argument("--plots", default="html", choices=("none", "html", "all"), help="each run's training plots")
    a.add_argument("--no-figure", action="store_true", help="skip the objectness figure")
    a.set_defaults(func=run_assignment)

    s = studies.add_parser(
        "scaling",
        help="width-only, depth-only and compound scaling of a model: params, FLOPs and channel ratios",
        description="Profiles the base model, width-only (every width x W), depth-only (computational blocks' depth "
        "x D) and compound scaling (depth x D and transition widths x W), in the fused deploy form at 640 px, and "
        "shows the transition layers' input/output channel ratios the paper's compound scaling keeps.",
    )  # fmt: skip
    s.add_argument("--model", default="yolov7", help="base variant")
    s.add_argument("--depth", type=float, default=1.5, help="depth factor of the computational blocks")
    s.add_argument("--width", type=float, default=1.25, help="width factor")
    s.add_argument("--img", type=int, default=640, help="image size of the FLOP count")
    s.add_argument("--out", default=None, help="folder for study.json and table.md (default: print only)")
    s.set_defaults(func=run_scaling)


def _seeds(values: list[int]) -> Any:
    return values[0] if len(values) == 1 else values


def run_assignment(args: argparse.Namespace) -> int:
    from core.study import run_assignment_study

    overrides: dict[str, Any] = {"device": args.device, "workers": args.workers, "plots": args.plots}
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    if args.bf16:
        overrides["bf16"] = True
    if args.assign_bound is not None:
        overrides["assign_bound"] = args.assign_bound
    try:
        study = run_assignment_study(
            args.data, args.model, out=args.out, epochs=args.epochs, img=args.img, batch=args.batch,
            width=args.width, strategies=args.strategies, seeds=_seeds(args.seeds), aux_wiring=args.aux_wiring,
            recipe=args.recipe, train_overrides=overrides, figure=not args.no_figure, log=print,
        )  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"study {study['state']}: {args.out}/study.json, table.md, table.csv"
          + (f", {study['figure']}" if study.get("figure") else ""))  # fmt: skip
    if study["state"] == "stopped":
        return 130
    return 0 if study["state"] == "finished" else 1


def run_scaling(args: argparse.Namespace) -> int:
    from core.study import scaling_study, scaling_table

    try:
        study = scaling_study(args.model, args.depth, args.width, img=args.img, out=args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(scaling_table(study), end="")
    if args.out:
        print(f"written: {args.out}/study.json, {args.out}/table.md")
    return 0
