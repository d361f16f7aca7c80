"""The assignment as the studio draws it: per ground-truth box and level, its candidates and its positives.

``explain_assignment`` runs the fine (lead) and, with an auxiliary head, the coarse (aux) assignment on a batch and
returns an ``AssignmentView``: plain dataclasses of ints, floats, bools, strings and lists, so that
``view.to_dict()`` is ``json.dumps``-able as is. Cells are given as (level, anchor, gj, gi) with the anchor size
in grid units and the cell's stride, so a front end can draw them in input pixels:
cell x0 = gi * stride, y0 = gj * stride, anchor box = anchor_wh * stride.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import Tensor

from core.assign.simota import assign
from core.assign.types import Assignment

__all__ = ["AUX_SETS", "CellView", "LevelView", "SetView", "BoxView", "AssignmentView", "explain_assignment"]

AUX_SETS = ("coarse", "lead-fine", "aux-fine")


@dataclass
class CellView:
    """One grid cell + anchor seen from one box.

    ``proposed_by``: the box (target row) whose step-1 rule proposed this cell. ``iou`` / ``cost``: of THIS box
    against the prediction decoded at the cell. ``selected``: among this box's ``dynamic_k`` cheapest (before
    conflicts). ``positive``: finally assigned to this box.
    """

    level: int
    anchor: int
    gj: int
    gi: int
    anchor_wh: tuple[float, float]
    proposed_by: int
    iou: float
    cost: float
    selected: bool
    positive: bool


@dataclass
class LevelView:
    """One level of one box: the cells it proposed and the cells it received (which may be other boxes')."""

    level: int
    stride: float
    grid: tuple[int, int]
    candidates: list[CellView]
    positives: list[CellView]


@dataclass
class SetView:
    """One label set of one box. ``kind``: ``fine`` (lead head; also the aux head under the ``independent`` and
    ``lead-guided`` strategies, stored in ``BoxView.coarse``) or ``coarse`` (aux head, the official strategy)."""

    kind: str
    dynamic_k: int
    n_candidates: int
    n_positives: int
    levels: list[LevelView]


@dataclass
class BoxView:
    """A ground-truth box: ``index`` into targets, class, box (normalized xywh and input-pixel xyxy)."""

    index: int
    image: int
    cls: int
    xywh: tuple[float, float, float, float]
    xyxy_pixels: tuple[float, float, float, float]
    fine: SetView
    coarse: SetView | None


@dataclass
class AssignmentView:
    """The whole batch: settings, every box, and the boxes without any positive."""

    img_size: int
    strides: list[float]
    grids: list[tuple[int, int]]
    anchors: list[list[tuple[float, float]]]
    topk: int
    anchor_t: float
    boxes: list[BoxView]
    unmatched_fine: list[int]
    unmatched_coarse: list[int] | None

    def to_dict(self) -> dict:
        """Nested dict of plain Python values (JSON-ready)."""
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        """``json.dumps(self.to_dict(), **kwargs)``."""
        return json.dumps(self.to_dict(), **kwargs)


def explain_assignment(
    predictions: Sequence[Tensor],
    targets: Tensor,
    anchors: Tensor,
    strides: Tensor,
    img_size: int,
    *,
    aux: bool = False,
    topk: int | None = None,
    anchor_t: float = 4.0,
    aux_set: str = "coarse",
) -> AssignmentView:
    """Run the assignment on a batch and describe it per box and level.

    Args:
        predictions: raw outputs ``[B, na, H, W, 5 + nc]``; only the first ``nl = len(strides)`` (lead) levels are
            read. Aux levels may follow; they never influence assignment.
        targets: ``[N, 6]`` (image, class, x, y, w, h) normalized to the square input.
        anchors: ``[nl, na, 2]`` grid units; strides: ``[nl]``; img_size: input size in pixels.
        aux: also compute the aux head's set (the view's ``coarse`` entries).
        topk: IoUs summed for dynamic k (default 20 with aux, else 10).
        anchor_t: anchor filter threshold.
        aux_set: which set the aux head gets (``core.loss`` strategies): ``"coarse"`` (coarse set from the lead
            levels, the official one), ``"lead-fine"`` (the lead's fine set itself) or ``"aux-fine"`` (fine set
            from the aux levels ``predictions[nl:2 nl]``, which must then be given).
    """
    if aux_set not in AUX_SETS:
        raise ValueError(f"unknown aux_set {aux_set!r}; choose one of: {', '.join(AUX_SETS)}")
    nl = len(strides)
    lead = list(predictions[:nl])
    topk = topk if topk is not None else (20 if aux else 10)

    def run(levels: Sequence[Tensor], coarse: bool) -> Assignment:
        return assign(levels, targets, anchors, strides, img_size, coarse=coarse, topk=topk, anchor_t=anchor_t,
                      keep_matrices=True)  # fmt: skip

    fine = run(lead, False)
    coarse: Assignment | None = None
    if aux and aux_set == "lead-fine":
        coarse = fine
    elif aux and aux_set == "aux-fine":
        aux_levels = list(predictions[nl : 2 * nl])
        if len(aux_levels) != nl:
            raise ValueError(f"aux_set 'aux-fine' needs {nl} aux levels after the {nl} lead levels")
        coarse = run(aux_levels, False)
    elif aux:
        coarse = run(lead, True)
    grids = [(int(p.shape[2]), int(p.shape[3])) for p in lead]
    stride_list = [float(s) for s in strides]
    t = targets.detach().float().cpu()
    boxes = []
    fine_sets = _set_views("fine", fine, len(t), stride_list, grids)
    coarse_sets = None
    if coarse is not None:
        coarse_sets = _set_views("coarse" if coarse.coarse else "fine", coarse, len(t), stride_list, grids)
    for g in range(len(t)):
        x, y, w, h = (float(v) for v in t[g, 2:6])
        s = float(img_size)
        xyxy = ((x - w / 2) * s, (y - h / 2) * s, (x + w / 2) * s, (y + h / 2) * s)
        boxes.append(
            BoxView(
                g,
                int(t[g, 0]),
                int(t[g, 1]),
                (x, y, w, h),
                xyxy,
                fine_sets[g],
                coarse_sets[g] if coarse_sets is not None else None,
            )
        )
    return AssignmentView(
        img_size=int(img_size),
        strides=stride_list,
        grids=grids,
        anchors=[[(float(a[0]), float(a[1])) for a in level] for level in anchors.detach().float().cpu()],
        topk=topk,
        anchor_t=float(anchor_t),
        boxes=boxes,
        unmatched_fine=fine.unmatched().tolist(),
        unmatched_coarse=coarse.unmatched().tolist() if coarse is not None else None,
    )


def _set_views(kind: str, result: Assignment, n_boxes: int, strides: list[float], grids: list) -> list[SetView]:
    """Per box: its own candidates (with its IoU/cost on them) and its positives, level by level."""
    nl = len(result.candidates)
    cand = [{k: getattr(c, k).cpu() for k in ("b", "a", "gj", "gi", "gt", "anchor_wh")} for c in result.candidates]
    pos = [
        {k: getattr(c, k).cpu() for k in ("a", "gj", "gi", "gt", "anchor_wh", "index", "iou", "cost")}
        for c in result.positives
    ]
    # matrix row and column of every (box) and (level, candidate index)
    row_of: dict[int, tuple[int, int]] = {}
    col_of: dict[tuple[int, int], int] = {}
    mats = result.matrices or []
    for m_i, m in enumerate(mats):
        for r, g in enumerate(m.gt.tolist()):
            row_of[g] = (m_i, r)
        for j, (lv, ix) in enumerate(zip(m.level.tolist(), m.index.tolist())):
            col_of[(lv, ix)] = j
    positive_keys = {(lv, int(ix), int(g)) for lv in range(nl) for ix, g in zip(pos[lv]["index"], pos[lv]["gt"])}
    levels: list[list[list[CellView]]] = [[[] for _ in range(nl)] for _ in range(n_boxes)]
    for lv in range(nl):
        c = cand[lv]
        for ix in range(len(c["b"])):
            g = int(c["gt"][ix])
            m_i, r = row_of[g]
            col = col_of[(lv, ix)]
            m = mats[m_i]
            levels[g][lv].append(
                CellView(
                    lv,
                    int(c["a"][ix]),
                    int(c["gj"][ix]),
                    int(c["gi"][ix]),
                    (float(c["anchor_wh"][ix, 0]), float(c["anchor_wh"][ix, 1])),
                    g,
                    float(m.iou[r, col]),
                    float(m.cost[r, col]),
                    bool(m.selected[r, col]),
                    (lv, ix, g) in positive_keys,
                )
            )
    received: list[list[list[CellView]]] = [[[] for _ in range(nl)] for _ in range(n_boxes)]
    for lv in range(nl):
        p = pos[lv]
        for n in range(len(p["gt"])):
            g, ix = int(p["gt"][n]), int(p["index"][n])
            received[g][lv].append(
                CellView(
                    lv,
                    int(p["a"][n]),
                    int(p["gj"][n]),
                    int(p["gi"][n]),
                    (float(p["anchor_wh"][n, 0]), float(p["anchor_wh"][n, 1])),
                    int(cand[lv]["gt"][ix]),
                    float(p["iou"][n]),
                    float(p["cost"][n]),
                    _was_selected(mats, row_of, col_of, g, lv, ix),
                    True,
                )
            )
    k = result.dynamic_k.cpu().tolist()
    out = []
    for g in range(n_boxes):
        lvls = [LevelView(lv, strides[lv], tuple(grids[lv]), levels[g][lv], received[g][lv]) for lv in range(nl)]
        out.append(SetView(kind, int(k[g]), sum(len(x) for x in levels[g]), sum(len(x) for x in received[g]), lvls))
    return out


def _was_selected(mats, row_of, col_of, g: int, lv: int, ix: int) -> bool:
    """Whether box ``g`` had candidate (lv, ix) among its dynamic-k cheapest (False: it won it by conflict only)."""
    m_i, r = row_of[g]
    return bool(mats[m_i].selected[r, col_of[(lv, ix)]])
