"""Shared builders for the assignment / loss tests: official anchors, random boxes, controlled predictions."""

from __future__ import annotations

import torch

P5_STRIDES = torch.tensor([8.0, 16.0, 32.0])
P6_STRIDES = torch.tensor([8.0, 16.0, 32.0, 64.0])
P5_ANCHORS = torch.tensor(
    [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]], dtype=torch.float32
).view(3, 3, 2) / P5_STRIDES.view(3, 1, 1)
P6_ANCHORS = torch.tensor(
    [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137], [140, 301, 303, 264, 238, 542],
     [436, 615, 739, 380, 925, 792]], dtype=torch.float32
).view(4, 3, 2) / P6_STRIDES.view(4, 1, 1)  # fmt: skip


def random_boxes(batch: int, per_image: tuple[int, int], nc: int, gen: torch.Generator, shuffle: bool = True):
    """``[N, 6]`` targets: log-uniform size and aspect ratio, inside the image; rows shuffled across images."""
    rows = []
    for b in range(batch):
        k = int(torch.randint(per_image[0], per_image[1] + 1, (1,), generator=gen))
        s = torch.exp(torch.empty(k).uniform_(-4.5, -0.3, generator=gen))
        ar = torch.exp(torch.empty(k).uniform_(-1.2, 1.2, generator=gen))
        w, h = (s * ar.sqrt()).clamp(max=0.98), (s / ar.sqrt()).clamp(max=0.98)
        x = w / 2 + torch.rand(k, generator=gen) * (1 - w)
        y = h / 2 + torch.rand(k, generator=gen) * (1 - h)
        cls = torch.randint(0, nc, (k,), generator=gen).float()
        rows.append(torch.stack((torch.full((k,), float(b)), cls, x, y, w, h), 1))
    t = torch.cat(rows) if rows else torch.zeros(0, 6)
    if shuffle:
        t = t[torch.randperm(len(t), generator=gen)]
    return t


def random_predictions(batch: int, img: int, strides: torch.Tensor, nc: int, gen: torch.Generator, scale=1.0):
    """Raw outputs ``[B, 3, img/s, img/s, 5 + nc]`` per level, N(0, scale^2)."""
    return [torch.randn(batch, 3, img // int(s), img // int(s), 5 + nc, generator=gen) * scale for s in strides]


def zero_predictions(batch: int, img: int, strides: torch.Tensor, nc: int):
    """All-zero logits: every prediction is its anchor box centred in its cell, every class score equal."""
    return [torch.zeros(batch, 3, img // int(s), img // int(s), 5 + nc) for s in strides]


def cells(level) -> list[tuple[int, int, int, int, int]]:
    """The (b, a, gj, gi, gt) tuples of a ``LevelCells`` in order."""
    return list(zip(*(getattr(level, f).tolist() for f in ("b", "a", "gj", "gi", "gt"))))


def assert_same_assignment(ours, ref) -> None:
    """Vectorized == reference: positives exactly (cells, order, gt) and k; IoU exact; cost to the last bits."""
    assert torch.equal(ours.dynamic_k, ref.dynamic_k)
    for lv, (a, r) in enumerate(zip(ours.positives, ref.positives)):
        assert cells(a) == cells(r), f"level {lv} positives differ"
        assert torch.equal(a.index, r.index)
        assert torch.equal(a.iou, r.iou)
        assert torch.allclose(a.cost, r.cost, rtol=1e-6, atol=1e-6, equal_nan=True)
    for a, r in zip(ours.candidates, ref.candidates):
        assert cells(a) == cells(r)
        assert torch.equal(a.anchor_wh, r.anchor_wh)


def assert_conflict_rule(res) -> None:
    """On kept matrices: a column taken by one box goes to it; one taken by several goes to the box of the image
    with the lowest cost on it (first on ties), even if that box did not take it; untaken columns stay negative."""
    pos = {(lv, ix): gt for lv, p in enumerate(res.positives) for ix, gt in zip(p.index.tolist(), p.gt.tolist())}
    n_pos = sum(len(p) for p in res.positives)
    assert len(pos) == n_pos  # one owner per candidate column
    for m in res.matrices:
        for c in range(m.iou.shape[1]):
            takers = torch.nonzero(m.selected[:, c]).flatten()
            key = (int(m.level[c]), int(m.index[c]))
            if len(takers) == 0:
                assert key not in pos
            elif len(takers) == 1:
                assert pos[key] == int(m.gt[takers[0]])
            else:
                assert pos[key] == int(m.gt[torch.argmin(m.cost[:, c])])
