"""Box helpers used by the assigner and the loss, written so that their float32 results are bit-identical to the
official YOLOv7 helpers (same operations in the same order), which the assignment's tie-breaking relies on.

Box formats: ``xywh`` is (centre x, centre y, width, height); ``xyxy`` is (x1, y1, x2, y2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["xywh_to_xyxy", "box_iou", "box_iou_rows", "ciou_xywh"]


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert ``[..., 4]`` xywh boxes to xyxy (half sizes are computed as ``w / 2``, as in the official code)."""
    xy, wh = boxes[..., :2], boxes[..., 2:4]
    half = wh / 2
    return torch.cat((xy - half, xy + half), dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise plain IoU of xyxy boxes.

    Args:
        boxes1: ``[N, 4]`` xyxy.
        boxes2: ``[M, 4]`` xyxy.

    Returns:
        ``[N, M]`` IoU, computed as ``inter / (area1 + area2 - inter)`` like ``torchvision.ops.box_iou``.
    """
    return box_iou_rows(boxes1, boxes2.unsqueeze(0).expand(boxes1.shape[0], -1, -1))


def box_iou_rows(gt: Tensor, cand: Tensor) -> Tensor:
    """IoU of one box per row against a row of boxes.

    Args:
        gt: ``[R, 4]`` xyxy, one box per row.
        cand: ``[R, C, 4]`` xyxy, the boxes each row is compared with.

    Returns:
        ``[R, C]`` IoU with the same float32 operation order as ``box_iou`` (so equal boxes give equal bits).
    """
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    area_c = (cand[..., 2] - cand[..., 0]) * (cand[..., 3] - cand[..., 1])
    g = gt.unsqueeze(1)
    iw = (torch.minimum(g[..., 2], cand[..., 2]) - torch.maximum(g[..., 0], cand[..., 0])).clamp(min=0)
    ih = (torch.minimum(g[..., 3], cand[..., 3]) - torch.maximum(g[..., 1], cand[..., 1])).clamp(min=0)
    inter = iw * ih
    return inter / (area_g.unsqueeze(1) + area_c - inter)


def ciou_xywh(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (Zheng et al. 2020) of paired xywh boxes, with the trade-off weight alpha under ``no_grad``.

    Args:
        pred: ``[N, 4]`` xywh (differentiable).
        target: ``[N, 4]`` xywh.
        eps: added to the heights, the union and the enclosing diagonal (1e-7, as in YOLOv7).

    Returns:
        ``[N]`` CIoU = IoU - (rho^2 / c^2 + alpha * v), in [-1.5, 1].
    """
    p1, p2 = pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2
    t1, t2 = target[:, :2] - target[:, 2:4] / 2, target[:, :2] + target[:, 2:4] / 2
    overlap = (torch.minimum(p2, t2) - torch.maximum(p1, t1)).clamp(min=0)
    inter = overlap[:, 0] * overlap[:, 1]
    w1, h1 = p2[:, 0] - p1[:, 0], p2[:, 1] - p1[:, 1] + eps
    w2, h2 = t2[:, 0] - t1[:, 0], t2[:, 1] - t1[:, 1] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclose = torch.maximum(p2, t2) - torch.minimum(p1, t1)
    c2 = enclose[:, 0] ** 2 + enclose[:, 1] ** 2 + eps
    centre = (t1 + t2 - p1 - p2) ** 2
    rho2 = (centre[:, 0] + centre[:, 1]) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)
