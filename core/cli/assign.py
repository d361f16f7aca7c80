"""``yolov7-studio assign``: the assignment explorer on one image, or assignment statistics of a dataset split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "assign",
        help="show the lead/aux objectness maps and the fine/coarse positives of every box (or dataset stats)",
        description="Image mode: letterbox IMAGE, run the model once (eval mode) and draw, per level and anchor, the "
        "lead and auxiliary objectness maps with each ground-truth box's fine (lead) and coarse (aux) positives as "
        "YOLOv7's lead-guided assigner picks them (interactive HTML, one PNG per level, JSON). Dataset mode "
        "(--data): per class and box size, positives per box, boxes without positives and the split over levels.",
    )  # fmt: skip
    p.add_argument("image", nargs="?", help="image file (image mode)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint (ours or an official training .pt)")
    src.add_argument("--model", help="a fresh (untrained) variant, e.g. yolov7-tiny (see `yolov7-studio models`)")
    p.add_argument(
        "--aux",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="auxiliary head (default: as the checkpoint / the official config; --aux adds it to P5)",
    )
    p.add_argument("--width", type=float, default=1.0, help="channel-width multiple of a fresh --model")
    p.add_argument("--names", default=None, help="class names of a fresh --model, comma-separated")
    p.add_argument("--nc", type=int, default=None, help="number of classes of a fresh --model (default 80)")
    p.add_argument("--seed", type=int, default=0, help="weight seed of a fresh --model")
    p.add_argument("--labels", default=None, help="YOLO .txt (normalized rows) or Pascal VOC .xml of IMAGE; "
                   "without it only the maps are drawn")  # fmt: skip
    p.add_argument("--data", default=None, help="dataset (folder, data.yaml, COCO json, .zip): dataset mode")
    p.add_argument("--split", default="val", help="dataset split (default val; 'all' = every image)")
    p.add_argument("--stats", action="store_true", help="dataset mode: write the statistics (the default there)")
    p.add_argument("--examples", type=int, default=0, help="dataset mode: also explore the first N images")
    p.add_argument("--max-images", type=int, default=None, help="dataset mode: use only the first N images")
    p.add_argument(
        "--img", type=int, default=None, help="square input size (default: the checkpoint's training size, else 640)"
    )
    p.add_argument("--topk", type=int, default=None, help="IoUs summed for dynamic k (default 20; 10 with "
                   "--no-coarse)")  # fmt: skip
    p.add_argument("--no-coarse", action="store_true", help="only the fine (lead) label set")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--no-png", action="store_true", help="HTML and JSON only")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


class _UsageError(ValueError):
    """A problem with the command line or the inputs (exit code 2)."""


def _device(spec: str) -> Any:
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise _UsageError(f"--device {spec}: CUDA is not available here")
    return torch.device(spec)


def _model(args: argparse.Namespace, names: list[str] | None) -> Any:
    """The model: loaded from --weights, or a fresh --model with ``names`` (or --names / --nc) as its classes."""
    import torch

    if args.weights:
        from core.checkpoint.io import CheckpointError, load_model

        try:
            loaded = load_model(args.weights, aux=args.aux)
        except CheckpointError as exc:
            raise _UsageError(str(exc)) from None
        model = loaded.model
        from core.cli.sizes import default_size

        args.img, size_note = default_size(args.img, loaded.checkpoint)
        if size_note:
            print(f"note: {size_note}", file=sys.stderr)
        record = loaded.checkpoint.get("model") if loaded.checkpoint else None
        saved = record.get("class_names") if isinstance(record, dict) else None
        if saved and len(saved) == len(model.names) and list(model.names) != list(saved):
            model.names = list(saved)  # adding/dropping the aux head rebuilds the model: keep the checkpoint's names
        if model.deploy:
            raise _UsageError(f"{args.weights}: a deploy checkpoint has no auxiliary head and no training form; "
                              "use the training checkpoint")  # fmt: skip
        if args.aux and loaded.transfer is not None:
            print("note: the checkpoint has no auxiliary head; the added aux head is untrained", file=sys.stderr)
        return model
    from core.models import build_model, get_spec, scale_width

    args.img = args.img or 640
    if args.names:
        names = [n.strip() for n in args.names.split(",") if n.strip()]
    if names is None:
        names = [str(i) for i in range(args.nc or 80)]
    try:
        spec = get_spec(args.model)
    except (KeyError, ValueError) as exc:
        raise _UsageError(str(exc).strip("'\"")) from None
    if args.width != 1.0:
        spec = scale_width(spec, args.width)
    torch.manual_seed(args.seed)
    return build_model(spec, len(names), aux=args.aux, class_names=names)


def _print_image_summary(exp: Any, files: Any) -> None:
    print(f"{exp.model_name}: {exp.num_boxes} boxes, input {exp.img_size}x{exp.img_size}, "
          f"aux head {'yes' if exp.has_aux else 'no'}")  # fmt: skip
    for note in exp.notes:
        print(f"note: {note}")
    names = [lv.name for lv in exp.levels]
    for row in exp.box_summaries():
        parts = []
        for kind in ("fine", "coarse"):
            if kind in row:
                r = row[kind]
                per = " ".join(f"{n}:{c}" for n, c in zip(names, r["positives_per_level"]) if c)
                parts.append(f"{kind} {r['positives']} (k={r['dynamic_k']}{', ' + per if per else ''})")
        print(f"  box {row['index']} {row['class_name']} ({row['size']}): " + "; ".join(parts or ["-"]))
    if exp.view is not None:
        print(f"boxes without a fine positive: {exp.view.unmatched_fine or 'none'}")
        if exp.view.unmatched_coarse is not None:
            print(f"boxes without a coarse positive: {exp.view.unmatched_coarse or 'none'}")
    for path in files.all():
        print(f"wrote {path}")
    if files.note:
        print(f"note: {files.note}", file=sys.stderr)


def _image_mode(args: argparse.Namespace, device: Any) -> int:
    from core.explore.engine import explore_image
    from core.explore.export import save_exploration
    from core.explore.labels import read_labels, voc_class_names
    from core.inference.sources import read_image

    rgb = read_image(args.image)
    names = None
    if args.model and args.labels and Path(args.labels).suffix.lower() == ".xml" and not args.names:
        names = voc_class_names(args.labels) or None  # a fresh model takes the annotation's classes
    model = _model(args, names).to(device)
    boxes = classes = None
    if args.labels:
        boxes, classes = read_labels(args.labels, rgb.shape[1], rgb.shape[0], model.names)
    exp = explore_image(model, args.image, boxes, classes, img_size=args.img, coarse=not args.no_coarse,
                        topk=args.topk, device=device)  # fmt: skip
    files = save_exploration(exp, args.out, png=not args.no_png)
    _print_image_summary(exp, files)
    return 0


def _dataset_mode(args: argparse.Namespace, device: Any) -> int:
    from core.data.check import check_dataset
    from core.data.load import load_dataset
    from core.explore.engine import explore_image
    from core.explore.export import save_exploration, save_stats
    from core.explore.stats import assignment_stats

    try:
        ds = check_dataset(load_dataset(args.data), decode=False).dataset
    except (FileNotFoundError, OSError) as exc:
        raise _UsageError(str(exc)) from None
    model = _model(args, list(ds.class_names)).to(device)
    if args.weights and list(model.names) != list(ds.class_names):
        print(f"note: model classes {model.names} vs dataset classes {list(ds.class_names)}: ids are used as is",
              file=sys.stderr)  # fmt: skip
    out = Path(args.out)

    def progress(fraction: float, message: str) -> None:
        print(f"\r{message}", end="" if fraction < 1 else "\n", file=sys.stderr)

    stats = assignment_stats(model, ds, args.split, img_size=args.img, coarse=not args.no_coarse, topk=args.topk,
                             max_images=args.max_images, device=device, progress=progress)  # fmt: skip
    files = save_stats(stats, out, png=not args.no_png)
    o = stats.overall
    print(f"{stats.model} on '{stats.split}': {stats.images} images, {stats.boxes} boxes, top-k {stats.topk}")
    line = f"  fine: {o.fine_mean or 0:.2f} positives per box, {100 * (o.fine_none_share or 0):.1f}% without any"
    if stats.coarse:
        line += f"; coarse: {o.coarse_mean or 0:.2f} per box, {100 * (o.coarse_none_share or 0):.1f}% without any"
    print(line)
    for g in stats.by_class + stats.by_size:
        if g.boxes:
            extra = f", coarse {g.coarse_mean:.2f}" if g.coarse_mean is not None else ""
            print(f"  {g.name}: {g.boxes} boxes, fine {g.fine_mean:.2f}{extra} positives per box")
    for path in files.all():
        print(f"wrote {path}")
    if files.note:
        print(f"note: {files.note}", file=sys.stderr)
    records = [r for r in ds.split(args.split) if r.num_boxes][: max(args.examples, 0)]
    for rec in records:
        exp = explore_image(model, rec.path, rec.boxes, rec.classes, img_size=args.img, coarse=not args.no_coarse,
                            topk=args.topk, device=device)  # fmt: skip
        for path in save_exploration(exp, out / "examples", png=not args.no_png).all():
            print(f"wrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.data is None and args.image is None:
            raise _UsageError("give an IMAGE, or --data DATASET for dataset statistics")
        if args.data is not None and args.image is not None:
            raise _UsageError("give either an IMAGE or --data, not both")
        if args.labels and args.data:
            raise _UsageError("--labels belongs to an IMAGE; a dataset brings its own labels")
        device = _device(args.device)
        return _dataset_mode(args, device) if args.data else _image_mode(args, device)
    except (ValueError, FileNotFoundError) as exc:  # LabelError, ImageReadError, bad boxes, unknown classes ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
