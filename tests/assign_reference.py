"""Test oracle: a straightforward, per-image version of the YOLOv7 assignment (FACTS.md 1c), loop for loop.

Kept deliberately simple and independent of ``core.assign.simota``: one Python loop over images, one over boxes
for the top-k, dense ``[G, C, nc]`` class-cost tensors as the official code builds them, and
``torchvision.ops.box_iou``. ``core.assign.assign`` must give identical positives (``tests/test_assign*.py``), and
``benchmarks/bench_assign_loss.py`` times it against the vectorized version.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from core.assign import Assignment, ImageMatrices, LevelCells
from core.loss import YoloLoss


def reference_candidates(
    targets: Tensor, anchors: Tensor, grids: Sequence[tuple[int, int]], g: float, anchor_t: float
) -> list[dict[str, Tensor]]:
    """find_3 / find_5 per level: dict of b, a, gj, gi, gt, anchor_wh, in [centre, left, up, right, down] blocks."""
    out = []
    n = targets.shape[0]
    for level, (h, w) in enumerate(grids):
        na = anchors.shape[1]
        gain = torch.tensor([w, h, w, h], dtype=torch.float32)
        rows = targets[:, 2:6].float() * gain
        a = torch.arange(na).repeat_interleave(n)  # anchor-major
        gt = torch.arange(n).repeat(na)
        t = rows.repeat(na, 1)
        r = t[:, 2:4] / anchors[level][a]
        ok = torch.max(r, 1.0 / r).max(dim=1).values < anchor_t
        a, gt, t = a[ok], gt[ok], t[ok]
        gxy = t[:, :2]
        gxi = gain[:2] - gxy
        masks = [
            torch.ones(len(t), dtype=torch.bool),
            (gxy[:, 0] % 1 < g) & (gxy[:, 0] > 1),
            (gxy[:, 1] % 1 < g) & (gxy[:, 1] > 1),
            (gxi[:, 0] % 1 < g) & (gxi[:, 0] > 1),
            (gxi[:, 1] % 1 < g) & (gxi[:, 1] > 1),
        ]
        shifts = [(0.0, 0.0), (g, 0.0), (0.0, g), (-g, 0.0), (0.0, -g)]
        parts: dict[str, list[Tensor]] = {k: [] for k in ("b", "a", "gj", "gi", "gt", "anchor_wh")}
        for m, (dx, dy) in zip(masks, shifts):
            xy = gxy[m] - torch.tensor([dx, dy], dtype=torch.float32)
            ij = xy.long()
            parts["gi"].append(ij[:, 0].clamp(0, w - 1))
            parts["gj"].append(ij[:, 1].clamp(0, h - 1))
            parts["a"].append(a[m])
            parts["gt"].append(gt[m])
            parts["b"].append(targets[gt[m], 0].long())
            parts["anchor_wh"].append(anchors[level][a[m]])
        out.append({k: torch.cat(v) for k, v in parts.items()})
    return out


@torch.no_grad()
def reference_assign(
    predictions: Sequence[Tensor],
    targets: Tensor,
    anchors: Tensor,
    strides: Tensor,
    img_size: int,
    *,
    coarse: bool = False,
    topk: int = 10,
    anchor_t: float = 4.0,
) -> Assignment:
    """Per-image SimOTA; same result type as ``core.assign.assign`` (with matrices)."""
    targets = targets.float()
    grids = [(p.shape[2], p.shape[3]) for p in predictions]
    cand = reference_candidates(targets, anchors.float(), grids, 1.0 if coarse else 0.5, anchor_t)
    nl = len(predictions)
    per_level: list[dict[str, list[Tensor]]] = [
        {k: [] for k in ("b", "a", "gj", "gi", "gt", "anchor_wh", "index", "iou", "cost")} for _ in range(nl)
    ]
    dynamic_k = torch.zeros(targets.shape[0], dtype=torch.long)
    matrices = []
    for img in range(predictions[0].shape[0]):
        gt_idx = torch.nonzero(targets[:, 0] == img).flatten()
        if len(gt_idx) == 0:
            continue
        this = targets[gt_idx]
        gt_box = this[:, 2:6] * img_size
        gt_xyxy = torch.cat((gt_box[:, :2] - gt_box[:, 2:] / 2, gt_box[:, :2] + gt_box[:, 2:] / 2), 1)
        cols = {k: [] for k in ("level", "index", "box", "cls", "obj")}
        for i, (p, c) in enumerate(zip(predictions, cand)):
            index = torch.nonzero(c["b"] == img).flatten()
            fg = p[c["b"][index], c["a"][index], c["gj"][index], c["gi"][index]]
            grid = torch.stack((c["gi"][index], c["gj"][index]), 1)
            xy = (fg[:, :2].sigmoid() * 2.0 - 0.5 + grid) * strides[i]
            wh = (fg[:, 2:4].sigmoid() * 2) ** 2 * c["anchor_wh"][index] * strides[i]
            cols["box"].append(torch.cat((xy - wh / 2, xy + wh / 2), 1))
            cols["cls"].append(fg[:, 5:])
            cols["obj"].append(fg[:, 4:5])
            cols["level"].append(torch.full((len(index),), i))
            cols["index"].append(index)
        col = {k: torch.cat(v) for k, v in cols.items()}
        n_col = len(col["level"])
        if n_col == 0:
            continue
        iou = box_iou(gt_xyxy, col["box"])
        iou_cost = -torch.log(iou + 1e-8)
        k_sum = torch.topk(iou, min(topk, n_col), dim=1).values.sum(1)
        ks = torch.clamp(k_sum.int(), min=1)
        g = len(gt_idx)
        onehot = F.one_hot(this[:, 1].long(), col["cls"].shape[1]).float().unsqueeze(1).repeat(1, n_col, 1)
        score = col["cls"].float().unsqueeze(0).repeat(g, 1, 1).sigmoid_()
        score = score * col["obj"].unsqueeze(0).repeat(g, 1, 1).sigmoid_()
        y = score.sqrt_()
        cls_cost = F.binary_cross_entropy_with_logits(torch.log(y / (1 - y)), onehot, reduction="none").sum(-1)
        cost = cls_cost + 3.0 * iou_cost
        match = torch.zeros_like(cost)
        for r in range(g):
            _, pick = torch.topk(cost[r], k=int(ks[r]), largest=False)
            match[r, pick] = 1.0
        chosen = match > 0  # before conflicts
        multi = match.sum(0) > 1
        if multi.any():
            _, best = torch.min(cost[:, multi], dim=0)
            match[:, multi] = 0.0
            match[best, multi] = 1.0
        fg_cols = match.sum(0) > 0
        owner = match[:, fg_cols].argmax(0)
        dynamic_k[gt_idx] = ks.long()
        matrices.append(ImageMatrices(img, gt_idx, col["level"], col["index"], iou, cost, ks.long(), chosen))
        taken = torch.nonzero(fg_cols).flatten()
        for lv in range(nl):
            m = col["level"][taken] == lv
            j, ix, o = taken[m], col["index"][taken[m]], owner[m]
            d = per_level[lv]
            for k in ("b", "a", "gj", "gi", "anchor_wh"):
                d[k].append(cand[lv][k][ix])
            d["gt"].append(gt_idx[o])
            d["index"].append(ix)
            d["iou"].append(iou[o, j])
            d["cost"].append(cost[o, j])
    positives = []
    for d in per_level:
        if d["b"]:
            cat = {k: torch.cat(v) for k, v in d.items()}
            positives.append(LevelCells(**cat))
        else:
            positives.append(LevelCells.empty())
    cands = [LevelCells(**c, index=torch.arange(len(c["b"])), iou=torch.zeros(0), cost=torch.zeros(0)) for c in cand]
    return Assignment(positives, cands, dynamic_k, coarse, topk, matrices)


class ReferenceLoss(YoloLoss):
    """``YoloLoss`` with the per-image reference assignment (same loss terms): the benchmark's baseline."""

    def assign(self, predictions, targets, img_size, keep_matrices=False):  # type: ignore[override]
        lead = predictions[: self.nl]
        kw = dict(topk=self.topk, anchor_t=self.hyp.anchor_t)
        fine = reference_assign(lead, targets, self.anchors, self.strides, img_size, coarse=False, **kw)
        if not self.aux:
            return fine, None
        return fine, reference_assign(lead, targets, self.anchors, self.strides, img_size, coarse=True, **kw)
