"""Step 1 of the assignment: candidate cells per ground-truth box (the official find_3 / find_5 rule).

For every level, each box is paired with every anchor whose shape passes the ratio filter ``anchor_t``; each pair
proposes the cell holding the box centre plus the neighbour cells whose side the centre lies within ``g`` of:
``g = 0.5`` (fine, lead head) gives the centre and the 2 nearest neighbours, ``g = 1.0`` (coarse, auxiliary head)
gives the centre and all 4 neighbours, except where a neighbour would leave the grid (YOLOv5 rule, then clamped).
Float operations follow the official order, so borderline centres fall on the same side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from core.assign.types import LevelCells

__all__ = ["FINE_OFFSET", "COARSE_OFFSET", "find_candidates"]

FINE_OFFSET = 0.5
COARSE_OFFSET = 1.0

# Neighbour blocks in the official order: centre, left, up, right, down (multiplied by g).
_OFFSETS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1))


def find_candidates(
    targets: Tensor,
    anchors: Tensor,
    grids: Sequence[tuple[int, int]],
    g: float,
    anchor_t: float = 4.0,
) -> list[LevelCells]:
    """Candidate cells of every level, in the official order.

    Args:
        targets: ``[N, 6]`` rows (image, class, x, y, w, h), xywh normalized to the network input.
        anchors: ``[nl, na, 2]`` anchor sizes in grid units of their level.
        grids: ``(H, W)`` of every level.
        g: neighbour offset, ``FINE_OFFSET`` (0.5) or ``COARSE_OFFSET`` (1.0).
        anchor_t: a (box, anchor) pair is kept if max(r, 1/r) < anchor_t for the w and h ratios r.

    Returns:
        One ``LevelCells`` per level; ``gt`` is the proposing target row. Order: blocks [centre, left, up, right,
        down], each in (anchor-major, target) order. ``iou``/``cost`` are empty.
    """
    device = targets.device
    targets = targets.float()
    out: list[LevelCells] = []
    offsets = torch.tensor(_OFFSETS, device=device).float() * g
    for level, (h, w) in enumerate(grids):
        anc = anchors[level].to(device=device, dtype=torch.float32)
        gain = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        t = targets[:, 2:6] * gain  # [N, 4] grid units
        ratio = t[None, :, 2:4] / anc[:, None]  # [na, N, 2]
        keep = torch.maximum(ratio, 1.0 / ratio).amax(dim=2) < anchor_t
        a_idx, t_idx = torch.nonzero(keep, as_tuple=True)  # anchor-major, then target order
        gxy = t[t_idx, :2]
        gxi = gain[:2] - gxy
        near_low = (gxy % 1 < g) & (gxy > 1)
        near_high = (gxi % 1 < g) & (gxi > 1)
        use = torch.stack(
            (torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1])
        )  # [5, n]
        block, pair = torch.nonzero(use, as_tuple=True)  # block-major, then pair order
        gij = (gxy[pair] - offsets[block]).long()
        gi = gij[:, 0].clamp(0, w - 1)
        gj = gij[:, 1].clamp(0, h - 1)
        a = a_idx[pair]
        gt = t_idx[pair]
        b = targets[gt, 0].long()
        empty = torch.zeros(0, device=device)
        out.append(LevelCells(b, a, gj, gi, gt, anc[a], torch.arange(len(b), device=device), empty, empty))
    return out
