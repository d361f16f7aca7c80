"""``yolov7-studio export CKPT --format onnx|openvino [--dynamic] [--nms] [--int8 --data PATH]``.

The fused deploy form as ONNX (or OpenVINO IR converted from it), verified against PyTorch; ``--int8``: post-training
static quantization calibrated on the dataset's training images, offered only when mAP50-95 (pycocotools) on its
test split drops by at most ``--max-drop`` points (default 0.5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


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
    p.add_argument(
        "--format", default="onnx", choices=["onnx", "openvino"], help="onnx (default) or openvino (IR .xml + .bin)"
    )
    p.add_argument("--out", default=None, help="output file (default: the checkpoint's name with .onnx / .xml)")
    p.add_argument(
        "--img", type=int, default=None, help="input size (square; default: the checkpoint's training size, else 640)"
    )
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
    p.add_argument(
        "--int8",
        action="store_true",
        help="post-training static int8 quantization (ONNX Runtime QDQ; dynamic shapes), needs --data; written "
        "only when mAP50-95 on the test split drops by at most --max-drop points",
    )
    p.add_argument("--data", default=None, help="dataset for --int8: calibration (train split) and evaluation")
    p.add_argument("--calib", type=int, default=300, help="calibration images for --int8 (default 300)")
    p.add_argument("--eval-split", default=None, help="split that decides --int8 (default test, else val)")
    p.add_argument("--max-drop", type=float, default=0.5, help="largest mAP50-95 drop in points for --int8")
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
    from core.cli.sizes import default_size

    args.img, size_note = default_size(args.img, loaded.checkpoint)
    if size_note:
        print(f"note: {size_note}")
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
    suffix = ".xml" if args.format == "openvino" else ".onnx"
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(suffix)
    if not args.out:
        print(f"note: writing next to the checkpoint: {out.resolve()} (--out to choose)")
    print(f"loaded {loaded.summary()}")
    if args.int8 or args.format == "openvino":
        return _run_openvino_or_int8(args, loaded.model, out, nms)
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


def _evaluate_graph(path: Path, dataset: Any, split: str, img_size: int, runtime: str) -> float:
    """mAP50-95 (pycocotools) of an ONNX graph in ``runtime`` (the one the export targets) on ``split``."""
    from core.eval import evaluate
    from core.inference.backends import OnnxRuntimeRunner, OpenVinoRunner, RuntimeNetwork
    from core.nms import NmsConfig

    runner = OpenVinoRunner(path) if runtime == "openvino" else OnnxRuntimeRunner(path)
    net = RuntimeNetwork(runner, runtime, 32)
    nms = NmsConfig(conf=0.001, iou=0.65, multi_label=True)
    return float(evaluate(net, dataset, split, img_size=img_size, batch_size=1, nms=nms).coco.map)


def _run_openvino_or_int8(args: argparse.Namespace, model: Any, out: Path, nms: Any) -> int:
    """``--format openvino`` and/or ``--int8``: export fp32 ONNX, quantize and gate on mAP, convert to IR."""
    import shutil
    import tempfile

    from core.export import ExportError, calibration_batches, export_onnx, quantize_int8, save_openvino, verify_onnx

    if args.int8 and (args.data is None or nms is not None):
        print("error: --int8 needs --data (calibration and evaluation) and no --nms", file=sys.stderr)
        return 2
    if args.format == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            print(f"error: --format openvino needs the 'openvino' extra (pip install 'yolov7-studio[openvino]'): "
                  f"{exc}", file=sys.stderr)  # fmt: skip
            return 2
    dataset = None
    if args.int8:
        from core.data.check import check_dataset
        from core.data.load import load_dataset

        try:
            dataset = check_dataset(load_dataset(args.data), decode=False).dataset
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {args.data}: {exc}", file=sys.stderr)
            return 2
        if list(model.names) != list(dataset.class_names):
            print(f"error: the model's classes {model.names} differ from {args.data}'s {list(dataset.class_names)}",
                  file=sys.stderr)  # fmt: skip
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        try:
            export_onnx(model, fp32, img_size=args.img, batch=args.batch, dynamic=args.dynamic or args.int8,
                        nms=nms, opset=args.opset)  # fmt: skip
        except (ExportError, OSError, RuntimeError) as exc:
            print(f"error: export failed: {exc}", file=sys.stderr)
            return 1
        if not args.no_verify:
            check = verify_onnx(fp32, model, nms=nms)
            print(check.to_text())
            if not check.passed:
                return 1
        graph = fp32
        if args.int8:
            assert dataset is not None
            train = dataset.split("train") or dataset.split(dataset.split_names[0])
            paths = [Path(r.path) for r in train[: max(1, args.calib)]]
            split = args.eval_split or ("test" if dataset.split("test") else "val")
            print(f"int8: calibrating on {len(paths)} training images, deciding on '{split}' (pycocotools)")
            try:
                graph = quantize_int8(fp32, Path(tmp) / "int8.onnx", calibration_batches(paths, args.img))
            except (ExportError, RuntimeError, ValueError) as exc:
                print(f"error: int8 quantization failed: {exc}", file=sys.stderr)
                return 1
            runtime = "openvino" if args.format == "openvino" else "onnxruntime"
            before, after = (_evaluate_graph(g, dataset, split, args.img, runtime) for g in (fp32, graph))
            drop = 100 * (before - after)
            print(f"mAP50-95 in {runtime}: fp32 {100 * before:.2f}, int8 {100 * after:.2f}: drop {drop:.2f} points")
            if drop > args.max_drop:
                print(f"int8 not offered: the drop is over {args.max_drop} points; use the fp32 export",
                      file=sys.stderr)  # fmt: skip
                return 1
        if args.format == "openvino":
            path = save_openvino(graph, out)
            if not args.int8 and not args.no_verify:
                from core.inference.backends import OpenVinoRunner, check_runner

                ov_check = check_runner(OpenVinoRunner(path), model, args.img) if args.dynamic else None
                if ov_check is not None:
                    print(ov_check.to_text().replace("onnxruntime", "openvino"))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            path = Path(shutil.copyfile(graph, out))
    kind = "int8 (QDQ)" if args.int8 else "fp32"
    print(f"wrote {path} ({args.format}, {kind}, input images {'dynamic' if args.dynamic or args.int8 else args.img})")
    return 0
