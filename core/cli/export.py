"""``yolov7-studio export CKPT --format onnx [--dynamic] [--nms]``: ONNX of the fused deploy form, verified."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (fused deploy form, optional embedded NMS), checked with onnxruntime",
        description="Export the fused deploy form of a checkpoint. Input 'images' [B,3,H,W] RGB in [0,1]. Without "
        "--nms the output is the decoded [B,N,5+nc] (xywh pixels, obj, class probs); with --nms it is 'num_dets' [B] "
        "and 'detections' [B,max_det,6] (x1,y1,x2,y2,score,class) with the official NMS semantics. The file is then "
        "run in onnxruntime and compared with PyTorch.",
    )
    p.add_argument("checkpoint", help="yolov7-studio checkpoint or official YOLOv7 .pt file")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (onnx)")
    p.add_argument("--out", default=None, help="output file (default: the checkpoint's name with .onnx)")
    p.add_argument("--img", type=int, default=640, help="input size (square, default 640)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the fixed-shape export (default 1)")
    p.add_argument("--dynamic", action="store_true", help="free batch size, height and width")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--nms", action="store_true", help="embed NMS: the outputs are the final detections")
    p.add_argument("--conf", type=float, default=0.25, help="NMS confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image (default 300)")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these class ids")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    p.add_argument("--multi-label", action="store_true", help="one detection per class above --conf per box")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.checkpoint.io import CheckpointError, load_model
    from core.nms import NmsConfig

    try:
        import onnx  # noqa: F401

        from core.export import ExportError, export_onnx, verify_onnx
    except ImportError as exc:
        print(
            f"error: ONNX export needs the 'export' extra (pip install 'yolov7-studio[export]'): {exc}", file=sys.stderr
        )
        return 2
    try:
        loaded = load_model(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    nms = None
    if args.nms:
        nms = NmsConfig(
            conf=args.conf,
            iou=args.iou,
            classes=tuple(args.classes) if args.classes else None,
            agnostic=args.agnostic,
            multi_label=args.multi_label,
            max_det=args.max_det,
        )
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    print(f"loaded {loaded.summary()}")
    try:
        path = export_onnx(
            loaded.model, out, img_size=args.img, batch=args.batch, dynamic=args.dynamic, nms=nms, opset=args.opset
        )
    except (ExportError, OSError, RuntimeError) as exc:
        print(f"error: export to {out} failed: {exc}", file=sys.stderr)
        return 1
    size_mb = path.stat().st_size / 2**20
    outputs = "num_dets [B], detections [B,max_det,6]" if nms else "output [B,N,5+nc]"
    print(
        f"wrote {path} ({size_mb:.1f} MiB, opset {args.opset}, input images "
        f"[{'B' if args.dynamic else args.batch},3,{'H' if args.dynamic else args.img},"
        f"{'W' if args.dynamic else args.img}], outputs {outputs})"
    )
    if args.no_verify:
        return 0
    check = verify_onnx(path, loaded.model, nms=nms)
    print(check.to_text())
    return 0 if check.passed else 1
