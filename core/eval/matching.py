"""Box matching, precision/recall curves and the confusion matrix (our own fast metrics).

Boxes are ``xyxy`` in original image pixels. ``IOU_THRESHOLDS`` are COCO's 0.50:0.05:0.95. AP here uses
101-point interpolation like COCO; the numbers we *report* come from pycocotools (``core.eval.coco_eval``),
these curves and the P/R at the best F1 are for the plots and the per-epoch precision/recall columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)


def match_image(det: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """``[n_det, 10]`` bool: is each detection (rows ``x1 y1 x2 y2 score class``, by descending score) a true
    positive at each IoU threshold. Greedy: each detection takes the best unmatched same-class box at >= 0.5."""
    correct = torch.zeros(det.shape[0], len(IOU_THRESHOLDS), dtype=torch.bool)
    if not det.shape[0] or not gt_boxes.shape[0]:
        return correct
    iou = box_iou(det[:, :4], gt_boxes)
    iou[det[:, 5:6].long() != gt_classes.view(1, -1).long()] = 0
    taken = torch.zeros(gt_boxes.shape[0], dtype=torch.bool)
    for i in torch.argsort(det[:, 4], descending=True).tolist():
        row = iou[i].clone()
        row[taken] = 0
        best, j = row.max(0)
        if best >= IOU_THRESHOLDS[0]:
            taken[j] = True
            correct[i] = best >= IOU_THRESHOLDS
    return correct


def _interp_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated AP as COCO computes it: at each recall r in 0, 0.01, ..., 1 the best precision
    reached at a recall >= r (0 when r is never reached)."""
    if recall.size == 0:
        return 0.0
    envelope = np.flip(np.maximum.accumulate(np.flip(precision)))
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    q = np.where(idx < recall.size, envelope[np.minimum(idx, recall.size - 1)], 0.0)
    return float(q.mean())


@dataclass
class PRCurves:
    """Per class: precision and recall against confidence (``conf`` grid), AP at each IoU threshold, and the
    precision and recall at the confidence of the best mean F1."""

    conf: np.ndarray  # [1000] confidence grid
    precision: np.ndarray  # [nc, 1000] at IoU 0.5
    recall: np.ndarray  # [nc, 1000]
    f1: np.ndarray  # [nc, 1000]
    ap: np.ndarray  # [nc, 10]
    n_gt: np.ndarray  # [nc]
    best_conf: float
    p: np.ndarray  # [nc] at best_conf
    r: np.ndarray  # [nc]

    @property
    def mp(self) -> float:
        present = self.n_gt > 0
        return float(self.p[present].mean()) if present.any() else 0.0

    @property
    def mr(self) -> float:
        present = self.n_gt > 0
        return float(self.r[present].mean()) if present.any() else 0.0


def pr_curves(correct: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, gt_cls: np.ndarray, nc: int) -> PRCurves:
    """Precision/recall/F1 curves and AP per class from all detections of a dataset.

    ``correct``: ``[n, 10]`` bool; ``conf``, ``pred_cls``: ``[n]``; ``gt_cls``: class of every ground-truth box.
    """
    grid = np.linspace(0, 1, 1000)
    order = np.argsort(-conf, kind="stable")
    correct, conf, pred_cls = correct[order], conf[order], pred_cls[order]
    n_gt = np.bincount(gt_cls.astype(np.int64), minlength=nc)[:nc]
    precision = np.zeros((nc, grid.size))
    recall = np.zeros((nc, grid.size))
    ap = np.zeros((nc, correct.shape[1] if correct.ndim == 2 else 10))
    for c in range(nc):
        sel = pred_cls == c
        if not sel.any() or n_gt[c] == 0:
            continue
        tp = np.cumsum(correct[sel], 0)
        fp = np.cumsum(~correct[sel], 0)
        rec = tp / n_gt[c]
        prec = tp / (tp + fp)
        # curves against confidence (conf decreasing along the detections, so interpolate on -conf)
        recall[c] = np.interp(-grid, -conf[sel], rec[:, 0], left=0)
        precision[c] = np.interp(-grid, -conf[sel], prec[:, 0], left=1)
        for t in range(ap.shape[1]):
            ap[c, t] = _interp_ap(rec[:, t], prec[:, t])
    f1 = 2 * precision * recall / (precision + recall + 1e-16)
    present = n_gt > 0
    i = int(f1[present].mean(0).argmax()) if present.any() else 0
    return PRCurves(grid, precision, recall, f1, ap, n_gt, float(grid[i]), precision[:, i], recall[:, i])


class ConfusionMatrix:
    """``(nc+1) x (nc+1)`` counts: rows = true class (last row: background, i.e. false positives), columns =
    predicted class (last column: missed). Detections with score >= ``conf``, matched at IoU >= ``iou``."""

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.45) -> None:
        self.nc, self.conf, self.iou = nc, conf, iou
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def update(self, det: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor) -> None:
        det = det[det[:, 4] >= self.conf]
        gt_c = gt_classes.long().tolist()
        det_c = det[:, 5].long().tolist()
        if not len(gt_c):
            for c in det_c:
                self.matrix[self.nc, c] += 1
            return
        matched_gt: set[int] = set()
        matched_det: set[int] = set()
        if len(det_c):
            iou = box_iou(gt_boxes, det[:, :4])
            pairs = (iou >= self.iou).nonzero().tolist()
            pairs.sort(key=lambda p: -float(iou[p[0], p[1]]))
            for g, d in pairs:
                if g in matched_gt or d in matched_det:
                    continue
                matched_gt.add(g)
                matched_det.add(d)
                self.matrix[gt_c[g], det_c[d]] += 1
        for g, c in enumerate(gt_c):
            if g not in matched_gt:
                self.matrix[c, self.nc] += 1
        for d, c in enumerate(det_c):
            if d not in matched_det:
                self.matrix[self.nc, c] += 1
