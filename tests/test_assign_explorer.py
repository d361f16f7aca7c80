"""The per-box view for the assignment explorer: complete, consistent with the assigner, JSON-ready."""

from __future__ import annotations

import json

import torch

from core.assign import assign, explain_assignment
from tests.assign_helpers import (
    P5_ANCHORS,
    P5_STRIDES,
    P6_ANCHORS,
    P6_STRIDES,
    random_boxes,
    random_predictions,
    zero_predictions,
)
from tests.test_assign_edge_cases import EDGE, IMG


def test_view_matches_the_assignment_and_serializes():
    gen = torch.Generator().manual_seed(21)
    preds = random_predictions(2, 256, P6_STRIDES, 3, gen) * 2  # lead + aux levels
    targets = random_boxes(2, (2, 8), 3, gen)
    view = explain_assignment(preds, targets, P6_ANCHORS, P6_STRIDES, 256, aux=True)
    data = json.loads(view.to_json())
    assert len(data["boxes"]) == len(targets) and data["topk"] == 20 and len(data["grids"]) == 4
    for kind, coarse in (("fine", False), ("coarse", True)):
        res = assign(preds[:4], targets, P6_ANCHORS, P6_STRIDES, 256, coarse=coarse, topk=20)
        assert sum(b[kind]["n_positives"] for b in data["boxes"]) == sum(len(p) for p in res.positives)
        assert sum(b[kind]["n_candidates"] for b in data["boxes"]) == sum(len(c) for c in res.candidates)
        assert [b[kind]["dynamic_k"] for b in data["boxes"]] == res.dynamic_k.tolist()
        for box in view.boxes:
            s = box.fine if kind == "fine" else box.coarse
            assert sum(len(lv.candidates) for lv in s.levels) == s.n_candidates
            for lv in s.levels:
                assert all(c.proposed_by == box.index for c in lv.candidates)
                assert all(c.positive and 0 <= c.iou <= 1 for c in lv.positives)
                # a box's own candidates marked positive are exactly its positives proposed by itself
                own_pos = sorted((c.anchor, c.gj, c.gi) for c in lv.candidates if c.positive)
                assert own_pos == sorted((c.anchor, c.gj, c.gi) for c in lv.positives if c.proposed_by == box.index)


def test_unmatched_boxes_and_borrowed_cells_are_reported():
    preds = zero_predictions(4, IMG, P5_STRIDES, 3)
    view = explain_assignment(preds, EDGE, P5_ANCHORS, P5_STRIDES, IMG, aux=False)
    tiny = view.boxes[0]
    assert tiny.fine.n_candidates == 0 and tiny.fine.n_positives >= 1 and tiny.coarse is None
    assert all(c.proposed_by == 2 for lv in tiny.fine.levels for c in lv.positives)
    res = assign(preds, EDGE, P5_ANCHORS, P5_STRIDES, IMG)
    assert view.unmatched_fine == res.unmatched().tolist() and 5 in view.unmatched_fine
    assert view.unmatched_coarse is None


def test_loss_explain_uses_its_settings():
    from core.loss import YoloLoss

    preds = zero_predictions(4, IMG, P5_STRIDES, 3) * 2
    view = YoloLoss(3, P5_ANCHORS, P5_STRIDES, aux=True).explain(preds, EDGE, IMG)
    assert view.topk == 20 and view.unmatched_coarse is not None
    assert all(b.coarse is not None and b.coarse.kind == "coarse" for b in view.boxes)
