"""SimOTA matching costs: decoding of the candidates and their class cost, exact or certified-approximate.

The official class cost of box ``g`` (class ``k``) on candidate ``c`` is the float32 sum over all ``nc`` classes of
``BCE(x[c, j], j == k)`` with ``x = log(y / (1 - y))``, ``y = sqrt(sigmoid(cls) * sigmoid(obj))``. Summing a full
row per (candidate, class) is what makes it bit-identical (``exact_class_cost``), but it costs ``nc`` additions
per matrix entry. Since ``BCE(x, 0) - BCE(x, 1) = x``, ``approx_class_cost`` computes ``S0[c] - x[c, k]`` with
``S0`` the row sum of ``BCE(x, 0)`` (one gather per entry), and ``CandidateTable.bound`` bounds its distance to
the exact value, so the selection can use the cheap value wherever the decision is certain and fall back to exact
values where it is not (see ``core.assign.simota``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from core.assign.types import LevelCells
from core.boxes import xywh_to_xyxy

__all__ = ["CandidateTable", "decode_candidates", "exact_class_cost", "approx_class_cost", "IOU_COST_WEIGHT"]

IOU_COST_WEIGHT = 3.0
_UNIT_ROUNDOFF = 2.0**-24


@dataclass
class CandidateTable:
    """All candidates of a batch as matrix columns, grouped by image (level, then candidate order within one).

    ``level``, ``index`` (position in ``candidates[level]``), ``image``: ``[C]`` int64. ``boxes``: ``[C, 4]`` xyxy
    input pixels. ``logit``: ``[C, nc]`` the ``x`` above; ``bce_neg`` / ``bce_pos``: ``[C, nc]`` per-class BCE
    against 0 / 1 (bit-identical to ``binary_cross_entropy_with_logits``: ``x - logsigmoid(x)`` and
    ``0 * x - logsigmoid(x)``). ``neg_sum``: ``[C]`` float32 row sums of ``bce_neg``. ``bound``: ``[C]`` max
    distance between the approximate and the exact cost of any box on that column; ``saturated``: ``[C]`` bool,
    columns with infinite class terms (bound 0, always computed exactly). ``start`` / ``count``: ``[B]`` first
    column and number of columns of each image.
    """

    level: Tensor
    index: Tensor
    image: Tensor
    boxes: Tensor
    logit: Tensor
    bce_neg: Tensor
    bce_pos: Tensor
    neg_sum: Tensor
    bound: Tensor
    saturated: Tensor
    start: Tensor
    count: Tensor

    def __len__(self) -> int:
        return int(self.level.numel())


def decode_candidates(
    predictions: Sequence[Tensor], cands: Sequence[LevelCells], strides: Tensor, batch: int
) -> CandidateTable:
    """Decode the candidates of every level from the (lead) predictions and sort them by image (stable).

    Args:
        predictions: ``[B, na, H, W, 5 + nc]`` per level.
        cands: step-1 candidates per level.
        strides: ``[nl]`` pixels.
        batch: B.
    """
    levels, index, images, boxes, logits = [], [], [], [], []
    for i, (p, c) in enumerate(zip(predictions, cands)):
        fg = p[c.b, c.a, c.gj, c.gi].float()  # [n, 5 + nc]
        grid = torch.stack((c.gi, c.gj), dim=1)
        stride = strides[i].float()
        xy = (fg[:, :2].sigmoid() * 2.0 - 0.5 + grid) * stride
        wh = (fg[:, 2:4].sigmoid() * 2) ** 2 * c.anchor_wh * stride
        boxes.append(xywh_to_xyxy(torch.cat((xy, wh), dim=-1)))
        # contiguous copies first: strided inputs take another kernel path whose exp/log can differ in the last bit
        y = (fg[:, 5:].contiguous().sigmoid() * fg[:, 4:5].contiguous().sigmoid()).sqrt()
        logits.append(torch.log(y / (1 - y)))
        levels.append(torch.full_like(c.b, i))
        index.append(torch.arange(len(c), device=c.b.device))
        images.append(c.b)
    image = torch.cat(images)
    order = torch.sort(image, stable=True).indices
    x = torch.cat(logits)[order]
    log_sig = F.logsigmoid(x)
    bce_pos = 0.0 * x - log_sig  # == binary_cross_entropy_with_logits(x, 1) bit for bit, NaN at x = +-inf included
    bce_neg = x - log_sig  # == binary_cross_entropy_with_logits(x, 0), bit for bit
    neg_sum = bce_neg.sum(-1)
    nc = x.shape[1]
    # Any summation order of n non-negative float32 terms is within (n - 1) * u * sum of the true sum; the approximate
    # value adds 2 more roundings, and adding the IoU term (<= 3 * 18.43) one more on each side. Doubled for safety.
    top = neg_sum + bce_pos.amax(-1)
    bound = 2 * _UNIT_ROUNDOFF * ((2 * nc + 4) * top + 2 * (top + 3 * 18.5))
    # saturated scores (y rounds to 0 or 1, so x = -+inf) give inf/NaN terms: such columns always get exact costs
    saturated = ~torch.isfinite(bound)
    bound = bound.masked_fill(saturated, 0.0)
    image = image[order]
    count = torch.bincount(image, minlength=batch)
    return CandidateTable(
        level=torch.cat(levels)[order],
        index=torch.cat(index)[order],
        image=image,
        boxes=torch.cat(boxes)[order],
        logit=x,
        bce_neg=bce_neg,
        bce_pos=bce_pos,
        neg_sum=neg_sum,
        bound=bound,
        saturated=saturated,
        start=torch.cumsum(count, 0) - count,
        count=count,
    )


def exact_class_cost(table: CandidateTable, col: Tensor, cls: Tensor, max_elements: int) -> Tensor:
    """Bit-exact class cost for ``[P]`` (column, class) pairs: a full row sum per pair, chunked to ``max_elements``."""
    nc = table.bce_neg.shape[1]
    out = torch.empty(col.shape, dtype=table.bce_neg.dtype, device=col.device)
    step = max(1, max_elements // max(nc, 1))
    for lo in range(0, col.numel(), step):
        c, k = col[lo : lo + step], cls[lo : lo + step]
        rows = table.bce_neg[c]
        rows[torch.arange(len(c), device=c.device), k] = table.bce_pos[c, k]
        out[lo : lo + len(c)] = rows.sum(-1)
    return out


def approx_class_cost(table: CandidateTable, col: Tensor, cls: Tensor) -> Tensor:
    """Class cost ``S0[c] - x[c, k]`` for any shape of ``col`` (with ``cls`` broadcast to it).

    Within ``table.bound[c]`` of ``exact_class_cost`` (after adding the IoU term).
    """
    return table.neg_sum[col] - table.logit.view(-1)[col * table.logit.shape[1] + cls]
