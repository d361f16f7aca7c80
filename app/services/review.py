"""The review queue: the labels of a dataset most likely to be wrong, ranked, for the studio's Review tab.

Plain functions (no Gradio). For every image a checkpoint's predictions are compared with the ground truth and the
lead-guided assignment is run on the ground truth; each suspicious label is a *case* with a score in [0, 1]:

=============  ===========================================================================  ==========================
kind           what                                                                         score
=============  ===========================================================================  ==========================
duplicate      two ground-truth boxes of one class overlap (IoU >= 0.8)                      0.95 + 0.05 IoU
no_positive    a ground-truth box got no positive anchor in the lead head's assignment      0.7
               (it cannot be learned: a duplicate, a tiny or degenerate box)
class          a prediction of another class (score >= conf / 2) covers the box (IoU >=     the prediction's score
               0.5) and no better prediction of the labelled class does
missing        a confident prediction overlaps no ground truth (IoU < 0.3)                 its score
mislocated     the best prediction of the box's class overlaps it only partly (IoU < 0.75) score x (1 - IoU)
unmatched      no prediction at all near the box (possibly spurious)                       0.6 x the model's recall
=============  ===========================================================================  ==========================

The model-based kinds are only as good as the checkpoint: ``unmatched`` is scaled by how many of the dataset's
boxes the model finds (a model that finds nothing cannot call anything spurious). ``find_cases`` is the pure
scoring on arrays (tested with stand-in predictions); ``review_queue`` runs the model over a dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.modelcache import ModelCache
from app.services.annotations import AnnotationError, open_dataset
from app.workspace import Workspace

KINDS = ("duplicate", "no_positive", "class", "missing", "mislocated", "unmatched")
DUPLICATE_IOU = 0.8
MATCH_IOU = 0.75  # a label this close to a same-class prediction is fine
CLASS_IOU = 0.5
MISSING_IOU = 0.3
NEAR_IOU = 0.1
PREDICT_CONF = 0.1  # predictions below this are not looked at

__all__ = ["KINDS", "ReviewError", "find_cases", "inject_errors", "recall_at_k", "review_queue"]


class ReviewError(ValueError):
    """A review request that cannot run; the message says why."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU of pixel xyxy boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]``."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _box(b: Sequence[float]) -> list[float]:
    return [round(float(v), 2) for v in b]


def find_cases(
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_classes: np.ndarray,
    *,
    conf: float = 0.5,
    model_recall: float = 1.0,
    no_positive: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The suspicious labels of one image (see the module docstring); class ids on both sides index one list.

    ``gt_boxes`` ``[N, 4]`` / ``pred_boxes`` ``[M, 4]`` pixel xyxy; ``conf`` = what counts as a confident prediction;
    ``no_positive``: ground-truth indices without a lead positive (``None``: not computed). Each case is
    ``{kind, score, gt (index or None), box, label, pred_box, pred_label, pred_score, message}`` (labels are ids).
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    pred_classes = np.asarray(pred_classes, dtype=np.int64).reshape(-1)
    cases: list[dict[str, Any]] = []

    def case(kind: str, score: float, gt: int | None, msg: str, p: int | None = None) -> None:
        cases.append({
            "kind": kind, "score": round(float(min(max(score, 0.0), 1.0)), 4), "gt": gt,
            "box": _box(gt_boxes[gt]) if gt is not None else _box(pred_boxes[p]),  # type: ignore[index]
            "label": int(gt_classes[gt]) if gt is not None else None,
            "pred_box": _box(pred_boxes[p]) if p is not None else None,
            "pred_label": int(pred_classes[p]) if p is not None else None,
            "pred_score": round(float(pred_scores[p]), 4) if p is not None else None, "message": msg,
        })  # fmt: skip

    gg = box_iou(gt_boxes, gt_boxes)
    flagged: set[int] = set()
    for i in range(len(gt_boxes)):
        for j in range(i):
            if gt_classes[i] == gt_classes[j] and gg[i, j] >= DUPLICATE_IOU and i not in flagged:
                flagged.add(i)
                case("duplicate", 0.95 + 0.05 * gg[i, j], i, f"same class as box {j}, IoU {gg[i, j]:.2f}")
    for i in sorted(set(no_positive or ()) - flagged):
        if 0 <= i < len(gt_boxes):
            case("no_positive", 0.7, int(i), "no positive anchor in the lead-guided assignment: cannot be learned")
    gp = box_iou(gt_boxes, pred_boxes)
    for i in range(len(gt_boxes)):
        if i in flagged:
            continue
        same = np.flatnonzero(pred_classes == gt_classes[i])
        best_same = int(same[np.argmax(gp[i, same])]) if len(same) else None
        iou_same = float(gp[i, best_same]) if best_same is not None else 0.0
        if iou_same >= MATCH_IOU:
            continue
        other = np.flatnonzero((pred_classes != gt_classes[i]) & (pred_scores >= conf / 2) & (gp[i] >= CLASS_IOU))
        if len(other) and (
            best_same is None or iou_same < CLASS_IOU or pred_scores[other].max() > pred_scores[best_same]
        ):
            p = int(other[np.argmax(pred_scores[other])])
            case("class", pred_scores[p], i, f"the model says class {pred_classes[p]} ({pred_scores[p]:.2f})", p)
        elif best_same is not None and iou_same >= NEAR_IOU:
            s = pred_scores[best_same] * (1.0 - iou_same)
            case("mislocated", s, i, f"the model's box of this class overlaps only IoU {iou_same:.2f}", best_same)
        elif not len(gp[i]) or gp[i].max() < NEAR_IOU:
            case("unmatched", 0.6 * model_recall, i, "no prediction near this box (possibly spurious)")
    for p in np.flatnonzero(pred_scores >= conf):
        if not len(gt_boxes) or gp[:, p].max() < MISSING_IOU:
            case("missing", pred_scores[p], None, f"confident prediction ({pred_scores[p]:.2f}) with no label", int(p))
    return cases


def _no_positive(model: Any, image: Any, boxes: np.ndarray, classes: np.ndarray, img_size: int) -> list[int] | None:
    """Indices of boxes without a lead-head positive (``None`` if the assignment cannot be run for this model)."""
    from core.explore import explore_image

    if not len(boxes):
        return []
    nc = int(model.head.nc)
    try:
        exp = explore_image(model, str(image), boxes, np.clip(classes, 0, nc - 1), img_size=img_size, coarse=False)
    except ValueError:
        return None
    return list(exp.view.unmatched_fine) if exp.view is not None else []


def review_queue(
    ws: Workspace,
    cache: ModelCache,
    dataset: str | None,
    checkpoint: str | None,
    *,
    split: str = "all",
    conf: float = 0.5,
    max_images: int = 200,
    assignment: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Rank the labels of a dataset by how likely they are wrong.

    Returns ``{"cases": [...], "images": [...], "summary": {...}}``: cases sorted by score (each with ``key``,
    ``image`` path and class *names*), images sorted by their worst case (``key, image, score, cases``).
    """
    from app.services.detect import DetectError, get_predictor, resolve_checkpoint

    if not 0.0 < float(conf) < 1.0:
        raise ReviewError(f"confidence threshold must be in (0, 1), got {conf}")
    try:
        src = open_dataset(ws, dataset)
        predictor = get_predictor(ws, cache, checkpoint, "deploy")
        _, loaded, img_size = resolve_checkpoint(ws, cache, checkpoint)
    except (AnnotationError, DetectError) as exc:
        raise ReviewError(str(exc)) from None
    names = src.class_names()
    model_names = list(loaded.model.names)
    all_names = names + [n for n in model_names if n not in names]  # model classes the dataset lacks go last
    to_ds = {i: all_names.index(n) for i, n in enumerate(model_names)}
    to_model = np.array([model_names.index(n) if n in model_names else 0 for n in names] or [0], dtype=np.int64)
    records = [r for r in src.images if split in (None, "", "all") or r.split == split][: int(max_images)]
    if not records:
        raise ReviewError(f"no images in split {split!r} of this dataset")
    per_image = []
    for k, rec in enumerate(records):
        if progress:
            progress(k / len(records), f"reviewing {rec.path.name}")
        try:
            boxes, classes = src.read_boxes(rec.key, names)
        except AnnotationError as exc:
            per_image.append((rec, None, None, None, str(exc)))
            continue
        det = predictor([str(rec.path)], conf=PREDICT_CONF)[0]
        pred_cls = np.array([to_ds[int(c)] for c in det.labels.tolist()], dtype=np.int64)
        nopos = None
        if assignment:
            nopos = _no_positive(
                loaded.model, rec.path, boxes, to_model[classes] if len(classes) else classes, img_size
            )
        per_image.append((rec, (boxes, classes), (det.boxes.numpy(), det.scores.numpy(), pred_cls), nopos, ""))
    # how much of the ground truth the model finds at all: scales the "no prediction near it" signal
    found = total = 0
    for _, gt, pred, _, _ in per_image:
        if gt is None or not len(gt[0]):
            continue
        total += len(gt[0])
        if len(pred[0]):
            iou = box_iou(gt[0], pred[0][pred[1] >= conf])
            found += int((iou.max(1) >= 0.5).sum()) if iou.size else 0
    recall = found / total if total else 0.0
    cases, images = [], []
    for rec, gt, pred, nopos, error in per_image:
        if gt is None:
            c = [{"kind": "unreadable", "score": 1.0, "gt": None, "box": None, "label": None, "pred_box": None,
                  "pred_label": None, "pred_score": None, "message": error}]  # fmt: skip
        else:
            c = find_cases(*gt, *pred, conf=conf, model_recall=recall, no_positive=nopos)
        for item in c:
            for f in ("label", "pred_label"):
                if item[f] is not None:
                    item[f] = all_names[item[f]] if item[f] < len(all_names) else str(item[f])
            item.update(key=rec.key, image=str(rec.path), split=rec.split)
        cases += c
        images.append({"key": rec.key, "image": str(rec.path), "score": max((x["score"] for x in c), default=0.0),
                       "cases": len(c), "kinds": sorted({x["kind"] for x in c})})  # fmt: skip
    cases = [c for c in cases if c["score"] > 0]  # e.g. "unmatched" from a model that finds nothing
    order = {k: i for i, k in enumerate(("unreadable", *KINDS))}  # ties: the model-free kinds first
    cases.sort(key=lambda c: (-c["score"], order.get(c["kind"], 99), c["key"], c["gt"] if c["gt"] is not None else -1))
    images.sort(key=lambda r: (-r["score"], -r["cases"], r["key"]))
    counts = {k: sum(1 for c in cases if c["kind"] == k) for k in KINDS}
    summary = {"images": len(records), "cases": len(cases), "by_kind": counts, "model_recall": round(recall, 4),
               "assignment": assignment, "checkpoint": checkpoint or "demo", "conf": conf}  # fmt: skip
    if progress:
        progress(1.0, "done")
    return {"cases": cases, "images": images, "summary": summary}


# -- measuring the queue: deliberately injected errors ---------------------------------------------------------------
def inject_errors(
    labels: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    rate: float = 0.05,
    kinds: Sequence[str] = ("removed", "flipped", "shifted"),
    seed: int = 0,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[dict[str, Any]]]:
    """Corrupt a share ``rate`` of all boxes per kind: ``removed`` (deleted), ``flipped`` (another class),
    ``shifted`` (moved by 30-50% of the box size), ``duplicate`` (copied). A box gets at most one error.

    ``labels``: per image ``(boxes [N, 4] xyxy, classes [N])``. Returns the corrupted labels and the errors
    ``{image, kind, box}`` (``box``: where the error shows: the removed box, or the box as now labelled).
    """
    rng = np.random.default_rng(seed)
    slots = [(i, j) for i, (b, _) in enumerate(labels) for j in range(len(b))]
    order = rng.permutation(len(slots))
    n = max(1, int(round(rate * len(slots))))
    picked: dict[tuple[int, int], str] = {}
    for k, kind in enumerate(kinds):
        for idx in order[k * n : (k + 1) * n]:
            picked[slots[int(idx)]] = kind
    out, errors = [], []
    for i, (boxes, classes) in enumerate(labels):
        nb, nc_ = [], []
        for j, (box, cls) in enumerate(zip(np.asarray(boxes, dtype=np.float64), np.asarray(classes))):
            kind = picked.get((i, j))
            box, cls = box.copy(), int(cls)
            if kind == "removed":
                errors.append({"image": i, "kind": kind, "box": box.tolist()})
                continue
            if kind == "flipped":
                cls = int((cls + rng.integers(1, num_classes)) % num_classes)
            elif kind == "shifted":
                w, h = box[2] - box[0], box[3] - box[1]
                frac, angle = rng.uniform(0.3, 0.5), rng.uniform(0, 2 * np.pi)
                box += np.array([np.cos(angle) * w, np.sin(angle) * h] * 2) * frac
            nb.append(box)
            nc_.append(cls)
            if kind == "duplicate":
                nb.append(box.copy())
                nc_.append(cls)
            if kind is not None:
                errors.append({"image": i, "kind": kind, "box": box.tolist()})
        out.append((np.asarray(nb, dtype=np.float64).reshape(-1, 4), np.asarray(nc_, dtype=np.int64)))
    return out, errors


def recall_at_k(ranked: Sequence[dict[str, Any]], errors: Sequence[dict[str, Any]], k: int) -> dict[str, float]:
    """Share of ``errors`` (``{image, kind, box}``) found among the first ``k`` cases (``{image, box, pred_box}``),
    per kind and overall; a case finds an error in the same image whose box overlaps it (IoU >= 0.5)."""
    top = list(ranked)[:k]
    found: dict[str, list[bool]] = {}
    for e in errors:
        hit = any(
            c["image"] == e["image"]
            and any(b is not None and box_iou([b], [e["box"]])[0, 0] >= 0.5 for b in (c.get("box"), c.get("pred_box")))
            for c in top
        )
        found.setdefault(e["kind"], []).append(hit)
    out = {kind: float(np.mean(v)) for kind, v in found.items()}
    out["all"] = float(np.mean([h for v in found.values() for h in v])) if found else 0.0
    return out
