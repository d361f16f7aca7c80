"""The YOLOv7 training loss (official ``ComputeLossOTA`` / ``ComputeLossAuxOTA``), with lead and aux terms apart.

Per level ``i`` and its positives (from ``core.assign``): box loss ``mean(1 - CIoU)`` (alpha under ``no_grad``,
eps 1e-7); objectness BCE over the whole level against ``tobj = (1 - gr) + gr * CIoU.detach().clamp(0)`` at the
positive cells (the later positive wins where a cell is positive twice), times ``balance[i]``; class BCE against
the (optionally smoothed) one-hot class, skipped when ``nc == 1``. With an auxiliary head the aux levels get the
same terms on their own positives, weighted 0.25.

Assignment strategies (``strategy=``; the paper's ablation of how the auxiliary head is labelled). Every one is a
setting of the one assigner (``core.assign.assign``, fine or coarse) and changes only the aux head's labels; the
lead head always gets the fine set from its own predictions, and topk stays 20 with an aux head for all of them.
Without an aux head the strategy changes nothing.

=========================  ===================================================================================
``independent``            aux: the FINE set built from the AUX head's own predictions (plain deep supervision)
``lead-guided``            aux: exactly the lead's fine set (the same ``Assignment`` object, computed once)
``coarse-to-fine``         aux: the COARSE set (5 cells, g = 1) from the LEAD predictions. The official
                           ``ComputeLossAuxOTA`` and the default (``DEFAULT_ASSIGN``); conformant bit for bit
``coarse-to-fine-bounded`` as ``coarse-to-fine``, and the aux objectness targets are capped:
                           ``tobj = min(tobj, coarse_ceiling(d, bound))`` at every aux positive
=========================  ===================================================================================

The bound (the paper describes a ceiling on what coarse labels may teach that decays with the distance from the
object centre; the official code has none, FACTS.md 1c "Surprises" 2). We use

    ``coarse_ceiling(d, s) = exp(-s * max(d - 1, 0))``,

``d`` the Chebyshev (max-axis) distance, in grid cells of the positive's level, from the positive cell's centre
``(gi + 0.5, gj + 0.5)`` to the gt box centre ``(x * W, y * H)``; ``s`` the strength (``bound=``, default
``DEFAULT_BOUND = 2``; 0 = no cap). Why this function:

* Chebyshev distance matches the step-1 rules, which pick neighbours axis by axis: every cell of the fine set (the
  centre cell, and the neighbour whose side the centre lies within half a cell of) has ``d <= 1``, and every cell
  that the coarse set adds (the far neighbours) has ``d >= 1``. So the ceiling is exactly 1 on each box's own
  fine cells and bites only on the far neighbours that "coarse" adds, and on cells a box wins from another box's
  candidates in SimOTA's shared pool (those can lie several cells away, and get a low ceiling).
* ``d <= 1`` is also the reach of the bounded xy decoder (``2 * sigmoid - 0.5`` puts a predicted centre less than
  one cell from its cell's centre on each axis): inside it a cell can centre its box on the object, outside it
  cannot, and the ceiling says so explicitly instead of leaving it to the CIoU.
* Exponential in the excess distance: 1 at the edge of the fine region, smooth, never 0 (a coarse positive stays
  a positive), one parameter. With ``s = 2`` a far neighbour (``1 < d <= 1.5``) is capped between 1 and
  ``exp(-1) = 0.37``: about 0.61 at the typical ``d = 1.25``.

Returned: ``(total, items)`` where ``total = (box + obj + cls + aux_*) * batch_size`` (the official return value,
differentiable) and ``items`` holds detached scalars ``box, obj, cls, aux_box, aux_obj, aux_cls`` (hyp gains
applied; aux ones are 0 without an aux head) and ``total`` (their sum, NOT multiplied by the batch size; it equals
the official ``loss_items[3]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.assign import DEFAULT_CHUNK_ELEMENTS, Assignment, AssignmentView, LevelCells, assign, explain_assignment
from core.boxes import ciou_xywh

__all__ = [
    "ASSIGN_STRATEGIES",
    "DEFAULT_ASSIGN",
    "DEFAULT_BOUND",
    "LOSS_KEYS",
    "LossHyp",
    "YoloLoss",
    "coarse_ceiling",
    "default_balance",
    "scale_hyp",
]

LOSS_KEYS = ("box", "obj", "cls", "aux_box", "aux_obj", "aux_cls", "total")
ASSIGN_STRATEGIES = ("independent", "lead-guided", "coarse-to-fine", "coarse-to-fine-bounded")
DEFAULT_ASSIGN = "coarse-to-fine"
DEFAULT_BOUND = 2.0


def coarse_ceiling(distance: Tensor | float, strength: float = DEFAULT_BOUND) -> Tensor:
    """Objectness-target ceiling of a coarse positive: ``exp(-strength * max(distance - 1, 0))``.

    Args:
        distance: Chebyshev distance, in grid cells, from the positive cell's centre to the gt box centre (any
            shape; see the module docstring for why this distance and this form).
        strength: decay rate per grid cell beyond the first (>= 0; 0 = no cap).

    Returns:
        The ceiling, same shape as ``distance`` (float32 for a Python float): 1 for ``distance <= 1``.
    """
    s = _check_bound(strength)
    d = distance if isinstance(distance, Tensor) else torch.as_tensor(distance, dtype=torch.float32)
    return torch.exp(-s * (d - 1.0).clamp(min=0.0))


def _check_bound(strength: Any) -> float:
    """The strength as a float, or a ValueError naming the problem."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"bound (ceiling strength) must be a number >= 0, got {strength!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"bound (ceiling strength) must be a finite number >= 0, got {strength!r}")
    return value


def _check_strategy(strategy: str) -> str:
    if strategy not in ASSIGN_STRATEGIES:
        raise ValueError(f"unknown assignment strategy {strategy!r}; choose one of: {', '.join(ASSIGN_STRATEGIES)}")
    return strategy


def default_balance(nl: int) -> tuple[float, ...]:
    """Objectness weight per level: [4, 1, 0.4] for 3 levels, else the first ``nl`` of [4, 1, 0.25, 0.06, 0.02]."""
    if nl == 3:
        return (4.0, 1.0, 0.4)
    if nl > 5:
        raise ValueError(f"no official objectness balance for {nl} levels")
    return (4.0, 1.0, 0.25, 0.06, 0.02)[:nl]


@dataclass(frozen=True)
class LossHyp:
    """Loss hyperparameters. ``box``/``obj``/``cls`` are the gains as used (scale raw hyp files with ``scaled``).

    ``balance``: per-level objectness weights (None = ``default_balance(nl)``; longer tuples are cut to nl).
    ``topk``: IoUs summed for dynamic k (None = 10 without aux head, 20 with one). ``aux_weight``: 0.25.
    """

    box: float = 0.05
    obj: float = 0.7
    cls: float = 0.3
    anchor_t: float = 4.0
    label_smoothing: float = 0.0
    gr: float = 1.0
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    balance: tuple[float, ...] | None = None
    aux_weight: float = 0.25
    topk: int | None = None

    @classmethod
    def from_dict(cls, hyp: Mapping[str, Any]) -> LossHyp:
        """Build from a hyp dict (e.g. an official hyp yaml); unrelated keys are ignored, focal loss is refused."""
        if float(hyp.get("fl_gamma", 0.0)) != 0.0:
            raise ValueError("fl_gamma > 0 (focal loss) is not used by YOLOv7 and not implemented")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in hyp.items() if k in names}
        if kw.get("balance") is not None:
            kw["balance"] = tuple(float(x) for x in kw["balance"])
        return cls(**kw)

    def scaled(self, nl: int, nc: int, img_size: int) -> LossHyp:
        """The train.py scaling: box *= 3/nl, cls *= nc/80 * 3/nl, obj *= (img_size/640)^2 * 3/nl."""
        return replace(
            self,
            box=self.box * 3 / nl,
            cls=self.cls * nc / 80 * 3 / nl,
            obj=self.obj * (img_size / 640) ** 2 * 3 / nl,
        )


def scale_hyp(hyp: LossHyp, nl: int, nc: int, img_size: int) -> LossHyp:
    """Function form of ``LossHyp.scaled``."""
    return hyp.scaled(nl, nc, img_size)


class YoloLoss(nn.Module):
    """YOLOv7 loss with SimOTA assignment, for P5 (3 levels), P6 (4) and either with an auxiliary head.

    Args:
        nc: number of classes.
        anchors: ``[nl, na, 2]`` anchors in grid units (pixels / stride) of each lead level.
        strides: ``[nl]`` strides in pixels.
        hyp: ``LossHyp`` (or a dict for ``LossHyp.from_dict``), gains already scaled.
        aux: whether predictions carry ``nl`` auxiliary levels after the lead levels.
        max_chunk_elements: memory bound of the assignment (see ``core.assign.simota``).
        strategy: how the aux head is labelled, one of ``ASSIGN_STRATEGIES`` (module docstring); no effect without
            an aux head.
        bound: strength of the ``coarse-to-fine-bounded`` ceiling (``coarse_ceiling``); unused by the others.
    """

    anchors: Tensor
    strides: Tensor

    def __init__(
        self,
        nc: int,
        anchors: Tensor | Sequence,
        strides: Tensor | Sequence,
        hyp: LossHyp | Mapping[str, Any] | None = None,
        aux: bool = False,
        max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
        strategy: str = DEFAULT_ASSIGN,
        bound: float = DEFAULT_BOUND,
    ) -> None:
        super().__init__()
        self.strategy = _check_strategy(strategy)
        self.bound = _check_bound(bound)
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).clone(), persistent=False)
        self.register_buffer("strides", torch.as_tensor(strides, dtype=torch.float32).clone(), persistent=False)
        if self.anchors.ndim != 3 or self.anchors.shape[0] != self.strides.numel():
            raise ValueError(f"anchors must be [nl, na, 2] with nl = len(strides); got {tuple(self.anchors.shape)}")
        self.hyp = hyp if isinstance(hyp, LossHyp) else LossHyp.from_dict(hyp or {})
        self.nc = int(nc)
        self.nl, self.na = int(self.anchors.shape[0]), int(self.anchors.shape[1])
        self.aux = bool(aux)
        balance = self.hyp.balance if self.hyp.balance is not None else default_balance(self.nl)
        if len(balance) < self.nl:
            raise ValueError(f"balance has {len(balance)} values for {self.nl} levels")
        self.balance = tuple(float(b) for b in balance[: self.nl])
        self.topk = self.hyp.topk if self.hyp.topk is not None else (20 if self.aux else 10)
        self.max_chunk_elements = max_chunk_elements

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        hyp: LossHyp | Mapping[str, Any] | None = None,
        aux: bool | None = None,
        strategy: str = DEFAULT_ASSIGN,
        bound: float = DEFAULT_BOUND,
    ) -> YoloLoss:
        """Build from a model whose detection head is ``model.head`` (``core.models.Yolo``).

        Reads ``head.nc``, ``head.anchors`` (``[nl, na, 2]`` grid units) and ``head.stride`` (``[nl]``). When ``aux``
        is None it is taken from ``head.aux``, else ``model.aux``, else whether the head has an aux branch ``m2``.
        ``strategy`` and ``bound``: as in the constructor.
        """
        head: Any = model.head
        if aux is None:
            aux = getattr(head, "aux", getattr(model, "aux", hasattr(head, "m2")))
        anchors = torch.as_tensor(head.anchors).detach().float().cpu()
        strides = torch.as_tensor(head.stride).detach().float().cpu().flatten()
        loss = cls(int(head.nc), anchors, strides, hyp, aux=bool(aux), strategy=strategy, bound=bound)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return loss.to(device)

    def assign(
        self, predictions: Sequence[Tensor], targets: Tensor, img_size: int, keep_matrices: bool = False
    ) -> tuple[Assignment, Assignment | None]:
        """The lead (fine, from the lead predictions) and, with an aux head, the aux assignment of ``strategy``.

        ``independent``: fine set from the aux levels ``predictions[nl:]``; ``lead-guided``: the lead assignment
        itself (same object); ``coarse-to-fine`` and ``coarse-to-fine-bounded``: coarse set from the lead levels.
        """

        def run(levels: Sequence[Tensor], coarse: bool) -> Assignment:
            return assign(levels, targets, self.anchors, self.strides, img_size, coarse=coarse, topk=self.topk,
                          anchor_t=self.hyp.anchor_t, keep_matrices=keep_matrices,
                          max_chunk_elements=self.max_chunk_elements)  # fmt: skip

        lead = predictions[: self.nl]
        fine = run(lead, False)
        if not self.aux:
            return fine, None
        if self.strategy == "lead-guided":
            return fine, fine
        if self.strategy == "independent":
            aux_levels = predictions[self.nl : 2 * self.nl]
            if len(aux_levels) != self.nl:
                raise ValueError(f"strategy 'independent' needs {self.nl} aux levels after the lead levels")
            return fine, run(aux_levels, False)
        return fine, run(lead, True)

    def explain(self, predictions: Sequence[Tensor], targets: Tensor, img_size: int) -> AssignmentView:
        """The explorer's per-box view (``core.assign.explain_assignment``) with this loss's settings and strategy.

        The view's ``coarse`` entry is the aux head's set under the strategy (its ``kind`` says fine or coarse);
        for ``independent`` the aux levels must follow the lead levels in ``predictions``. The bounded ceiling is
        not part of the view (it changes targets, not positives).
        """
        aux_set = {"independent": "aux-fine", "lead-guided": "lead-fine"}.get(self.strategy, "coarse")
        return explain_assignment(predictions, targets, self.anchors, self.strides, img_size, aux=self.aux,
                                  topk=self.topk, anchor_t=self.hyp.anchor_t, aux_set=aux_set)  # fmt: skip

    def forward(
        self, predictions: Sequence[Tensor], targets: Tensor, img_size: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the loss.

        Args:
            predictions: raw head outputs ``[B, na, H, W, 5 + nc]``: the nl lead levels, then (aux) the nl aux levels.
            targets: ``[N, 6]`` (image, class, x, y, w, h), xywh normalized to the (square) network input.
            img_size: network input size in pixels.

        Returns:
            ``(total, items)``: see the module docstring.
        """
        expected = 2 * self.nl if self.aux else self.nl
        if len(predictions) != expected:
            raise ValueError(f"expected {expected} prediction levels (aux={self.aux}), got {len(predictions)}")
        targets = targets.to(predictions[0].device)
        fine, coarse = self.assign(predictions, targets, img_size)
        lead = self._head_terms(predictions[: self.nl], fine.positives, targets)
        if coarse is not None:
            w = self.hyp.aux_weight
            strength = self.bound if self.strategy == "coarse-to-fine-bounded" else None
            aux = [w * t for t in self._head_terms(predictions[self.nl :], coarse.positives, targets, strength)]
        else:
            aux = [predictions[0].new_zeros(())] * 3
        gains = (self.hyp.box, self.hyp.obj, self.hyp.cls)
        terms = [t * g for t, g in zip(lead, gains)] + [t * g for t, g in zip(aux, gains)]
        loss = terms[0] + terms[1] + terms[2] + terms[3] + terms[4] + terms[5]
        items = {k: t.detach() for k, t in zip(LOSS_KEYS, terms)}
        items["total"] = loss.detach()
        return loss * predictions[0].shape[0], items

    def _head_terms(
        self, levels: Sequence[Tensor], positives: Sequence[LevelCells], targets: Tensor, ceiling: float | None = None
    ) -> list[Tensor]:
        """Unweighted (box, obj, cls) sums over the levels of one head (lead or aux).

        ``ceiling``: the ``coarse_ceiling`` strength capping the objectness targets (None = no cap, no extra ops).
        """
        eps = self.hyp.label_smoothing
        cp, cn = 1.0 - 0.5 * eps, 0.5 * eps
        zero = levels[0].new_zeros(())
        lbox, lobj, lcls = zero, zero, zero
        obj_pw = torch.tensor([self.hyp.obj_pw], device=levels[0].device)
        cls_pw = torch.tensor([self.hyp.cls_pw], device=levels[0].device)
        for i, (p, pos) in enumerate(zip(levels, positives)):
            tobj = torch.zeros_like(p[..., 0])
            obj, ps = _LevelInputs.apply(p, pos.b, pos.a, pos.gj, pos.gi)  # [B, na, H, W] and [n, 5 + nc]
            if len(pos):
                pxy = ps[:, :2].sigmoid() * 2.0 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * pos.anchor_wh
                h, w = p.shape[2], p.shape[3]
                gain = torch.tensor([w, h, w, h], device=p.device, dtype=torch.float32)
                tbox = targets[pos.gt, 2:6].float() * gain
                tbox[:, :2] -= torch.stack((pos.gi, pos.gj), dim=1)
                ciou = ciou_xywh(torch.cat((pxy, pwh), dim=1), tbox)
                lbox = lbox + (1.0 - ciou).mean()
                target = (1.0 - self.hyp.gr) + self.hyp.gr * ciou.detach().clamp(0).to(tobj.dtype)
                if ceiling is not None:
                    target = torch.minimum(target, _ceiling_at(pos, targets, w, h, ceiling).to(target.dtype))
                _write_last(tobj, pos, target)
                if self.nc > 1:
                    t = torch.full_like(ps[:, 5:], cn)
                    t[torch.arange(len(pos), device=p.device), targets[pos.gt, 1].long()] = cp
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], t, pos_weight=cls_pw)
            lobj = lobj + F.binary_cross_entropy_with_logits(obj, tobj, pos_weight=obj_pw) * self.balance[i]
        return [lbox, lobj, lcls]


class _LevelInputs(torch.autograd.Function):
    """``(p[..., 4], p[b, a, gj, gi])`` with a backward that writes one gradient tensor.

    Plain indexing gives two full-size gradients (a slice and a gather) that autograd then adds: three extra
    passes over ``[B, na, H, W, 5 + nc]``, the largest cost of the loss backward. Same values, bit for bit.
    """

    @staticmethod
    def forward(ctx: Any, p: Tensor, b: Tensor, a: Tensor, gj: Tensor, gi: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(b, a, gj, gi)
        ctx.shape = p.shape
        return p[..., 4].clone(), p[b, a, gj, gi]

    @staticmethod
    def backward(ctx: Any, g_obj: Tensor | None, g_pos: Tensor | None) -> tuple[Tensor | None, ...]:
        b, a, gj, gi = ctx.saved_tensors
        ref = g_obj if g_obj is not None else g_pos
        assert ref is not None
        grad = ref.new_zeros(ctx.shape)
        if g_obj is not None:
            grad[..., 4] = g_obj
        if g_pos is not None and b.numel():
            grad.index_put_((b, a, gj, gi), g_pos, accumulate=True)
        return grad, None, None, None, None


def _ceiling_at(pos: LevelCells, targets: Tensor, w: int, h: int, strength: float) -> Tensor:
    """``coarse_ceiling`` at each positive: Chebyshev distance from its cell centre to its gt centre, grid cells."""
    centre = targets[pos.gt, 2:4].float() * torch.tensor([w, h], device=targets.device, dtype=torch.float32)
    cell = torch.stack((pos.gi, pos.gj), dim=1).float() + 0.5
    return coarse_ceiling((centre - cell).abs().amax(dim=1), strength)


def _write_last(tobj: Tensor, pos: LevelCells, values: Tensor) -> None:
    """``tobj[b, a, gj, gi] = values`` where, for a cell listed twice, the later entry wins (official CPU order)."""
    _, na, h, w = tobj.shape
    key = ((pos.b * na + pos.a) * h + pos.gj) * w + pos.gi
    cells, inverse = torch.unique(key, return_inverse=True)
    last = torch.full_like(cells, -1).scatter_reduce(0, inverse, torch.arange(len(key), device=key.device), "amax")
    tobj.view(-1)[cells] = values[last]
