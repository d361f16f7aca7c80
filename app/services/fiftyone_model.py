"""What the FiftyOne bridge needs from the models, as plain data (no FiftyOne import here; tested without it).

* :func:`variant_name` / :class:`Variant`: one prediction field per checkpoint and form (``pred_<run>``,
  ``pred_<run>_deploy``, ``pred_<run>_onnx``).
* :func:`predict_with_parts`: the predictor's detections (official letterbox, network, NMS, boxes in original
  pixels) plus each detection's objectness and class probability (the two factors of its score).
* :func:`yolov7_view`: YOLOv7's view of one image's ground truth: fine (lead) and coarse (aux) positives per
  level and in total, dynamic k and ``no_positive`` per box (:func:`core.explore.explore_image`, the
  lead-guided assignment computed from the model's own predictions), and the lead and aux objectness maps
  aligned to the original image.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_convert

from app.services.fiftyone_views import FORMS, BridgeError
from core.inference import Detections, LetterboxInfo, Predictor, load_inputs
from core.nms import NmsConfig, apply_nms

HEATMAP_MAX_SIDE = 1024  # heatmaps keep the image's size up to this long side (then scaled, same aspect)


# -- variants ----------------------------------------------------------------------------------------------------
def run_name(checkpoint: str | Path) -> str:
    """A field-safe name for a checkpoint: ``runs/exp3/weights/best.pt`` -> ``exp3``, ``.../last.pt`` ->
    ``exp3_last``, ``yolov7-tiny.pt`` -> ``yolov7_tiny``."""
    p = Path(checkpoint)
    if p.parent.name == "weights" and p.parent.parent.name:
        base = p.parent.parent.name + ("" if p.stem == "best" else f"_{p.stem}")
    else:
        base = p.stem
    name = re.sub(r"[^0-9a-zA-Z]+", "_", base).strip("_").lower()
    return name or "model"


@dataclass(frozen=True)
class Variant:
    """One prediction field: a checkpoint in one form."""

    checkpoint: Path
    run: str
    form: str

    @property
    def field(self) -> str:
        return f"pred_{self.run}" + ("" if self.form == "training" else f"_{self.form}")

    @property
    def eval_key(self) -> str:
        return "eval_" + self.field[len("pred_") :]


def make_variants(weights: Sequence[str | Path], forms: Sequence[str]) -> list[Variant]:
    """Variants of every checkpoint in every form (run names made unique with ``_2``, ``_3`` ...)."""
    bad = [f for f in forms if f not in FORMS]
    if bad or not forms:
        raise BridgeError(f"unknown form {bad[0] if bad else '(none)'!r}: use one or more of {', '.join(FORMS)}")
    if not weights:
        raise BridgeError("no checkpoint given (--weights CKPT [CKPT ...])")
    out, used = [], set()
    for w in weights:
        path = Path(w)
        if not path.is_file():
            raise BridgeError(f"{path}: checkpoint not found")
        run, k = run_name(path), 2
        while run in used:
            run, k = f"{run_name(path)}_{k}", k + 1
        used.add(run)
        out.extend(Variant(path, run, form) for form in dict.fromkeys(forms))
    return out


def class_mapping(model_names: Sequence[str], dataset_names: Sequence[str], source: str) -> dict[int, int]:
    """Dataset class id -> model class id, by name. No class in common is a :class:`BridgeError`."""
    index = {n: k for k, n in enumerate(model_names)}
    mapping = {d: index[n] for d, n in enumerate(dataset_names) if n in index}
    if not mapping:
        raise BridgeError(
            f"{source}: the model's classes ({', '.join(model_names)}) share no name with the dataset's "
            f"({', '.join(dataset_names)}); use a checkpoint trained on this dataset's classes"
        )
    return mapping


# -- predictions ---------------------------------------------------------------------------------------------------
@dataclass
class PartDetections:
    """Detections of one image with the two factors of each score: ``objectness`` and ``class_prob`` ``[n]``."""

    detections: Detections
    objectness: np.ndarray
    class_prob: np.ndarray


def _parts(decoded: torch.Tensor, dets: torch.Tensor, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """Objectness and class probability of each NMS output row, read from the decoded row it was made from.

    ``decoded`` ``[N, 5+nc]`` (xywh, obj, cls...), ``dets`` ``[n, 6]`` (xyxy, score, class). NMS copies boxes, so
    each detection's box equals its source row's converted box; among equal boxes the score ``obj * cls`` decides.
    """
    if not len(dets):
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    boxes = box_convert(decoded[:, :4], "cxcywh", "xyxy")
    cls = dets[:, 5].long()
    dist = torch.cdist(dets[:, :4].double(), boxes.double(), p=1)  # [n, N]
    obj = decoded[:, 4]
    prob = decoded[:, 5:] if nc > 1 else torch.ones_like(decoded[:, 4:5])
    score = obj[None, :] * prob[:, cls].T  # [n, N]: each row's score for the detection's class
    dist = dist + (score - dets[:, 4:5]).abs().double()
    row = dist.argmin(1)
    return obj[row].numpy().astype(np.float32), prob[row, cls if nc > 1 else 0].numpy().astype(np.float32)


def predict_with_parts(
    predictor: Predictor, paths: Sequence[str | Path], nms: NmsConfig, batch_size: int = 8
) -> list[PartDetections]:
    """The predictor's detections for ``paths`` (its letterbox, network and NMS; boxes in original pixels,
    as ``predictor(paths)``) with each detection's objectness and class probability."""
    images = load_inputs([str(p) for p in paths])
    groups: dict[tuple[int, int], list[int]] = {}
    for k, im in enumerate(images):
        groups.setdefault(predictor.geometry(im.shape).shape, []).append(k)
    out: list[PartDetections | None] = [None] * len(images)
    nc = len(predictor.names)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = [images[k] for k in chunk]
            x, infos = predictor.preprocess(batch)
            decoded = predictor.infer(x).float().cpu()
            for k, im, info, pred, det in zip(chunk, batch, infos, decoded, apply_nms(decoded, nms)):
                out[k] = _to_parts(pred, det, nc, im, info, predictor.names, nms.conf)
    return [o for o in out if o is not None]


def _to_parts(
    pred: torch.Tensor, det: torch.Tensor, nc: int, im: Any, info: LetterboxInfo, names: list[str], conf: float
) -> PartDetections:
    obj, prob = _parts(pred[pred[:, 4] > conf], det, nc)
    dets = Detections(
        boxes=info.to_original(det[:, :4]),
        scores=det[:, 4].clone(),
        labels=det[:, 5].long(),
        class_names=list(names),
        image_size=im.shape,
        source=im.name,
    )
    return PartDetections(dets, obj, prob)


# -- YOLOv7's view ---------------------------------------------------------------------------------------------------
@dataclass
class BoxAssignment:
    """YOLOv7's view of one ground-truth box (``None`` values: the model does not know the box's class)."""

    fine_per_level: dict[str, int] = field(default_factory=dict)
    coarse_per_level: dict[str, int] = field(default_factory=dict)
    fine_total: int | None = None
    coarse_total: int | None = None
    dynamic_k_fine: int | None = None
    dynamic_k_coarse: int | None = None
    no_positive: bool | None = None

    def attributes(self) -> dict[str, Any]:
        """Flat attribute names for a FiftyOne label: ``fine_P3`` ... ``fine_total``, ``coarse_*``, ``dynamic_k_*``,
        ``no_positive``."""
        out: dict[str, Any] = {f"fine_{k}": v for k, v in self.fine_per_level.items()}
        out.update({f"coarse_{k}": v for k, v in self.coarse_per_level.items()})
        out.update(fine_total=self.fine_total, coarse_total=self.coarse_total, dynamic_k_fine=self.dynamic_k_fine,
                   dynamic_k_coarse=self.dynamic_k_coarse, no_positive=self.no_positive)  # fmt: skip
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class ImageView:
    """:func:`yolov7_view` of one image: per ground-truth box its :class:`BoxAssignment` (dataset order), and the
    lead / aux objectness maps (``[h, w]`` float32 in [0, 1], the image's aspect; ``aux`` ``None`` without an
    auxiliary head)."""

    boxes: list[BoxAssignment]
    lead: np.ndarray
    aux: np.ndarray | None
    level_names: list[str]


def objectness_image(maps: list[np.ndarray], exp: Any, out_size: tuple[int, int]) -> np.ndarray:
    """Levels' objectness ``[na, H_l, W_l]`` -> one ``[h, w]`` map over the original image (``out_size`` (w, h)).

    Each level's best anchor per cell is spread over the cell's input pixels, the levels are combined by maximum,
    the letterbox padding is cut away and the rest is resized to the original image's aspect.
    """
    s = exp.img_size
    full = np.zeros((s, s), np.float32)
    for m in maps:
        best = m.max(0)
        rep = s // best.shape[0]
        full = np.maximum(full, np.kron(best, np.ones((rep, rep), np.float32))[:s, :s])
    (w0, h0), (rw, rh), (left, top) = exp.mapping.original_size, exp.mapping.ratio, exp.mapping.pad
    crop = full[top : top + max(1, round(h0 * rh)), left : left + max(1, round(w0 * rw))]
    img = Image.fromarray(crop).resize(out_size, Image.BILINEAR)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def heatmap_size(width: int, height: int, max_side: int = HEATMAP_MAX_SIDE) -> tuple[int, int]:
    """(w, h) of an image's heatmap: its own size, scaled down (same aspect) to ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def yolov7_view(
    model: Any,
    path: str | Path,
    boxes: np.ndarray,
    classes: np.ndarray,
    mapping: dict[int, int],
    img_size: int,
    explore: Callable[..., Any] | None = None,
) -> ImageView:
    """Assignment of the image's ground truth by ``model`` (training form) and its objectness maps.

    ``boxes`` ``[N, 4]`` original-pixel xyxy and ``classes`` ``[N]`` dataset class ids; ``mapping`` dataset id ->
    model id (boxes of classes the model lacks get an empty :class:`BoxAssignment`).
    """
    from core.explore import explore_image

    explore = explore or explore_image
    known = [g for g, c in enumerate(classes.tolist()) if c in mapping]
    model_cls = np.asarray([mapping[int(classes[g])] for g in known], dtype=np.int64)
    exp = explore(model, path, boxes[known].reshape(-1, 4), model_cls, img_size=img_size)
    names = [lv.name for lv in exp.levels]
    out = [BoxAssignment() for _ in range(len(classes))]
    for g, row in zip(known, exp.box_summaries()):
        a = out[g]
        fine, coarse = row.get("fine"), row.get("coarse")
        if fine is not None:
            a.fine_per_level = dict(zip(names, fine["positives_per_level"]))
            a.fine_total, a.dynamic_k_fine, a.no_positive = fine["positives"], fine["dynamic_k"], fine["none"]
        if coarse is not None:
            a.coarse_per_level = dict(zip(names, coarse["positives_per_level"]))
            a.coarse_total, a.dynamic_k_coarse = coarse["positives"], coarse["dynamic_k"]
    size = heatmap_size(*exp.mapping.original_size)
    lead = objectness_image([lv.lead_obj for lv in exp.levels], exp, size)
    aux = objectness_image([lv.aux_obj for lv in exp.levels], exp, size) if exp.has_aux else None
    return ImageView(out, lead, aux, names)


def save_heatmap(array: np.ndarray, path: Path) -> Path:
    """Write a ``[h, w]`` map in [0, 1] as an 8-bit grayscale PNG (0..255), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8), mode="L").save(tmp)
    tmp.replace(path)
    return path


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[n, m]`` IoU of pixel xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    return np.where((a[:, None, :] == b[None, :, :]).all(-1), 1.0, iou)  # equal boxes match, even without area


def disagreement(a: Detections, b: Detections, conf: float = 0.25, iou: float = 0.5) -> int:
    """Detections (score >= ``conf``) of either variant that the other has no box of the same class name for
    (IoU >= ``iou``)."""
    count = 0
    for x, y in ((a, b), (b, a)):
        keep_x, keep_y = (x.scores >= conf).numpy(), (y.scores >= conf).numpy()
        bx, lx = x.boxes.numpy()[keep_x].astype(np.float64), np.asarray(x.names, dtype=object)[keep_x]
        by, ly = y.boxes.numpy()[keep_y].astype(np.float64), np.asarray(y.names, dtype=object)[keep_y]
        if not len(bx):
            continue
        if not len(by):
            count += len(bx)
            continue
        ok = (_iou(bx, by) >= iou) & (lx[:, None] == ly[None, :])
        count += int((~ok.any(1)).sum())
    return count
