"""The vectorized assigner equals the per-image reference (tests/assign_reference.py) on random batches."""

from __future__ import annotations

import pytest
import torch

from core.assign import assign, find_candidates
from core.assign.simota import _chunk_end
from tests.assign_helpers import (
    P5_ANCHORS,
    P5_STRIDES,
    P6_ANCHORS,
    P6_STRIDES,
    assert_conflict_rule,
    assert_same_assignment,
    cells,
    random_boxes,
    random_predictions,
)
from tests.assign_reference import reference_assign

CASES = [
    # (name, anchors, strides, img, nc, coarse, topk, boxes per image, prediction scale)
    ("p5-fine-3cls", P5_ANCHORS, P5_STRIDES, 256, 3, False, 10, (0, 30), 1.0),
    ("p5-coarse-80cls", P5_ANCHORS, P5_STRIDES, 320, 80, True, 20, (1, 25), 2.0),
    ("p5aux-fine-1cls", P5_ANCHORS, P5_STRIDES, 192, 1, False, 20, (0, 40), 1.0),
    ("p6-fine-20cls", P6_ANCHORS, P6_STRIDES, 256, 20, False, 20, (2, 30), 1.5),
    ("p6-coarse-3cls", P6_ANCHORS, P6_STRIDES, 320, 3, True, 20, (0, 35), 1.0),
    # logits up to +-100: scores round to 0 or 1, inf and NaN costs (as in the official code)
    ("p5-saturated", P5_ANCHORS, P5_STRIDES, 256, 3, False, 10, (5, 30), 30.0),
    ("p6-coarse-saturated", P6_ANCHORS, P6_STRIDES, 256, 5, True, 20, (5, 30), 30.0),
]


@pytest.mark.parametrize("seed", range(len(CASES)), ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunk", [1 << 21, 700], ids=["one-chunk", "tiny-chunks"])
def test_vectorized_equals_reference(seed, chunk):
    _, anchors, strides, img, nc, coarse, topk, per_image, scale = CASES[seed]
    gen = torch.Generator().manual_seed(seed)
    preds = random_predictions(4, img, strides, nc, gen, scale)
    targets = random_boxes(4, per_image, nc, gen)
    ref = reference_assign(preds, targets, anchors, strides, img, coarse=coarse, topk=topk)
    ours = assign(preds, targets, anchors, strides, img, coarse=coarse, topk=topk, max_chunk_elements=chunk)
    assert_same_assignment(ours, ref)
    exact = assign(preds, targets, anchors, strides, img, coarse=coarse, topk=topk, keep_matrices=True)
    assert_same_assignment(exact, ref)
    assert len(exact.matrices) == len(ref.matrices)
    for m, r in zip(exact.matrices, ref.matrices):
        assert m.image == r.image and torch.equal(m.gt, r.gt)
        assert torch.equal(m.level, r.level) and torch.equal(m.index, r.index)
        assert torch.equal(m.iou, r.iou)
        assert torch.allclose(m.cost, r.cost, rtol=1e-6, atol=1e-6, equal_nan=True)
        assert torch.equal(m.selected, r.selected)


def test_dense_images_with_duplicate_cells_match_reference():
    """Many boxes per image: duplicate candidate cells tie at the k-th place and exercise the tie-break path."""
    gen = torch.Generator().manual_seed(7)
    preds = random_predictions(2, 320, P5_STRIDES, 80, gen)
    targets = random_boxes(2, (80, 100), 80, gen)
    ties = 0
    for coarse in (False, True):
        ref = reference_assign(preds, targets, P5_ANCHORS, P5_STRIDES, 320, coarse=coarse, topk=10)
        for chunk in (1 << 21, 3000):
            ours = assign(preds, targets, P5_ANCHORS, P5_STRIDES, 320, coarse=coarse, topk=10, max_chunk_elements=chunk)
            assert_same_assignment(ours, ref)
        for m in ref.matrices:  # rows whose k-th and (k+1)-th cheapest costs are equal
            srt = m.cost.sort(dim=1).values
            k = m.dynamic_k.clamp(max=srt.shape[1] - 1)
            ties += int((srt.gather(1, (k - 1)[:, None]) == srt.gather(1, k[:, None])).sum())
    assert ties > 0, "the dense case should contain k-th place ties (duplicate cells)"


def test_batch_invariance_permuting_images_permutes_results():
    gen = torch.Generator().manual_seed(3)
    preds = random_predictions(4, 256, P5_STRIDES, 3, gen)
    targets = random_boxes(4, (0, 20), 3, gen)
    base = assign(preds, targets, P5_ANCHORS, P5_STRIDES, 256)
    perm = torch.tensor([2, 0, 3, 1])  # new image i is old image perm[i]
    inv = torch.argsort(perm)
    p2 = [p[perm] for p in preds]
    t2 = targets.clone()
    t2[:, 0] = inv[targets[:, 0].long()].float()
    moved = assign(p2, t2, P5_ANCHORS, P5_STRIDES, 256)
    assert torch.equal(base.dynamic_k, moved.dynamic_k)
    for a, b in zip(base.positives, moved.positives):
        old = sorted((inv[bb].item(), aa, gj, gi, gt) for bb, aa, gj, gi, gt in cells(a))
        assert old == sorted(cells(b))
        assert torch.equal(a.iou.sort().values, b.iou.sort().values)


def test_each_image_is_assigned_independently():
    """The result for an image does not depend on the other images of the batch."""
    gen = torch.Generator().manual_seed(4)
    preds = random_predictions(3, 256, P5_STRIDES, 5, gen)
    targets = random_boxes(3, (5, 15), 5, gen)
    full = assign(preds, targets, P5_ANCHORS, P5_STRIDES, 256)
    keep = targets[:, 0] == 1
    alone_t = targets[keep].clone()
    alone_t[:, 0] = 0
    alone = assign([p[1:2] for p in preds], alone_t, P5_ANCHORS, P5_STRIDES, 256)
    row_map = torch.nonzero(keep).flatten()
    for a, b in zip(full.positives, alone.positives):
        mine = [(aa, gj, gi, gt) for bb, aa, gj, gi, gt in cells(a) if bb == 1]
        theirs = [(aa, gj, gi, row_map[gt].item()) for _, aa, gj, gi, gt in cells(b)]
        assert mine == theirs


def test_dynamic_k_and_conflict_rules_hold_on_the_matrices():
    gen = torch.Generator().manual_seed(5)
    preds = random_predictions(2, 256, P5_STRIDES, 3, gen)
    targets = random_boxes(2, (10, 30), 3, gen)
    res = assign(preds, targets, P5_ANCHORS, P5_STRIDES, 256, keep_matrices=True)
    for m in res.matrices:
        k = min(10, m.iou.shape[1])
        expected = m.iou.topk(k, dim=1).values.sum(1).int().clamp(min=1).long()
        assert torch.equal(m.dynamic_k, expected)
        assert torch.equal(m.selected.sum(1), m.dynamic_k)
        # each box took its dynamic_k cheapest columns
        kth = m.cost.sort(dim=1).values.gather(1, (m.dynamic_k - 1)[:, None])
        assert bool((m.cost[m.selected] <= kth.expand_as(m.cost)[m.selected]).all())
    assert_conflict_rule(res)


def test_candidates_follow_the_official_rule():
    t = torch.tensor([[0, 0, 0.33, 0.52, 0.2, 0.25]])
    fine = find_candidates(t, P5_ANCHORS, [(32, 32), (16, 16), (8, 8)], 0.5)
    coarse = find_candidates(t, P5_ANCHORS, [(32, 32), (16, 16), (8, 8)], 1.0)
    # level 1 (16x16): centre (5.28, 8.32) -> cell (8, 5); fine adds left (frac .28) and up (frac .32)
    lv1 = sorted({(gj, gi) for _, _, gj, gi, _ in cells(fine[1])})
    assert lv1 == [(7, 5), (8, 4), (8, 5)]
    lv1c = sorted({(gj, gi) for _, _, gj, gi, _ in cells(coarse[1])})
    assert lv1c == [(7, 5), (8, 4), (8, 5), (8, 6), (9, 5)]
    # every kept (box, anchor) pair passes the shape filter
    for lv, c in enumerate(fine):
        r = t[c.gt, 4:6] * torch.tensor([32 >> lv] * 2) / c.anchor_wh
        assert bool((torch.maximum(r, 1 / r).amax(1) < 4.0).all())


def test_chunks_respect_the_memory_bound():
    count = torch.tensor([100, 100, 300, 50, 50, 50, 2000])
    lo, spans = 0, []
    while lo < len(count):
        hi = _chunk_end(count, lo, 400)
        spans.append((lo, hi))
        assert hi - lo == 1 or (hi - lo) * int(count[lo:hi].max()) <= 400
        lo = hi
    assert spans == [(0, 2), (2, 3), (3, 6), (6, 7)]


@pytest.mark.parametrize("nc,scale", [(1, 1.0), (3, 3.0), (80, 1.0), (80, 8.0), (200, 2.0)])
def test_approximate_class_cost_stays_within_its_bound(nc, scale):
    """The certified shortcut: |S0 - x_k - exact row sum| <= bound for every (candidate, class)."""
    from core.assign.costs import approx_class_cost, decode_candidates, exact_class_cost

    gen = torch.Generator().manual_seed(nc)
    preds = random_predictions(2, 128, P5_STRIDES, nc, gen, scale)
    targets = random_boxes(2, (10, 20), nc, gen)
    table = decode_candidates(preds, find_candidates(targets, P5_ANCHORS, [(16, 16), (8, 8), (4, 4)], 0.5),
                              P5_STRIDES, 2)  # fmt: skip
    col = torch.arange(len(table)).repeat_interleave(nc)
    cls = torch.arange(nc).repeat(len(table))
    ok = ~table.saturated[col]
    diff = (approx_class_cost(table, col, cls) - exact_class_cost(table, col, cls, 1 << 20))[ok].abs()
    assert bool((diff <= table.bound[col][ok]).all())
