"""COCO box metrics with pycocotools: AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l and per-class AP.

Inputs: a COCO ground-truth dict (``core.data.io_coco.to_coco_dict``) and detections in the COCO results
format ``[{"image_id", "category_id", "bbox": [x, y, w, h] (original pixels), "score"}]``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class CocoMetrics:
    """The 12 COCOeval summary numbers (``-1`` where undefined, as pycocotools) and per-class AP."""

    stats: dict[str, float]
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    per_class_ap: dict[str, float] = field(default_factory=dict)  # AP@[.5:.95]
    summary: str = ""

    @property
    def map50(self) -> float:
        return self.stats["AP50"]

    @property
    def map(self) -> float:
        return self.stats["AP"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _empty(class_names: list[str]) -> CocoMetrics:
    return CocoMetrics(
        {k: 0.0 for k in STAT_NAMES}, {n: 0.0 for n in class_names}, {n: 0.0 for n in class_names}, "no detections\n"
    )


def evaluate_coco(gt: dict[str, Any], detections: list[dict[str, Any]]) -> CocoMetrics:
    """Run ``COCOeval(iouType='bbox')``; per-class AP from ``eval['precision']`` (mean over recall, area all,
    100 detections; classes without ground truth get ``nan``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = sorted(gt["categories"], key=lambda c: c["id"])
    class_names = [c["name"] for c in cats]
    if not detections or not gt.get("annotations"):
        return _empty(class_names)
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.summarize()
    stats = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    precision = ev.eval["precision"]  # [T iou, R recall, K class, A area, M maxdets]
    per50, per = {}, {}
    for k, cat in enumerate(cats):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        per[cat["name"]] = float(valid.mean()) if valid.size else float("nan")
        p50 = precision[0, :, k, 0, -1]
        valid50 = p50[p50 > -1]
        per50[cat["name"]] = float(valid50.mean()) if valid50.size else float("nan")
    return CocoMetrics(stats, per50, per, buf.getvalue())


def format_per_class(metrics: CocoMetrics) -> str:
    lines = [f"{'class':<20} {'AP50':>7} {'AP50-95':>8}"]
    for name in metrics.per_class_ap:
        lines.append(f"{name:<20} {metrics.per_class_ap50[name]:7.3f} {metrics.per_class_ap[name]:8.3f}")
    return "\n".join(lines)


def nan_to_none(x: float) -> float | None:
    return None if x is None or np.isnan(x) else x
