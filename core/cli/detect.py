"""``yolov7-studio detect --weights CKPT SOURCE... --out DIR``: annotated images, JSON per image, COCO results."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

_KEEP_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="detect objects in images: annotated images, JSON per image and a COCO results file",
        description="Run a checkpoint (ours or an official .pt) on image files, folders or glob patterns. Writes "
        "to --out: one annotated image and one JSON per image (boxes xyxy in original pixels, scores, class ids and "
        "names), coco_results.json (image_id, category_id, bbox xywh, score) and images.json (the COCO image list). "
        "The model runs in its fused deploy form, checked against the original on a probe input.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders or glob patterns")
    p.add_argument("--weights", required=True, help="yolov7-studio checkpoint or official YOLOv7 .pt file")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument(
        "--img",
        type=int,
        default=None,
        help="inference size, long side in pixels (default: the checkpoint's training size, else 640)",
    )
    p.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these class ids")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    p.add_argument("--multi-label", action="store_true", help="one detection per class above --conf per box")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image (default 300)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto = fp16 on CUDA, fp32 on CPU; bf16 is ~2x faster on CPUs with AVX-512 BF16",
    )
    p.add_argument("--batch", type=int, default=4, help="images per forward pass (default 4)")
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime", "openvino", "auto"],
        help="where the network runs: torch (default), onnxruntime or openvino (CPU, the deploy form exported "
        "once and cached), auto (CUDA torch when present, else the fastest installed CPU runtime)",
    )
    p.add_argument(
        "--cache-dir", default=None, help="export cache (default $YOLOV7_STUDIO_CACHE or ~/.cache/yolov7-studio)"
    )
    p.add_argument(
        "--coco91", action="store_true", help="COCO results with the 91-id COCO categories (80-class models)"
    )
    p.add_argument("--no-images", action="store_true", help="write JSON only, no annotated images")
    p.set_defaults(func=run)


def _unique(name: str, suffix: str, used: set[str]) -> str:
    candidate, k = name, 1
    while candidate + suffix in used or candidate + ".json" in used:
        k += 1
        candidate = f"{name}_{k}"
    used.update({candidate + suffix, candidate + ".json"})
    return candidate


def run(args: argparse.Namespace) -> int:
    from core.checkpoint.io import CheckpointError
    from core.device import DeviceError
    from core.inference import COCO80_TO_COCO91, ImageReadError, InputImage, Predictor, draw_detections
    from core.inference.backends import BackendError
    from core.inference.sources import expand_paths, read_image
    from core.nms import NmsConfig

    nms = NmsConfig(
        conf=args.conf,
        iou=args.iou,
        classes=tuple(args.classes) if args.classes else None,
        agnostic=args.agnostic,
        multi_label=args.multi_label,
        max_det=args.max_det,
    )
    if args.img is None:
        from core.cli.sizes import checkpoint_training_size, default_size

        args.img, size_note = default_size(None, {"train": {"img": checkpoint_training_size(args.weights)}})
        print(f"note: {size_note}")
    try:
        predictor = Predictor(
            args.weights,
            device=args.device,
            img_size=args.img,
            nms=nms,
            precision=args.precision,
            batch_size=args.batch,
            backend=args.backend,
            cache_dir=args.cache_dir,
        )
    except (CheckpointError, DeviceError, BackendError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model: {predictor.description} on {predictor.device} ({predictor.precision})")
    print(f"backend: {predictor.backend} ({predictor.backend_label})")
    for note in predictor.backend_notes:
        print(f"  skipped: {note}")
    if predictor.deploy_check is not None:
        c = predictor.deploy_check
        print(
            f"deploy form check: {'passed' if c.passed else 'FAILED (running the original model)'} "
            f"(max box diff {c.max_box_px:.2g} px, max prob diff {c.max_prob:.2g})"
        )
    category_ids = None
    if args.coco91:
        if predictor.model.nc != 80:
            print(f"error: --coco91 needs an 80-class model, this one has {predictor.model.nc}", file=sys.stderr)
            return 2
        category_ids = COCO80_TO_COCO91

    paths, failures = [], 0
    for src in args.sources:
        try:
            paths.extend(expand_paths([src]))
        except ImageReadError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            failures += 1
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create {out}: {exc}", file=sys.stderr)
        return 2

    used: set[str] = set()
    coco: list[dict] = []
    images: list[dict] = []
    counts: Counter[str] = Counter()
    for start in range(0, len(paths), max(1, args.batch)):
        batch = []
        for path in paths[start : start + max(1, args.batch)]:
            try:
                batch.append(InputImage(read_image(path), str(path), path))
            except ImageReadError as exc:
                print(f"skipped: {exc}", file=sys.stderr)
                failures += 1
        for im, dets in zip(batch, predictor(batch) if batch else []):
            assert im.path is not None
            suffix = im.path.suffix.lower() if im.path.suffix.lower() in _KEEP_SUFFIXES else ".png"
            stem = _unique(im.path.stem, suffix, used)
            image_id = int(im.path.stem) if im.path.stem.isdigit() else len(images) + 1
            record = dets.to_json()
            record["image_id"] = image_id
            (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
            if not args.no_images:
                draw_detections(im.array, dets).save(out / f"{stem}{suffix}", quality=95)
            h, w = dets.image_size
            images.append({"id": image_id, "file_name": im.path.name, "width": w, "height": h, "source": str(im.path)})
            coco.extend(dets.to_coco(image_id, category_ids))
            counts.update(dets.names)
            print(f"{im.path}: {len(dets)} detections" + (f" ({_summary(dets.names)})" if len(dets) else ""))
    (out / "coco_results.json").write_text(json.dumps(coco))
    (out / "images.json").write_text(json.dumps(images, indent=1))
    print(f"{len(images)} images, {sum(counts.values())} detections -> {out}")
    if not images:
        print("error: no image could be read", file=sys.stderr)
        return 2
    return 1 if failures else 0


def _summary(names: list[str]) -> str:
    return ", ".join(f"{n} {name}" for name, n in Counter(names).most_common())
