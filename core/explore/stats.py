"""Dataset-level assignment statistics: how many fine (lead) and coarse (aux) positives a box gets, by class and size.

``assignment_stats(model, dataset, split="val")`` letterboxes every image of the split to the square input, runs the
model once per batch in eval mode (on :func:`core.inference.eval_view.eval_view`: the caller's model is not changed,
not even its train/eval mode) and :func:`core.assign.explain_assignment` on its lead predictions (the same
lead-guided assignment as training, without augmentation), and summarizes the per-box counts:

* per class and per COCO size bucket measured at the network input (small: area < 32^2 input pixels, medium:
  < 96^2, large: the rest): the mean number of fine and coarse positives per box, the share of boxes that got none,
  and how the group's positives split over the levels (P3, P4, ...);
* every box's own counts (``per_box``), for tables and custom plots.

All results are plain dataclasses; ``AssignmentStats.to_dict()`` is ``json.dumps``-able. A UI follows the work
through ``progress(fraction, message)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from core.assign import explain_assignment
from core.inference.eval_view import eval_view
from core.inference.letterbox import letterbox
from core.inference.sources import read_image

__all__ = ["SIZE_BUCKETS", "size_bucket", "BoxCounts", "GroupStats", "AssignmentStats", "assignment_stats",
           "input_targets", "Progress"]  # fmt: skip

Progress = Callable[[float, str], None]
"""A progress callback: ``progress(fraction, message)`` with ``fraction`` in ``[0, 1]`` (1 = done)."""

SIZE_BUCKETS: tuple[str, ...] = ("small", "medium", "large")


def size_bucket(area: float) -> str:
    """COCO size bucket of a box area in (input) pixels: small < 32^2 <= medium < 96^2 <= large."""
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def input_targets(boxes_input: np.ndarray, classes: np.ndarray, img_size: int, image: int = 0) -> np.ndarray:
    """Assigner targets ``[N, 6]`` (image, class, x, y, w, h normalized to the square input) from input-pixel xyxy."""
    t = np.zeros((len(classes), 6))
    if len(classes):
        xyxy = np.asarray(boxes_input, dtype=np.float64).reshape(-1, 4) / img_size
        t[:, 0] = image
        t[:, 1] = classes
        t[:, 2:4] = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        t[:, 4:6] = xyxy[:, 2:] - xyxy[:, :2]
    return t


@dataclass
class BoxCounts:
    """One box: where it is, its size at the input, and per label set its dynamic k and positives per level."""

    image: str
    index: int
    cls: int
    area_input: float
    size: str
    fine_k: int
    fine_per_level: list[int]
    coarse_k: int | None
    coarse_per_level: list[int] | None


@dataclass
class GroupStats:
    """Summary of a group of boxes (a class, a size bucket, or all).

    ``*_mean``: mean positives per box; ``*_none_share``: share of boxes with no positive at all (0..1);
    ``*_level_share``: share of the group's positives on each level (sums to 1; all 0 when there are none).
    Coarse fields are ``None`` when the coarse set was not computed. Means are ``None`` for an empty group.
    """

    name: str
    boxes: int
    fine_mean: float | None
    fine_none_share: float | None
    fine_level_share: list[float]
    coarse_mean: float | None = None
    coarse_none_share: float | None = None
    coarse_level_share: list[float] | None = None


@dataclass
class AssignmentStats:
    """Assignment statistics of one dataset split for one model (see the module docstring)."""

    model: str
    split: str
    img_size: int
    topk: int
    anchor_t: float
    coarse: bool
    strides: list[int]
    level_names: list[str]
    class_names: list[str]
    images: int
    images_with_boxes: int
    boxes: int
    overall: GroupStats
    by_class: list[GroupStats]
    by_size: list[GroupStats]
    per_box: list[BoxCounts] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Nested dict of plain Python values (JSON-ready)."""
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _group(name: str, rows: list[BoxCounts], nl: int, coarse: bool) -> GroupStats:
    def summary(per_level: list[list[int]]) -> tuple[float | None, float | None, list[float]]:
        if not per_level:
            return None, None, [0.0] * nl
        m = np.asarray(per_level, dtype=np.float64).reshape(len(per_level), nl)
        totals = m.sum(1)
        level_sum = m.sum(0)
        share = (level_sum / level_sum.sum()).tolist() if level_sum.sum() > 0 else [0.0] * nl
        return float(totals.mean()), float((totals == 0).mean()), [float(v) for v in share]

    f_mean, f_none, f_share = summary([r.fine_per_level for r in rows])
    g = GroupStats(name, len(rows), f_mean, f_none, f_share)
    if coarse:
        g.coarse_mean, g.coarse_none_share, g.coarse_level_share = summary(
            [r.coarse_per_level for r in rows if r.coarse_per_level is not None]
        )
    return g


@torch.no_grad()
def assignment_stats(
    model: Any,
    dataset: Any,
    split: str | None = "val",
    *,
    img_size: int = 640,
    coarse: bool = True,
    topk: int | None = None,
    anchor_t: float = 4.0,
    batch_size: int = 8,
    max_images: int | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> AssignmentStats:
    """Assignment statistics of a dataset split.

    Args:
        model: a training-form :class:`core.models.Yolo` (aux head optional: only lead predictions are used).
        dataset: a :class:`core.data.DetectionDataset` (its ``split`` images; ``None``/"all" = every image) or a
            sequence of :class:`core.data.ImageRecord` (boxes in original-pixel xyxy).
        img_size: square input side. coarse/topk/anchor_t: as :func:`core.explore.explore_image`.
        max_images: use only the first N images of the split.
        progress: ``progress(fraction, message)``, called before the first batch (0.0), after every batch (the
            share of images with boxes done, e.g. ``"24/100 images with boxes"``) and at the end (1.0).

    Raises:
        ValueError: no images, classes the model does not have, bad input size.
    """
    head = model.head
    records: Sequence[Any] = dataset.split(split) if hasattr(dataset, "split") else list(dataset)
    names = list(dataset.class_names) if hasattr(dataset, "class_names") else list(model.names)
    if max_images is not None:
        records = records[:max_images]
    if not records:
        raise ValueError(f"no images in split '{split}'")
    if img_size % int(max(head.strides)):
        raise ValueError(f"img_size {img_size} is not a multiple of the largest stride {int(max(head.strides))}")
    used = {int(c) for r in records for c in r.classes.tolist()}
    if used and max(used) >= head.nc:
        raise ValueError(f"the dataset uses class {max(used)} but the model has {head.nc} classes; "
                         "use a model trained (or built) for this dataset")  # fmt: skip
    if len(names) < head.nc:
        names += [str(i) for i in range(len(names), head.nc)]
    k = topk if topk is not None else (20 if coarse else 10)
    nl = int(head.nl)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    net = eval_view(model)
    rows: list[BoxCounts] = []
    with_boxes = [r for r in records if r.num_boxes]
    total = len(with_boxes)
    if progress is not None:
        progress(0.0, f"0/{total} images with boxes")
    for start in range(0, total, batch_size):
        chunk = with_boxes[start : start + batch_size]
        imgs, targets, meta = [], [], []
        for b, rec in enumerate(chunk):
            inp, info = letterbox(read_image(rec.path), img_size, auto=False)
            rw, rh = info.ratio
            bx = np.asarray(rec.boxes, dtype=np.float64).copy()
            bx[:, [0, 2]] = bx[:, [0, 2]] * rw + info.pad[0]
            bx[:, [1, 3]] = bx[:, [1, 3]] * rh + info.pad[1]
            imgs.append(inp.transpose(2, 0, 1))
            targets.append(input_targets(bx, rec.classes, img_size, b))
            meta += [(rec, g, float((x2 - x1) * (y2 - y1))) for g, (x1, y1, x2, y2) in enumerate(bx)]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).to(dev).float().div(255)
        lead = [r.float() for r in net.forward_levels(x, aux=False)[:nl]]
        t = torch.from_numpy(np.concatenate(targets)).float().to(dev)
        view = explain_assignment(lead, t, head.anchors, head.stride, img_size, aux=coarse, topk=k,
                                  anchor_t=anchor_t)  # fmt: skip
        for bv, (rec, g, area) in zip(view.boxes, meta):
            rows.append(BoxCounts(
                image=rec.key or str(rec.path), index=g, cls=bv.cls, area_input=area, size=size_bucket(area),
                fine_k=bv.fine.dynamic_k, fine_per_level=[len(lv.positives) for lv in bv.fine.levels],
                coarse_k=bv.coarse.dynamic_k if bv.coarse is not None else None,
                coarse_per_level=[len(lv.positives) for lv in bv.coarse.levels] if bv.coarse is not None else None,
            ))  # fmt: skip
        done = min(start + batch_size, total)
        if progress is not None and done < total:
            progress(done / total, f"{done}/{total} images with boxes")
    if progress is not None:
        progress(1.0, f"{total}/{total} images with boxes")
    by_class = [_group(names[c], [r for r in rows if r.cls == c], nl, coarse) for c in range(head.nc)]
    by_size = [_group(s, [r for r in rows if r.size == s], nl, coarse) for s in SIZE_BUCKETS]
    strides = [int(s) for s in head.strides]
    notes = [f"{len(records) - len(with_boxes)} images without boxes (no assignment)"] if len(with_boxes) < len(
        records) else []  # fmt: skip
    return AssignmentStats(
        model=str(getattr(model, "name", "model")), split=str(split), img_size=img_size, topk=k,
        anchor_t=float(anchor_t), coarse=coarse, strides=strides,
        level_names=[f"P{int(round(np.log2(s)))}" for s in strides], class_names=names[: head.nc],
        images=len(records), images_with_boxes=len(with_boxes), boxes=len(rows),
        overall=_group("all boxes", rows, nl, coarse), by_class=by_class, by_size=by_size, per_box=rows, notes=notes,
    )  # fmt: skip
