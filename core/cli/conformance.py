"""``yolov7-studio conformance {forward,loss} FILE.npz``: compare with the official implementation's outputs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "conformance",
        help="compare our outputs with reference outputs of the official YOLOv7",
        description="Run a reference file of the official implementation through our engine and compare. "
        "Exits non-zero on any mismatch outside tolerance.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    fwd = kinds.add_parser("forward", help="model forward: raw levels, decoded output, NMS (tiny_forward*.npz format)")
    fwd.add_argument("file", help="npz file in the format of shared/yolov7/conformance/tiny_forward_kaiming.npz")
    fwd.add_argument("--json", action="store_true", help="print the differences as JSON")
    fwd.set_defaults(func=_run_forward)

    loss = kinds.add_parser("loss", help="assignment + loss + gradients (loss_ota.npz / loss_aux_ota.npz format)")
    loss.add_argument("file", help="npz file in the format of shared/yolov7/conformance/loss_ota.npz")
    loss.add_argument("--json", action="store_true", help="print the comparison as JSON")
    loss.set_defaults(func=_run_loss)


def _run_forward(args: argparse.Namespace) -> int:
    from core.conformance.forward import main

    return main(args.file, as_json=args.json)


def _run_loss(args: argparse.Namespace) -> int:
    from core.conformance.loss import main

    return main(args.file, as_json=args.json)
