"""Edge cases the official code handles (the conformance README's unshipped caseB), built by hand.

Each is checked two ways: the behaviour FACTS.md 1c describes, and vectorized == per-image reference.
Zero-logit predictions make the geometry deterministic: every prediction is its anchor box centred in its cell.
"""

from __future__ import annotations

import pytest
import torch

from core.assign import assign
from tests.assign_helpers import (
    P5_ANCHORS,
    P5_STRIDES,
    assert_conflict_rule,
    assert_same_assignment,
    cells,
    random_predictions,
    zero_predictions,
)
from tests.assign_reference import reference_assign

IMG = 320  # grids 40, 20, 10
# image 0: hand-made boxes; images 1 and 3: empty; image 2: three heavily overlapping same-class boxes
EDGE = torch.tensor(
    [
        [0, 1, 0.50, 0.50, 0.01, 0.01],  # 0: 3.2 px, fails the anchor filter on every level
        [0, 0, 0.01, 0.01, 0.05, 0.05],  # 1: centre in the first cell
        [0, 2, 0.50, 0.50, 0.90, 0.90],  # 2: 0.9 x 0.9
        [0, 1, 0.30, 0.30, 0.10, 0.10],  # 3: same centre as 4
        [0, 1, 0.30, 0.30, 0.20, 0.15],  # 4
        [0, 0, 0.50, 0.80, 0.60, 0.04],  # 5: 15:1, fails the anchor filter everywhere
        [0, 2, 0.99, 0.99, 0.05, 0.05],  # 6: centre in the last cell
        [0, 0, 1.00, 0.50, 0.05, 0.05],  # 7: centre on the right border (clamped)
        [2, 1, 0.50, 0.50, 0.30, 0.30],  # 8-10: heavily overlapping
        [2, 1, 0.51, 0.50, 0.30, 0.30],
        [2, 1, 0.50, 0.51, 0.31, 0.30],
    ]
)


def _run(preds, coarse, **kw):
    topk = kw.pop("topk", 10)
    return assign(preds, EDGE, P5_ANCHORS, P5_STRIDES, IMG, coarse=coarse, topk=topk, **kw)


def _own_cells(res, gt, level):
    return [c[:4] for c in cells(res.candidates[level]) if c[4] == gt]


@pytest.mark.parametrize("coarse", [False, True], ids=["fine", "coarse"])
@pytest.mark.parametrize("kind", ["random", "zero"])
def test_edge_batch_matches_reference(coarse, kind):
    preds = (
        random_predictions(4, IMG, P5_STRIDES, 3, torch.Generator().manual_seed(2))
        if kind == "random"
        else zero_predictions(4, IMG, P5_STRIDES, 3)
    )
    ref = reference_assign(preds, EDGE, P5_ANCHORS, P5_STRIDES, IMG, coarse=coarse, topk=10)
    for chunk in (1 << 21, 200):
        assert_same_assignment(_run(preds, coarse, max_chunk_elements=chunk), ref)
    exact = _run(preds, coarse, keep_matrices=True)
    assert_same_assignment(exact, ref)
    assert_conflict_rule(exact)


def test_empty_images_get_nothing_and_change_nothing():
    preds = random_predictions(4, IMG, P5_STRIDES, 3, torch.Generator().manual_seed(2))
    res = _run(preds, False, keep_matrices=True)
    for level in (*res.candidates, *res.positives):
        assert not bool(((level.b == 1) | (level.b == 3)).any())
    assert sorted(m.image for m in res.matrices) == [0, 2]
    # dropping the empty images (and renumbering) gives the same positives
    keep = torch.tensor([0, 2])
    t = EDGE.clone()
    t[:, 0] = torch.where(t[:, 0] == 2, 1.0, t[:, 0])
    small = assign([p[keep] for p in preds], t, P5_ANCHORS, P5_STRIDES, IMG)
    for a, b in zip(res.positives, small.positives):
        assert [(bb // 2, *rest) for bb, *rest in cells(a)] == [tuple(c) for c in cells(b)]


def test_batch_without_any_box():
    preds = random_predictions(2, IMG, P5_STRIDES, 3, torch.Generator().manual_seed(0))
    for coarse in (False, True):
        res = assign(preds, torch.zeros(0, 6), P5_ANCHORS, P5_STRIDES, IMG, coarse=coarse, keep_matrices=True)
        assert all(len(p) == 0 for p in res.positives) and all(len(c) == 0 for c in res.candidates)
        assert res.dynamic_k.numel() == 0 and res.matrices == [] and res.unmatched().numel() == 0


def test_boxes_failing_the_anchor_filter_everywhere_can_still_get_positives():
    """The 3.2 px box has no candidate of its own; SimOTA still gives it one of the 0.9 box's cells."""
    preds = zero_predictions(4, IMG, P5_STRIDES, 3)
    for coarse in (False, True):
        res = _run(preds, coarse)
        for gt in (0, 5):
            assert all(not _own_cells(res, gt, lv) for lv in range(3))
        got = [(lv, int(res.candidates[lv].gt[i])) for lv, p in enumerate(res.positives) for i, g in
               zip(p.index.tolist(), p.gt.tolist()) if g == 0]  # fmt: skip
        assert got, "the tiny box should win a cell proposed by another box"
        assert all(proposer == 2 for _, proposer in got)


def test_centres_in_first_and_last_cells_are_clamped_into_the_grid():
    preds = zero_predictions(4, IMG, P5_STRIDES, 3)
    fine, coarse = _run(preds, False), _run(preds, True)
    for res in (fine, coarse):
        for lv, (h, w) in enumerate([(40, 40), (20, 20), (10, 10)]):
            c = res.candidates[lv]
            assert bool(((c.gi >= 0) & (c.gi < w) & (c.gj >= 0) & (c.gj < h)).all())
    # first cell (level 0 centre 0.4, 0.4): no neighbour on the outer side; coarse adds the inner ones
    assert {c[2:] for c in _own_cells(fine, 1, 0)} == {(0, 0)}
    assert {c[2:] for c in _own_cells(coarse, 1, 0)} == {(0, 0), (0, 1), (1, 0)}
    # last cell (39.6, 39.6)
    assert {c[2:] for c in _own_cells(fine, 6, 0)} == {(39, 39)}
    assert {c[2:] for c in _own_cells(coarse, 6, 0)} == {(39, 39), (39, 38), (38, 39)}
    # centre exactly on the right border (gx = 40): clamped to 39; frac 0 makes left AND the clamped centre coincide
    own = _own_cells(fine, 7, 0)
    assert {c[3] for c in own} == {39}
    per_anchor = [c for c in own if c[1] == own[0][1]]
    assert sorted(c[2:] for c in per_anchor) == [(19, 39), (20, 39), (20, 39), (20, 39)]


def test_two_boxes_with_one_centre_share_candidate_cells():
    preds = random_predictions(4, IMG, P5_STRIDES, 3, torch.Generator().manual_seed(2))
    for coarse in (False, True):
        res = _run(preds, coarse)
        shared = set(_own_cells(res, 3, 0)) & set(_own_cells(res, 4, 0))
        assert shared, "same centre and a common anchor give duplicate cells in the pool"
        pool = [c[:4] for lv in range(3) for c in cells(res.candidates[lv])]
        assert len(pool) > len(set(pool))


def test_large_and_elongated_boxes_follow_the_anchor_filter():
    preds = zero_predictions(4, IMG, P5_STRIDES, 3)
    res = _run(preds, False)
    assert not _own_cells(res, 2, 0) and not _own_cells(res, 2, 1) and _own_cells(res, 2, 2)
    for lv in range(3):
        c = res.candidates[lv]
        grid = torch.tensor([40 >> lv, 40 >> lv], dtype=torch.float32)
        r = EDGE[c.gt, 4:6] * grid / c.anchor_wh
        assert bool((torch.maximum(r, 1 / r).amax(1) < 4.0).all())


def test_heavily_overlapping_boxes_resolve_conflicts_by_lowest_cost():
    for seed in range(3):
        preds = random_predictions(4, IMG, P5_STRIDES, 3, torch.Generator().manual_seed(seed))
        res = _run(preds, True, topk=20, keep_matrices=True)
        img2 = [m for m in res.matrices if m.image == 2][0]
        assert bool((img2.selected.sum(0) > 1).any()), "overlapping boxes should contest some cells"
        assert_conflict_rule(res)


def test_targets_out_of_range_are_refused():
    preds = zero_predictions(2, 64, P5_STRIDES, 3)
    for bad in ([2, 0, 0.5, 0.5, 0.1, 0.1], [0, 3, 0.5, 0.5, 0.1, 0.1], [-1, 0, 0.5, 0.5, 0.1, 0.1]):
        with pytest.raises(ValueError, match="must lie in"):
            assign(preds, torch.tensor([bad]), P5_ANCHORS, P5_STRIDES, 64)
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        assign(preds, torch.zeros(3, 5), P5_ANCHORS, P5_STRIDES, 64)
