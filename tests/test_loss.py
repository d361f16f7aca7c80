"""YoloLoss: hyperparameters, lead/aux terms, edge cases, and equality with the per-image reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.assign import LevelCells
from core.boxes import ciou_xywh
from core.loss import LOSS_KEYS, LossHyp, YoloLoss, default_balance
from tests.assign_helpers import P5_ANCHORS, P5_STRIDES, P6_ANCHORS, P6_STRIDES, random_boxes, random_predictions
from tests.assign_reference import ReferenceLoss


def _grads(loss_fn, preds, targets, img):
    ps = [p.detach().clone().requires_grad_() for p in preds]
    loss, items = loss_fn(ps, targets, img)
    loss.backward()
    return loss.detach(), items, [p.grad for p in ps]


def test_hyp_scaling_matches_train_py():
    p5 = LossHyp(box=0.05, obj=0.7, cls=0.3).scaled(nl=3, nc=3, img_size=320)
    assert (p5.box, p5.cls, p5.obj) == pytest.approx((0.05, 0.01125, 0.175))
    p6 = LossHyp(box=0.05, obj=0.7, cls=0.3).scaled(nl=4, nc=3, img_size=320)
    assert (p6.box, p6.cls, p6.obj) == pytest.approx((0.0375, 0.0084375, 0.13125))
    assert default_balance(3) == (4.0, 1.0, 0.4) and default_balance(4) == (4.0, 1.0, 0.25, 0.06)


def test_hyp_from_dict():
    hyp = LossHyp.from_dict({"box": 0.1, "lr0": 0.01, "mosaic": 1.0, "anchor_t": 3.0, "balance": [1, 2, 3]})
    assert hyp.box == 0.1 and hyp.anchor_t == 3.0 and hyp.balance == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError):
        LossHyp.from_dict({"fl_gamma": 1.5})


MODELS = [(P5_ANCHORS, P5_STRIDES, False), (P5_ANCHORS, P5_STRIDES, True), (P6_ANCHORS, P6_STRIDES, True)]


@pytest.mark.parametrize("anchors,strides,aux", MODELS, ids=["p5", "p5-aux", "p6-aux"])
def test_loss_equals_reference_and_items_add_up(anchors, strides, aux):
    gen = torch.Generator().manual_seed(11)
    nc = 4
    preds = random_predictions(2, 256, strides, nc, gen) * (2 if aux else 1)
    targets = random_boxes(2, (1, 12), nc, gen)
    hyp = LossHyp().scaled(len(strides), nc, 256)
    fast = YoloLoss(nc, anchors, strides, hyp, aux=aux)
    assert fast.topk == (20 if aux else 10)
    loss, items, grads = _grads(fast, preds, targets, 256)
    ref_loss, ref_items, ref_grads = _grads(ReferenceLoss(nc, anchors, strides, hyp, aux=aux), preds, targets, 256)
    assert torch.equal(loss, ref_loss)
    for a, b in zip(grads, ref_grads):
        assert torch.equal(a, b)
    assert set(items) == set(LOSS_KEYS)
    assert all(not v.requires_grad for v in items.values())
    parts = sum(items[k] for k in LOSS_KEYS[:-1])
    assert torch.allclose(parts, items["total"]) and torch.allclose(loss, items["total"] * 2)
    for k in ("aux_box", "aux_obj", "aux_cls"):
        assert (float(items[k]) > 0) == aux
    if aux:
        assert all(g.abs().sum() > 0 for g in grads[len(strides) :]), "gradients reach the aux levels"


def test_aux_predictions_never_influence_assignment():
    """Lead-guided: both label sets come from the lead levels only (P5 with our aux head: 3 + 3 levels)."""
    gen = torch.Generator().manual_seed(12)
    preds = random_predictions(2, 256, P5_STRIDES, 3, gen) * 2
    targets = random_boxes(2, (3, 10), 3, gen)
    loss_fn = YoloLoss(3, P5_ANCHORS, P5_STRIDES, aux=True)
    fine, coarse = loss_fn.assign(preds, targets, 256)
    other = preds[:3] + [torch.randn_like(p) for p in preds[3:]]
    fine2, coarse2 = loss_fn.assign(other, targets, 256)
    for a, b in zip(fine.positives + coarse.positives, fine2.positives + coarse2.positives):
        assert torch.equal(a.b, b.b) and torch.equal(a.gi, b.gi) and torch.equal(a.gt, b.gt)
    assert sum(len(p) for p in coarse.positives) > sum(len(p) for p in fine.positives)


@pytest.mark.parametrize("aux", [False, True])
def test_batch_without_boxes_has_only_objectness(aux):
    preds = random_predictions(2, 128, P5_STRIDES, 3, torch.Generator().manual_seed(0)) * (2 if aux else 1)
    loss, items, grads = _grads(YoloLoss(3, P5_ANCHORS, P5_STRIDES, aux=aux), preds, torch.zeros(0, 6), 128)
    assert torch.isfinite(loss) and float(loss) > 0
    assert float(items["box"]) == 0 and float(items["cls"]) == 0 and float(items["obj"]) > 0
    assert float(items["aux_box"]) == 0 and float(items["aux_cls"]) == 0 and (float(items["aux_obj"]) > 0) == aux
    for g in grads:
        assert torch.isfinite(g).all()
        assert g[..., 4].abs().sum() > 0
        assert float(g[..., :4].abs().sum()) == 0 and float(g[..., 5:].abs().sum()) == 0


def test_one_class_has_no_class_loss():
    gen = torch.Generator().manual_seed(5)
    preds = random_predictions(2, 128, P5_STRIDES, 1, gen) * 2
    targets = random_boxes(2, (2, 6), 1, gen)
    loss, items, grads = _grads(YoloLoss(1, P5_ANCHORS, P5_STRIDES, aux=True), preds, targets, 128)
    assert float(items["cls"]) == 0 and float(items["aux_cls"]) == 0 and float(items["box"]) > 0
    assert all(float(g[..., 5].abs().sum()) == 0 for g in grads)


def _manual_cells(b, a, gj, gi, gt, anchor_wh):
    n = len(b)
    i = torch.tensor
    return LevelCells(i(b), i(a), i(gj), i(gi), i(gt), torch.tensor(anchor_wh).float(), torch.arange(n),
                      torch.zeros(n), torch.zeros(n))  # fmt: skip


def test_duplicate_positives_count_twice_and_the_later_tobj_wins():
    torch.manual_seed(0)
    p = torch.randn(1, 3, 4, 4, 7)  # nc = 2
    targets = torch.tensor([[0, 0, 0.40, 0.40, 0.30, 0.30], [0, 1, 0.45, 0.35, 0.20, 0.40]])
    loss_fn = YoloLoss(2, P5_ANCHORS[:1], P5_STRIDES[:1], LossHyp(balance=(1.0,)))
    pos = _manual_cells([0, 0, 0], [1, 1, 0], [1, 1, 2], [1, 1, 0], [0, 1, 1], [[2.0, 4.0], [2.0, 4.0], [1.0, 1.0]])
    lbox, lobj, lcls = loss_fn._head_terms([p], [pos], targets)
    ps = p[0, pos.a, pos.gj, pos.gi]
    pbox = torch.cat((ps[:, :2].sigmoid() * 2 - 0.5, (ps[:, 2:4].sigmoid() * 2) ** 2 * pos.anchor_wh), 1)
    tbox = targets[pos.gt, 2:6] * 4
    tbox[:, :2] -= torch.stack((pos.gi, pos.gj), 1)
    ciou = ciou_xywh(pbox, tbox)
    assert torch.allclose(lbox, (1 - ciou).mean())  # the shared cell counts twice
    tobj = torch.zeros(1, 3, 4, 4)
    tobj[0, 1, 1, 1] = ciou[1].clamp(min=0)  # the later write (gt 1) wins
    tobj[0, 0, 2, 0] = ciou[2].clamp(min=0)
    assert torch.allclose(lobj, F.binary_cross_entropy_with_logits(p[..., 4], tobj))
    t = torch.zeros(3, 2)
    t[torch.arange(3), targets[pos.gt, 1].long()] = 1.0
    assert torch.allclose(lcls, F.binary_cross_entropy_with_logits(ps[:, 5:], t))


def test_label_smoothing_targets():
    torch.manual_seed(1)
    p = torch.randn(1, 3, 4, 4, 9)  # nc = 4
    targets = torch.tensor([[0, 2, 0.40, 0.40, 0.30, 0.30]])
    loss_fn = YoloLoss(4, P5_ANCHORS[:1], P5_STRIDES[:1], LossHyp(label_smoothing=0.2, balance=(1.0,)))
    pos = _manual_cells([0], [1], [1], [1], [0], [[2.0, 4.0]])
    _, _, lcls = loss_fn._head_terms([p], [pos], targets)
    t = torch.tensor([[0.1, 0.1, 0.9, 0.1]])
    assert torch.allclose(lcls, F.binary_cross_entropy_with_logits(p[0, 1, 1, 1, 5:][None], t))


def test_wrong_number_of_levels_is_refused():
    preds = random_predictions(1, 64, P5_STRIDES, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="prediction levels"):
        YoloLoss(2, P5_ANCHORS, P5_STRIDES, aux=True)(preds, torch.zeros(0, 6), 64)


class _Head(nn.Module):
    def __init__(self, aux: bool) -> None:
        super().__init__()
        self.nc, self.nl, self.na, self.aux = 3, 4, 3, aux
        self.register_buffer("anchors", P6_ANCHORS.clone())
        self.register_buffer("stride", P6_STRIDES.clone())
        self.conv = nn.Conv2d(3, 3, 1)


class _Model(nn.Module):
    def __init__(self, aux: bool) -> None:
        super().__init__()
        self.head = _Head(aux)


def test_from_model_reads_the_head():
    loss_fn = YoloLoss.from_model(_Model(aux=True), LossHyp().scaled(4, 3, 640))
    assert loss_fn.aux and loss_fn.nl == 4 and loss_fn.na == 3 and loss_fn.nc == 3 and loss_fn.topk == 20
    assert torch.equal(loss_fn.anchors, P6_ANCHORS) and torch.equal(loss_fn.strides, P6_STRIDES)
    assert loss_fn.balance == (4.0, 1.0, 0.25, 0.06)
    assert not YoloLoss.from_model(_Model(aux=True), aux=False).aux
    assert not YoloLoss.from_model(_Model(aux=False)).aux


def test_with_a_real_model_p5_with_our_aux_head():
    """``core.models.Yolo`` output feeds the loss as is; gradients reach the lead and the aux head."""
    models = pytest.importorskip("core.models")
    model = models.build_model("yolov7-tiny", num_classes=3, aux=True).train()
    loss_fn = YoloLoss.from_model(model, LossHyp().scaled(model.num_levels, 3, 64))
    assert loss_fn.aux and loss_fn.nl == 3 and loss_fn.topk == 20
    out = model(torch.randn(1, 3, 64, 64))
    loss, items = loss_fn(out, torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.2], [0, 2, 0.3, 0.6, 0.1, 0.4]]), 64)
    loss.backward()
    assert torch.isfinite(loss) and float(items["aux_box"]) > 0
    assert model.head.m[0].weight.grad.abs().sum() > 0 and model.head.m2[0].weight.grad.abs().sum() > 0
