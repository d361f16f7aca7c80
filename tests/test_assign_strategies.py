"""Assignment strategies of YoloLoss (issue 16): each strategy's positive sets, the bounded ceiling, the default."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import core.conformance.loss as conformance_loss
import core.loss as loss_module
from core.assign import FINE_OFFSET, assign, find_candidates
from core.loss import ASSIGN_STRATEGIES, DEFAULT_ASSIGN, DEFAULT_BOUND, LossHyp, YoloLoss, coarse_ceiling
from tests.assign_helpers import P5_ANCHORS, P5_STRIDES, cells, random_boxes, random_predictions
from tests.assign_reference import ReferenceLoss

IMG = 128
NC = 3


def _batch(seed: int, boxes: tuple[int, int] = (3, 8)):
    """Lead and aux predictions that differ (independent draws), and targets, for P5 with our aux head."""
    gen = torch.Generator().manual_seed(seed)
    lead = random_predictions(2, IMG, P5_STRIDES, NC, gen, scale=2.0)
    aux = random_predictions(2, IMG, P5_STRIDES, NC, gen, scale=2.0)
    return lead, aux, random_boxes(2, boxes, NC, gen)


def _loss(strategy: str, **kw) -> YoloLoss:
    hyp = kw.pop("hyp", LossHyp().scaled(3, NC, IMG))
    return YoloLoss(NC, P5_ANCHORS, P5_STRIDES, hyp, aux=kw.pop("aux", True), strategy=strategy, **kw)


def _same_cells(a, b) -> bool:
    return all(cells(x) == cells(y) for x, y in zip(a.positives, b.positives))


def _chebyshev(level, targets: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Max-axis distance (grid cells) from each cell's centre to its gt box centre."""
    h, w = grid
    centre = targets[level.gt, 2:4] * torch.tensor([float(w), float(h)])
    return (centre - (torch.stack((level.gi, level.gj), 1).float() + 0.5)).abs().amax(1)


def test_constants_and_bad_settings():
    assert ASSIGN_STRATEGIES == ("independent", "lead-guided", "coarse-to-fine", "coarse-to-fine-bounded")
    assert DEFAULT_ASSIGN == "coarse-to-fine" and isinstance(DEFAULT_BOUND, float) and DEFAULT_BOUND > 0
    assert {"ASSIGN_STRATEGIES", "DEFAULT_ASSIGN", "DEFAULT_BOUND", "coarse_ceiling"} <= set(loss_module.__all__)
    default = YoloLoss(NC, P5_ANCHORS, P5_STRIDES, aux=True)
    assert default.strategy == DEFAULT_ASSIGN and default.bound == DEFAULT_BOUND
    with pytest.raises(ValueError, match="unknown assignment strategy 'coarse'") as err:
        YoloLoss(NC, P5_ANCHORS, P5_STRIDES, aux=True, strategy="coarse")
    assert all(s in str(err.value) for s in ASSIGN_STRATEGIES)
    for bad in (-0.5, float("nan"), float("inf"), "strong", None):
        with pytest.raises(ValueError, match="bound"):
            YoloLoss(NC, P5_ANCHORS, P5_STRIDES, aux=True, strategy="coarse-to-fine-bounded", bound=bad)
    assert _loss("coarse-to-fine-bounded", bound=3).bound == 3.0


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.nc, self.aux = NC, True
        self.register_buffer("anchors", P5_ANCHORS.clone())
        self.register_buffer("stride", P5_STRIDES.clone())
        self.conv = nn.Conv2d(3, 3, 1)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = _Head()


def test_from_model_passes_strategy_and_bound():
    loss_fn = YoloLoss.from_model(_Model(), strategy="coarse-to-fine-bounded", bound=0.5)
    assert loss_fn.aux and loss_fn.strategy == "coarse-to-fine-bounded" and loss_fn.bound == 0.5
    assert YoloLoss.from_model(_Model()).strategy == DEFAULT_ASSIGN
    with pytest.raises(ValueError, match="choose one of"):
        YoloLoss.from_model(_Model(), strategy="paper")


def test_independent_assigns_the_aux_head_from_its_own_predictions():
    lead, aux, targets = _batch(21)
    loss_fn = _loss("independent")
    assert loss_fn.topk == 20
    fine, aux_set = loss_fn.assign(lead + aux, targets, IMG)
    assert aux_set is not None and not aux_set.coarse and not fine.coarse
    own = assign(aux, targets, P5_ANCHORS, P5_STRIDES, IMG, coarse=False, topk=20)
    assert _same_cells(aux_set, own) and torch.equal(aux_set.dynamic_k, own.dynamic_k)
    # the heads' predictions differ, and so do their sets
    assert not _same_cells(aux_set, fine)
    lead_only = assign(lead, targets, P5_ANCHORS, P5_STRIDES, IMG, coarse=False, topk=20)
    assert _same_cells(fine, lead_only)
    # new lead predictions move only the lead set; new aux predictions move only the aux set
    gen = torch.Generator().manual_seed(5)
    other = [torch.randn(p.shape, generator=gen) * 2 for p in lead]
    fine2, aux2 = loss_fn.assign(other + aux, targets, IMG)
    assert _same_cells(aux2, aux_set) and not _same_cells(fine2, fine)
    fine3, aux3 = loss_fn.assign(lead + other, targets, IMG)
    assert _same_cells(fine3, fine) and not _same_cells(aux3, aux_set)
    # the loss trains the aux head on that set
    loss, items = loss_fn(lead + aux, targets, IMG)
    ref = _loss("independent")
    ref_items = ref._head_terms(aux, aux_set.positives, targets)
    hyp = loss_fn.hyp
    for key, term, gain in zip(("aux_box", "aux_obj", "aux_cls"), ref_items, (hyp.box, hyp.obj, hyp.cls)):
        assert torch.equal(items[key], (hyp.aux_weight * term * gain).detach())


def test_lead_guided_gives_the_aux_head_exactly_the_lead_fine_set():
    lead, aux, targets = _batch(22)
    loss_fn = _loss("lead-guided")
    fine, aux_set = loss_fn.assign(lead + aux, targets, IMG)
    assert aux_set is fine  # computed once
    assert _same_cells(fine, assign(lead, targets, P5_ANCHORS, P5_STRIDES, IMG, coarse=False, topk=20))
    gen = torch.Generator().manual_seed(6)
    fine2, aux2 = loss_fn.assign(lead + [torch.randn(p.shape, generator=gen) for p in aux], targets, IMG)
    assert _same_cells(aux2, fine) and _same_cells(fine2, fine)
    # with identical heads, the aux terms are the lead terms times the aux weight
    _, items = loss_fn(lead + lead, targets, IMG)
    for k in ("box", "obj", "cls"):
        assert torch.allclose(items[f"aux_{k}"], 0.25 * items[k], rtol=1e-6, atol=0)


@pytest.mark.parametrize("strategy", ["coarse-to-fine", "coarse-to-fine-bounded"])
def test_coarse_strategies_give_the_coarse_set_from_the_lead(strategy):
    lead, aux, targets = _batch(23)
    fine, aux_set = _loss(strategy).assign(lead + aux, targets, IMG)
    assert aux_set is not None and aux_set.coarse
    assert _same_cells(aux_set, assign(lead, targets, P5_ANCHORS, P5_STRIDES, IMG, coarse=True, topk=20))
    assert sum(map(len, aux_set.positives)) > sum(map(len, fine.positives))


def test_default_strategy_is_the_official_loss_bit_for_bit():
    lead, aux, targets = _batch(24)
    preds = [p.requires_grad_() for p in lead + aux]
    results = []
    for fn in (_loss(DEFAULT_ASSIGN), YoloLoss(NC, P5_ANCHORS, P5_STRIDES, LossHyp().scaled(3, NC, IMG), aux=True),
               ReferenceLoss(NC, P5_ANCHORS, P5_STRIDES, LossHyp().scaled(3, NC, IMG), aux=True)):  # fmt: skip
        loss, _ = fn(preds, targets, IMG)
        results.append((loss.detach(), torch.autograd.grad(loss, preds)))
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0][1]))


@pytest.mark.shared
def test_default_strategy_passes_the_aux_conformance_file(conformance_dir, monkeypatch, capsys):
    """The official files, with the strategy named explicitly (``core.conformance.loss`` uses the default)."""
    built = []

    class Explicit(YoloLoss):
        def __init__(self, *args, **kw) -> None:
            super().__init__(*args, strategy=DEFAULT_ASSIGN, **kw)
            built.append(self)

    monkeypatch.setattr(conformance_loss, "YoloLoss", Explicit)
    assert conformance_loss.main(str(conformance_dir / "loss_aux_ota.npz"), as_json=False) == 0
    assert "FAIL" not in capsys.readouterr().out and built and built[0].aux


@pytest.mark.parametrize("strategy", ASSIGN_STRATEGIES)
def test_without_aux_head_the_strategy_changes_nothing(strategy):
    lead, _, targets = _batch(25)
    base, base_items = _loss(DEFAULT_ASSIGN, aux=False)(lead, targets, IMG)
    loss_fn = _loss(strategy, aux=False)
    loss, items = loss_fn(lead, targets, IMG)
    assert torch.equal(loss, base) and all(torch.equal(items[k], base_items[k]) for k in items)
    assert loss_fn.assign(lead, targets, IMG)[1] is None and loss_fn.topk == 10


def test_coarse_ceiling_function():
    d = torch.tensor([0.0, 0.5, 1.0, 1.25, 1.5, 3.0])
    c = coarse_ceiling(d, 2.0)
    assert torch.equal(c[:3], torch.ones(3))
    assert torch.allclose(c[3:], torch.tensor([math.exp(-0.5), math.exp(-1.0), math.exp(-4.0)]))
    assert bool((c[1:] <= c[:-1]).all()) and bool((c > 0).all())
    assert torch.equal(coarse_ceiling(d, 0.0), torch.ones(6))
    assert bool((coarse_ceiling(d, 4.0) <= c).all())  # stronger = lower
    assert float(coarse_ceiling(1.5)) == pytest.approx(math.exp(-DEFAULT_BOUND * 0.5))
    assert coarse_ceiling(torch.zeros(2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="bound"):
        coarse_ceiling(d, -1.0)


def test_fine_cells_are_within_one_cell_and_coarse_extras_beyond():
    """The documented geometry: Chebyshev distance <= 1 on the fine set, >= 1 on what the coarse set adds."""
    targets = random_boxes(2, (20, 30), NC, torch.Generator().manual_seed(26))
    grids = [(IMG // int(s), IMG // int(s)) for s in P5_STRIDES]
    fine = find_candidates(targets, P5_ANCHORS, grids, FINE_OFFSET)
    coarse = find_candidates(targets, P5_ANCHORS, grids, 1.0)
    n_extra = 0
    for f, c, grid in zip(fine, coarse, grids):
        assert bool((_chebyshev(f, targets, grid) <= 1.0).all())
        fine_keys = set(cells(f))
        extra = torch.tensor([k not in fine_keys for k in cells(c)], dtype=torch.bool)
        n_extra += int(extra.sum())
        assert bool((_chebyshev(c, targets, grid)[extra] >= 1.0).all())
    assert n_extra > 50


def _captured_targets(loss_fn, preds, targets, monkeypatch):
    """The objectness targets written during one forward: ``(grid, positives, values)`` per non-empty level, lead
    levels first, then aux levels."""
    calls = []
    real = loss_module._write_last

    def spy(tobj, pos, values):
        calls.append(((int(tobj.shape[2]), int(tobj.shape[3])), pos, values.clone()))
        real(tobj, pos, values)

    monkeypatch.setattr(loss_module, "_write_last", spy)
    _, items = loss_fn(preds, targets, IMG)
    monkeypatch.setattr(loss_module, "_write_last", real)
    return calls, items


def test_bounded_caps_only_the_aux_objectness_targets_as_documented(monkeypatch):
    lead, aux, targets = _batch(27, boxes=(6, 12))
    hyp = LossHyp(gr=0.0, balance=(1.0, 1.0, 1.0))  # every target 1 before the cap: the cap is the target
    plain, plain_items = _captured_targets(_loss("coarse-to-fine", hyp=hyp), lead + aux, targets, monkeypatch)
    capped, items = _captured_targets(
        _loss("coarse-to-fine-bounded", hyp=hyp, bound=1.5), lead + aux, targets, monkeypatch
    )
    fine, coarse = _loss("coarse-to-fine").assign(lead + aux, targets, IMG)
    assert coarse is not None
    n_lead = sum(1 for p in fine.positives if len(p))
    assert len(plain) == len(capped) == n_lead + sum(1 for p in coarse.positives if len(p))
    assert all(torch.equal(v, torch.ones_like(v)) for _, _, v in plain)
    for k in ("box", "obj", "cls", "aux_box", "aux_cls"):
        assert torch.equal(items[k], plain_items[k])
    assert float(items["aux_obj"]) != float(plain_items["aux_obj"])
    for (_, _, lead_values), (_, _, lead_plain) in zip(capped[:n_lead], plain[:n_lead]):
        assert torch.equal(lead_values, lead_plain)  # the lead head is never capped
    grids = [(int(p.shape[2]), int(p.shape[3])) for p in lead]
    n_capped = n_free = n_shared = 0
    for grid, pos, values in capped[n_lead:]:
        d = _chebyshev(pos, targets, grid)
        assert torch.allclose(values, torch.exp(-1.5 * (d - 1).clamp(min=0)))
        assert torch.equal(values[d <= 1], torch.ones(int((d <= 1).sum())))
        assert bool((values[d > 1] < 1).all())
        n_capped, n_free = n_capped + int((d > 1).sum()), n_free + int((d <= 1).sum())
        # aux positives on a cell of the box's own fine (3-cell) candidates keep the full target
        fine_keys = set(cells(fine.candidates[grids.index(grid)]))
        shared = torch.tensor([k in fine_keys for k in cells(pos)], dtype=torch.bool)
        assert torch.equal(values[shared], torch.ones(int(shared.sum())))
        n_shared += int(shared.sum())
    assert n_capped > 0 and n_free > 0 and n_shared > 0


def test_bounded_with_zero_strength_is_coarse_to_fine_and_has_gradients():
    lead, aux, targets = _batch(28)
    preds = [p.requires_grad_() for p in lead + aux]
    loss0, _ = _loss("coarse-to-fine", bound=0.0)(preds, targets, IMG)
    loss1, _ = _loss("coarse-to-fine-bounded", bound=0.0)(preds, targets, IMG)
    assert torch.equal(loss0, loss1)
    loss2, _ = _loss("coarse-to-fine-bounded", bound=DEFAULT_BOUND)(preds, targets, IMG)
    grads = torch.autograd.grad(loss2, preds)
    assert torch.isfinite(loss2) and all(torch.isfinite(g).all() for g in grads)
    assert all(float(g[..., 4].abs().sum()) > 0 for g in grads[3:])


@pytest.mark.parametrize(
    "strategy,kind", [("independent", "fine"), ("lead-guided", "fine"), ("coarse-to-fine", "coarse")]
)
def test_explain_shows_the_aux_set_of_the_strategy(strategy, kind):
    lead, aux, targets = _batch(29, boxes=(2, 4))
    loss_fn = _loss(strategy)
    view = loss_fn.explain(lead + aux, targets, IMG)
    _, aux_set = loss_fn.assign(lead + aux, targets, IMG)
    assert aux_set is not None
    for g, box in enumerate(view.boxes):
        assert box.coarse is not None and box.coarse.kind == kind and box.fine.kind == "fine"
        assert box.coarse.n_positives == sum(int((p.gt == g).sum()) for p in aux_set.positives)
        if strategy == "lead-guided":
            assert box.coarse == box.fine
    assert view.to_json()
