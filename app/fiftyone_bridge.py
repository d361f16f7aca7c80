"""FiftyOne bridge: a dataset, several model variants' predictions, their evaluation, label-error scores and
YOLOv7's own view of every label in one persistent FiftyOne dataset (with its real MongoDB), and the App.

>>> from app.fiftyone_bridge import to_fiftyone
>>> result = to_fiftyone("datasets/demo/data.yaml", ["assets/demo_yolov7-tiny_aux.pt"], forms=("training", "deploy"))
>>> print(result.summary())

or ``yolov7-studio fiftyone --data PATH --weights CKPT [CKPT ...] [--name NAME] [--split SPLIT] [--launch]``.

What the dataset holds (running again updates it in place, samples keyed by file path: known images keep their
sample ids and get their fields replaced, new ones are added, and images of the processed splits that are no longer
in the source, or beyond ``max_images``, are removed):

* ``ground_truth``: ``fo.Detections`` with class names and relative boxes (the cleaned labels that training uses,
  ``core.data.check_dataset``); the split as a tag and in ``split``; the check's problems of each image as
  ``issue:<kind>`` tags and ``issues`` messages (dataset-level problems and left-out images in ``info``).
* ``pred_<run>``, ``pred_<run>_deploy``, ``pred_<run>_onnx``: one field per checkpoint and form, with
  ``confidence`` (= objectness x class probability) and the attributes ``objectness`` and ``class_prob``. The
  forms run as in the studio's Detect tab: training in PyTorch, deploy on ``backend="auto"`` (the fastest installed
  CPU runtime, or CUDA PyTorch), onnx in ONNX Runtime; the backend that ran is in each field's description and
  ``info["backend"]`` (e.g. ``onnxruntime (CPU, auto)``) and in ``info["yolov7_studio"]["backends"]``.
* ``evaluate_detections`` per variant (COCO method, eval key ``eval_<run>[_form]``), mAP and per-class AP in
  ``info["evaluation"]``; ``variant_disagreement`` per image when there are several variants.
* ``fiftyone.brain.compute_mistakenness`` from one variant (default the first): ``mistakenness``,
  ``possible_missing``, ``possible_spurious``.
* YOLOv7's view of each ground-truth box from one checkpoint's training form (default the first): attributes
  ``fine_P3`` ... ``fine_total``, ``coarse_P3`` ... ``coarse_total``, ``dynamic_k_fine``, ``dynamic_k_coarse``,
  ``no_positive`` (the lead-guided assignment with the model's own predictions, :mod:`core.explore`); per image
  ``num_no_positive`` and the ``lead_objectness`` / ``aux_objectness`` ``fo.Heatmap`` fields (PNG files under
  ``media_dir``, aligned to the original image; ``aux_objectness`` only for a model with an auxiliary head).
* Saved views: ``fp_<variant>``, ``fn_<variant>``, ``likely_missing``, ``likely_wrong``, ``no_positive``,
  ``disagreement``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.services import fiftyone_views as views_
from app.services.fiftyone_views import FORMS, BridgeError

__all__ = ["BridgeError", "BridgeResult", "default_name", "launch_app", "register_fiftyone", "to_fiftyone"]

DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET = 0.05, 0.45, 100
DISAGREE_CONF = 0.25  # detections at least this confident count when variants are compared


@dataclass
class BridgeResult:
    """What :func:`to_fiftyone` built."""

    name: str
    samples: int
    boxes: int
    added: int
    updated: int
    removed: int
    variants: list[str]
    evaluation: dict[str, dict[str, Any]]
    views: list[str]
    media_dir: Path
    left_out: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"FiftyOne dataset {self.name!r}: {self.samples} images, {self.boxes} ground-truth boxes "
            f"({self.added} added, {self.updated} updated, {self.removed} removed) in {self.seconds:.1f} s"
        ]
        for f, ev in self.evaluation.items():
            per = ", ".join(f"{k} {v:.3f}" for k, v in ev["per_class_AP"].items())
            lines.append(f"  {f}: mAP@[.5:.95] {ev['mAP']:.4f}  TP {ev['tp']} FP {ev['fp']} FN {ev['fn']}  ({per})")
        if self.left_out:
            lines.append(
                f"  {len(self.left_out)} image(s) left out (unreadable or missing): " + "; ".join(self.left_out[:5])
            )
        lines.append("  saved views: " + ", ".join(self.views))
        return "\n".join(lines)


def default_name(data: str | Path) -> str:
    """``yolov7-<folder>`` for a dataset folder, its ``data.yaml`` or annotation file."""
    p = Path(data).resolve()
    base = p.parent.name if p.is_file() else p.name
    return f"yolov7-{base or 'dataset'}"


def _import_fiftyone() -> Any:
    try:
        import fiftyone as fo
    except ImportError as exc:
        raise BridgeError(f"FiftyOne is not installed ({exc}): pip install 'yolov7-studio[fiftyone]'") from None
    return fo


def _open_dataset(fo: Any, name: str) -> Any:
    """The persistent dataset ``name`` (created when absent); an unreachable database is a clear error."""
    try:
        dataset = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name)
    except Exception as exc:  # pymongo/FiftyOne raise many kinds; all mean "no database"
        where = fo.config.database_uri or f"a local MongoDB in {fo.config.database_dir}"
        raise BridgeError(
            f"cannot reach FiftyOne's database ({where}): {type(exc).__name__}: {str(exc).splitlines()[0][:300]}. "
            "Check FIFTYONE_DATABASE_URI / database_uri, or unset it to let FiftyOne start its own MongoDB "
            "(pip install 'yolov7-studio[fiftyone]' installs one)"
        ) from None
    dataset.persistent = True
    return dataset


def _read_data(data: str | Path, split: str | None) -> tuple[Any, list[Any], dict[str, list[Any]], list[str]]:
    """(cleaned dataset, images of ``split``, issues per image path, left-out descriptions)."""
    from core.data import check_dataset, load_dataset

    path = Path(data)
    if not path.exists():
        raise BridgeError(f"{path}: dataset not found")
    try:
        report = check_dataset(load_dataset(path))
    except Exception as exc:
        raise BridgeError(f"{path}: cannot be read as a dataset ({type(exc).__name__}: {exc})") from None
    ds = report.dataset
    records = list(ds.split(split))
    if split not in (None, "all") and not records:
        raise BridgeError(f"{path}: no split {split!r}; the dataset has {', '.join(ds.split_names) or 'no images'}")
    if not records:
        raise BridgeError(f"{path}: no usable image (check: {report.counts_by_kind()})")
    lookup: dict[str, str] = {}
    for rec in ds.images:
        lookup[str(rec.path)] = str(rec.path)
        if rec.label_file is not None:
            lookup.setdefault(str(rec.label_file), str(rec.path))
            lookup[f"{rec.label_file} [{rec.path.name}]"] = str(rec.path)
    per_image: dict[str, list[Any]] = {}
    left_out = []
    for issue in report.issues:
        target = lookup.get(issue.file)
        if target is not None:
            per_image.setdefault(target, []).append(issue)
        elif issue.scope == "image" and issue.action.startswith("dropped"):
            left_out.append(f"{issue.file}: {issue.message}")
    return ds, records, per_image, left_out


def _detections(fo: Any, boxes: Any, labels: list[str], size: tuple[int, int], attrs: list[dict[str, Any]]) -> Any:
    w, h = size
    out = []
    for (x1, y1, x2, y2), label, extra in zip(boxes, labels, attrs):
        rel = [float(x1) / w, float(y1) / h, float(x2 - x1) / w, float(y2 - y1) / h]
        out.append(fo.Detection(label=label, bounding_box=rel, **extra))
    return fo.Detections(detections=out)


def _predictor(variant: Any, loaded: Any, img_size: int, cache_folder: Path) -> Any:
    """The variant's predictor, as the studio's Detect tab builds it (training: PyTorch; deploy: ``auto``;
    onnx: ONNX Runtime); exported graphs are cached under ``cache_folder/onnx``."""
    from app.services.detect import make_predictor
    from core.inference import BackendError

    try:
        return make_predictor(loaded.model, variant.form, img_size, cache_folder)
    except BackendError as exc:
        raise BridgeError(f"{variant.checkpoint}: the {variant.form} form cannot run here: {exc}") from None


def to_fiftyone(
    data: str | Path,
    weights: Sequence[str | Path],
    *,
    name: str | None = None,
    split: str | None = None,
    max_images: int | None = None,
    forms: Sequence[str] = ("training",),
    errors_from: str | None = None,
    view_from: str | Path | None = None,
    img_size: int | None = None,
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    media_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> BridgeResult:
    """Build or update the FiftyOne dataset ``name`` (default :func:`default_name`) from ``data`` (any dataset
    ``core.data`` reads) and the checkpoints ``weights`` in ``forms`` (``training``, ``deploy`` on the ``auto``
    backend, ``onnx``).

    Args:
        split: only this split (default all). max_images: only the first N images (of the split).
        errors_from: the prediction field the label-error scores use (default the first variant's).
        view_from: the checkpoint whose assignment and objectness maps are stored (default the first).
        img_size: network input size (default each checkpoint's training size, else 640).
        conf, iou: NMS of the stored predictions (max 100 per image, as COCO evaluates).
        media_dir: where heatmaps (and ONNX exports) are written (default ``<fo.config.default_dataset_dir>/
            yolov7-studio/<name>``); it must stay for the App to show them.
        log: progress messages.

    Raises:
        BridgeError: missing or unreadable data or checkpoint, classes sharing no name with the dataset's,
            unknown split or form, FiftyOne missing, or its database unreachable; the message says which.
    """
    from app.services.detect import backend_name, checkpoint_img_size
    from app.services.fiftyone_model import (
        PartDetections,
        class_mapping,
        disagreement,
        make_variants,
        predict_with_parts,
        save_heatmap,
        yolov7_view,
    )
    from core.checkpoint.io import load_model
    from core.nms import NmsConfig

    t0 = time.perf_counter()
    variants = make_variants(weights, forms)
    ds, records, issues, left_out = _read_data(data, split)
    if max_images is not None:
        records = records[: max(1, int(max_images))]
    names = list(ds.class_names)
    loaded: dict[Path, Any] = {}
    for v in variants:
        if v.checkpoint not in loaded:
            try:
                loaded[v.checkpoint] = load_model(v.checkpoint)
            except Exception as exc:
                raise BridgeError(f"{v.checkpoint}: cannot be loaded ({type(exc).__name__}: {exc})") from None
            loaded[v.checkpoint].model.eval()
    mappings = {p: class_mapping(list(m.model.names), names, str(p)) for p, m in loaded.items()}
    for p, m in loaded.items():
        extra = sorted(set(m.model.names) ^ set(names))
        if extra:
            log(f"note: {p.name}: classes differ from the dataset's ({', '.join(extra)}); matched by name")
    fields = [v.field for v in variants]
    if errors_from is not None and errors_from not in fields:
        raise BridgeError(f"errors_from: {errors_from!r} is not one of the prediction fields {', '.join(fields)}")
    view_ckpt = Path(view_from) if view_from is not None else variants[0].checkpoint
    if view_ckpt not in loaded:
        raise BridgeError(f"view_from: {view_ckpt} is not one of the checkpoints given")

    fo = _import_fiftyone()
    name = name or default_name(data)
    dataset = _open_dataset(fo, name)
    media = Path(media_dir) if media_dir is not None else Path(fo.config.default_dataset_dir) / "yolov7-studio" / name
    media.mkdir(parents=True, exist_ok=True)
    paths = [str(r.path) for r in records]
    sizes = {p: checkpoint_img_size(m.checkpoint) if img_size is None else int(img_size) for p, m in loaded.items()}

    preds: dict[str, list[PartDetections]] = {}
    backends: dict[str, str] = {}
    for v in variants:
        t = time.perf_counter()
        nms = NmsConfig(conf=conf, iou=iou, max_det=DEFAULT_MAX_DET)
        predictor = _predictor(v, loaded[v.checkpoint], sizes[v.checkpoint], media)
        backends[v.field] = backend_name(predictor)
        preds[v.field] = predict_with_parts(predictor, paths, nms)
        notes = f" (auto skipped {'; '.join(predictor.backend_notes)})" if predictor.backend_notes else ""
        log(f"{v.field}: {len(paths)} images in {time.perf_counter() - t:.1f} s on {backends[v.field]}{notes}")

    t = time.perf_counter()
    view_model, view_map = loaded[view_ckpt].model, mappings[view_ckpt]
    samples = []
    for k, rec in enumerate(records):
        size = (rec.width, rec.height)
        v7 = yolov7_view(view_model, rec.path, rec.boxes, rec.classes, view_map, sizes[view_ckpt])
        gt_attrs = [a.attributes() for a in v7.boxes] + [{"iscrowd": 1} for _ in rec.crowd_classes]
        gt_boxes = list(rec.boxes) + list(rec.crowd_boxes)
        gt_labels = [names[c] for c in rec.classes.tolist() + rec.crowd_classes.tolist()]
        img_issues = issues.get(str(rec.path), [])
        sample = fo.Sample(
            filepath=str(rec.path),
            tags=[rec.split] + sorted({f"issue:{i.kind}" for i in img_issues}),
            metadata=fo.ImageMetadata(width=rec.width, height=rec.height),
            split=rec.split,
            key=rec.key,
            issues=[f"{i.kind}: {i.message} ({i.action})" for i in img_issues],
            ground_truth=_detections(fo, gt_boxes, gt_labels, size, gt_attrs),
            num_no_positive=sum(bool(a.no_positive) for a in v7.boxes),
        )
        stem = Path(rec.key).with_suffix(".png")
        sample["lead_objectness"] = fo.Heatmap(map_path=str(save_heatmap(v7.lead, media / "lead" / stem)))
        if v7.aux is not None:
            sample["aux_objectness"] = fo.Heatmap(map_path=str(save_heatmap(v7.aux, media / "aux" / stem)))
        for v in variants:
            pd = preds[v.field][k]
            d = pd.detections
            attrs = [{"confidence": float(s), "objectness": float(o), "class_prob": float(c)}
                     for s, o, c in zip(d.scores.tolist(), pd.objectness.tolist(), pd.class_prob.tolist())]  # fmt: skip
            sample[v.field] = _detections(fo, d.boxes.numpy(), d.names, size, attrs)
        if len(variants) > 1:
            dets = [preds[v.field][k].detections for v in variants]
            sample["variant_disagreement"] = max(
                disagreement(a, b, DISAGREE_CONF) for i, a in enumerate(dets) for b in dets[i + 1 :]
            )
        samples.append(sample)
    log(f"YOLOv7 view ({view_ckpt.name}): {len(records)} images in {time.perf_counter() - t:.1f} s")

    existing = dict(zip(*dataset.values(["filepath", "id"]))) if len(dataset) else {}
    splits = {r.split for r in records}
    stale = [i for fp, i in existing.items() if fp not in set(paths)]
    if stale and len(dataset):
        split_of = dict(zip(*dataset.values(["id", "split"])))
        stale = [i for i in stale if split_of.get(i) in splits]
        dataset.delete_samples(stale)
    if not dataset.has_sample_field("issues"):
        dataset.add_sample_field("issues", fo.ListField, subfield=fo.StringField)
    new = [x for x in samples if x.filepath not in existing]
    if new:
        dataset.add_samples(new, progress=False)
    if len(new) < len(samples):  # known images: their fields are replaced (sample ids stay)
        old = [x for x in samples if x.filepath in existing]
        dataset.merge_samples(old, key_field="filepath", merge_lists=False, overwrite=True, progress=False)
    dataset.add_dynamic_sample_fields()
    for v in variants:  # which network made each field, where the App shows it (the field's description)
        pred_field = dataset.get_field(v.field)
        pred_field.description = f"{v.checkpoint.name}, {v.form} form, run by {backends[v.field]}"
        pred_field.info = {"checkpoint": str(v.checkpoint.resolve()), "form": v.form, "backend": backends[v.field]}
        pred_field.save()
    updated = sum(p in existing for p in paths)

    evaluation = {}
    for v in variants:
        evaluation[v.field] = fo_eval = views_.evaluate_variant(dataset, v.field, v.eval_key).to_dict()
        log(f"{v.field}: mAP@[.5:.95] {fo_eval['mAP']:.4f}")
    error_field = errors_from or variants[0].field
    views_.label_errors(dataset, error_field)
    dataset.add_dynamic_sample_fields()
    views = views_.save_views(dataset, [(v.field, v.eval_key) for v in variants], error_field, True)
    dataset.info.update({
        "yolov7_studio": {
            "data": str(Path(data).resolve()), "class_names": names, "variants": fields, "backends": backends,
            "checkpoints": {v.field: str(v.checkpoint.resolve()) for v in variants},
            "image_size": {str(p): s for p, s in sizes.items()}, "nms": {"conf": conf, "iou": iou},
            "label_errors_from": error_field, "yolov7_view_from": str(view_ckpt.resolve()),
            "left_out": left_out, "evaluation": evaluation,
        }
    })  # fmt: skip
    dataset.save()
    result = BridgeResult(
        name=name, samples=len(dataset), boxes=int(dataset.count(f"{'ground_truth'}.detections")),
        added=len(paths) - updated, updated=updated, removed=len(stale), variants=fields, evaluation=evaluation,
        views=views, media_dir=media, left_out=left_out, seconds=time.perf_counter() - t0,
    )  # fmt: skip
    log(result.summary())
    return result


def launch_app(name: str, port: int = 5151, address: str = "127.0.0.1") -> tuple[Any, str]:
    """Open the FiftyOne App on ``address:port`` with dataset ``name``; returns (session, URL)."""
    fo = _import_fiftyone()
    dataset = _open_dataset(fo, name)
    session = fo.launch_app(dataset, port=port, address=address, remote=True, auto=False)
    return session, f"http://{address}:{port}/datasets/{name}"


# -- command line ----------------------------------------------------------------------------------------------------
def register_fiftyone(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fiftyone",
        help="browse a dataset, several models' predictions, their evaluation and label errors in FiftyOne",
        description="Build or update a persistent FiftyOne dataset: ground truth, one prediction field per "
        "checkpoint and form, COCO evaluation, label-error scores (mistakenness), YOLOv7's assignment view of "
        "every label and the lead/aux objectness heatmaps; optionally open the App (127.0.0.1).",
    )
    p.add_argument("--data", required=True, help="dataset folder, data.yaml, COCO json or .zip")
    p.add_argument("--weights", required=True, nargs="+", metavar="CKPT", help="one or more checkpoints")
    p.add_argument("--name", default=None, help="FiftyOne dataset name (default yolov7-<dataset folder>)")
    p.add_argument("--split", default=None, help="only this split (default all)")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--forms", nargs="+", default=["training"], choices=FORMS, help="forms of each checkpoint")
    p.add_argument("--errors-from", default=None, metavar="FIELD", help="prediction field for mistakenness")
    p.add_argument("--img-size", type=int, default=None, help="network input (default: the checkpoint's)")
    p.add_argument("--conf", type=float, default=DEFAULT_CONF, help=f"NMS confidence (default {DEFAULT_CONF})")
    p.add_argument("--media-dir", default=None, help="where heatmaps are written (must stay for the App)")
    p.add_argument("--launch", action="store_true", help="open the FiftyOne App on 127.0.0.1 and print its URL")
    p.add_argument("--port", type=int, default=5151)
    p.set_defaults(func=_run_fiftyone)


def _run_fiftyone(args: argparse.Namespace) -> int:
    import sys

    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    try:
        result = to_fiftyone(
            args.data, args.weights, name=args.name, split=args.split, max_images=args.max_images, forms=args.forms,
            errors_from=args.errors_from, img_size=args.img_size, conf=args.conf, media_dir=args.media_dir,
        )  # fmt: skip
        if not args.launch:
            return 0
        session, url = launch_app(result.name, port=args.port)
    except BridgeError as exc:
        print(f"yolov7-studio fiftyone: error: {exc}", file=sys.stderr)
        return 2
    print(f"FiftyOne App: {url}  (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        session.wait(-1)
    return 0
