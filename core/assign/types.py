"""Typed results of the label assigner (tensors; see ``core.assign.explorer`` for the JSON-friendly view)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LevelCells", "ImageMatrices", "Assignment"]


@dataclass
class LevelCells:
    """Cells of one level: the step-1 candidates, or the final positives, in the official order.

    All tensors have length ``n``: ``b`` image, ``a`` anchor, ``gj`` grid row, ``gi`` grid column (int64) and
    ``gt`` the index into ``targets`` (for candidates: the box that proposed the cell; for positives: the box the
    cell was assigned to). ``anchor_wh`` is ``[n, 2]`` in grid units. ``index`` is the position of the cell in the
    level's candidate list (for positives: the candidate it came from, whose ``gt`` proposed it). For positives,
    ``iou`` and ``cost`` (``[n]``) are the plain IoU and the matching cost of the assigned pair; for candidates
    they are empty.
    """

    b: Tensor
    a: Tensor
    gj: Tensor
    gi: Tensor
    gt: Tensor
    anchor_wh: Tensor
    index: Tensor
    iou: Tensor
    cost: Tensor

    def __len__(self) -> int:
        return int(self.b.numel())

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> LevelCells:
        """A level without cells."""
        i = torch.zeros(0, dtype=torch.long, device=device)
        f = torch.zeros(0, dtype=torch.float32, device=device)
        return LevelCells(i, i, i, i, i, torch.zeros(0, 2, device=device), i, f, f)

    def select(self, mask: Tensor) -> LevelCells:
        """The cells where ``mask`` (bool ``[n]`` or an index tensor) holds, order kept."""
        scored = self.iou.numel() == self.b.numel() and self.b.numel() > 0
        return LevelCells(
            self.b[mask],
            self.a[mask],
            self.gj[mask],
            self.gi[mask],
            self.gt[mask],
            self.anchor_wh[mask],
            self.index[mask],
            self.iou[mask] if scored else self.iou,
            self.cost[mask] if scored else self.cost,
        )


@dataclass
class ImageMatrices:
    """SimOTA matrices of one image, as the official code builds them (only kept on request).

    ``gt``: ``[G]`` indices into ``targets`` (targets order). The ``C`` columns are that image's candidates from
    level 0, then level 1, ...: ``level`` and ``index`` (``[C]``) say which entry of ``Assignment.candidates``
    each column is. ``iou`` and ``cost`` are ``[G, C]``; ``dynamic_k`` is ``[G]``; ``selected`` (bool ``[G, C]``)
    marks each box's ``dynamic_k`` cheapest columns before conflicts are resolved.
    """

    image: int
    gt: Tensor
    level: Tensor
    index: Tensor
    iou: Tensor
    cost: Tensor
    dynamic_k: Tensor
    selected: Tensor


@dataclass
class Assignment:
    """Result of one assignment (fine or coarse) for a batch.

    ``positives[i]`` / ``candidates[i]``: the positives and the step-1 candidates of level ``i``.
    ``dynamic_k``: ``[N]`` per target row (0 for boxes whose image has no candidate at all).
    ``matrices``: per image with boxes and candidates, when requested (``keep_matrices=True``), else ``None``.
    """

    positives: list[LevelCells]
    candidates: list[LevelCells]
    dynamic_k: Tensor
    coarse: bool
    topk: int
    matrices: list[ImageMatrices] | None = None

    def unmatched(self) -> Tensor:
        """Indices of target rows that received no positive on any level (int64, ascending)."""
        n = self.dynamic_k.numel()
        hit = torch.zeros(n, dtype=torch.bool, device=self.dynamic_k.device)
        for level in self.positives:
            hit[level.gt] = True
        return torch.nonzero(~hit).flatten()
