"""``yolov7-studio conformance loss FILE.npz``: our assignment + loss against the official ComputeLoss(Aux)OTA.

The file format is that of ``shared/yolov7/conformance/loss_ota.npz`` / ``loss_aux_ota.npz`` (see the README
there). Every case in the file (the prefix before the first ``/``) is run with the settings stored in it; a case
with ``2 * nl`` prediction arrays (``aux/`` sets present) is a model with an auxiliary head. Checks:

* loss and loss items (official [lbox, lobj, lcls, total], ours summed lead + aux): relative 1e-5;
* gradients of the loss w.r.t. every prediction tensor: ``allclose`` (rtol 1e-4, atol 1e-6 x max |grad|);
* positives per level as multisets of (image, anchor, gj, gi, gt), fine (``lead/``) and coarse (``aux/``): exact;
* step-1 candidates per level (gt, b, a, gj, gi, anchor): exact, in order;
* per-image IoU (atol 1e-6), cost (rtol 1e-6, atol 1e-5) and dynamic k (exact) matrices.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.assign import Assignment
from core.loss import LossHyp, YoloLoss

__all__ = ["Check", "CaseReport", "load_cases", "run_case", "main"]

LOSS_RTOL = 1e-5
GRAD_RTOL, GRAD_ATOL_REL = 1e-4, 1e-6
IOU_ATOL = 1e-6
COST_RTOL, COST_ATOL = 1e-6, 1e-5


@dataclass
class Check:
    """One comparison: a name, whether it passed, and a short human-readable detail."""

    name: str
    passed: bool
    detail: str


@dataclass
class CaseReport:
    """All checks of one case, plus the figures worth printing."""

    case: str
    model: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(passed), detail))


def load_cases(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of a reference file, grouped by case (prefix before the first '/'), keys without the prefix."""
    cases: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            case, _, rest = key.partition("/")
            cases.setdefault(case, {})[rest] = data[key]
    return cases


def _scalar(a: np.ndarray) -> float:
    return float(np.asarray(a).reshape(-1)[0])


def _rel_ok(ours: float, ref: float) -> tuple[bool, float]:
    err = abs(ours - ref) / max(abs(ref), 1e-12)
    return (abs(ours - ref) <= LOSS_RTOL * abs(ref) + 1e-9) and math.isfinite(ours), err


def run_case(case: str, arrays: dict[str, np.ndarray]) -> CaseReport:
    """Run one case through ``YoloLoss`` and compare everything the file holds."""
    n_pred = len([k for k in arrays if re.fullmatch(r"p\d+", k)])
    strides = torch.from_numpy(arrays["strides"]).float()
    nl = strides.numel()
    aux = n_pred == 2 * nl
    family = {3: "P5", 4: "P6"}.get(nl, f"{nl}-level")
    report = CaseReport(case, f"{family}{' + aux head' if aux else ''}, {n_pred} prediction arrays")
    preds = [torch.from_numpy(arrays[f"p{i}"]).float().requires_grad_() for i in range(n_pred)]
    targets = torch.from_numpy(arrays["targets"]).float()
    anchors = torch.from_numpy(arrays["anchors_grid_units"]).float()
    img_size = int(_scalar(arrays["img_size"]))
    hyp = LossHyp(
        box=_scalar(arrays["hyp_box"]),
        obj=_scalar(arrays["hyp_obj"]),
        cls=_scalar(arrays["hyp_cls"]),
        anchor_t=_scalar(arrays["anchor_t"]),
        label_smoothing=_scalar(arrays["label_smoothing"]),
        gr=_scalar(arrays["gr"]),
        balance=tuple(float(b) for b in arrays["balance"][:nl]),
    )
    nc = preds[0].shape[-1] - 5
    loss_fn = YoloLoss(nc, anchors, strides, hyp, aux=aux)
    loss, items = loss_fn(preds, targets, img_size)
    loss.backward()
    loss = loss.detach()

    ok, err = _rel_ok(float(loss), _scalar(arrays["loss"]))
    report.add("loss", ok, f"ours {float(loss):.7f} official {_scalar(arrays['loss']):.7f} rel.err {err:.1e}")
    ours_items = [
        float(items["box"] + items["aux_box"]),
        float(items["obj"] + items["aux_obj"]),
        float(items["cls"] + items["aux_cls"]),
        float(items["total"]),
    ]
    for name, o, r in zip(("lbox", "lobj", "lcls", "total"), ours_items, arrays["loss_items"].tolist()):
        ok, err = _rel_ok(o, r)
        report.add(f"loss_items.{name}", ok, f"ours {o:.7f} official {r:.7f} rel.err {err:.1e}")
    for i, p in enumerate(preds):
        ref = torch.from_numpy(arrays[f"grad_p{i}"])
        diff = float((p.grad - ref).abs().max()) if p.grad is not None else float("inf")
        atol = GRAD_ATOL_REL * float(ref.abs().max()) + 1e-12
        ok = p.grad is not None and torch.allclose(p.grad, ref, rtol=GRAD_RTOL, atol=atol)
        report.add(f"grad_p{i}", ok, f"max |diff| {diff:.2e} (max |grad| {float(ref.abs().max()):.2e})")

    fine, coarse = loss_fn.assign([p.detach() for p in preds], targets, img_size, keep_matrices=True)
    _compare_set(report, "lead", fine, arrays, nl)
    if coarse is not None or any(k.startswith("aux/") for k in arrays):
        if coarse is None:
            report.add("aux", False, "file has an aux/ set but the case has no aux head")
        else:
            _compare_set(report, "aux", coarse, arrays, nl)
    return report


def _compare_set(report: CaseReport, name: str, result: Assignment, arrays: dict[str, np.ndarray], nl: int) -> None:
    """Positives, candidates and matrices of one label set (``lead`` = fine, ``aux`` = coarse)."""
    fields5 = ("b", "a", "gj", "gi", "gt")
    for i in range(nl):
        pos = result.positives[i]
        ours = Counter(zip(*(getattr(pos, f).tolist() for f in fields5)))
        ref = Counter(zip(*(arrays[f"{name}/level{i}/{f}"].tolist() for f in fields5)))
        same_order = all(np.array_equal(getattr(pos, f).numpy(), arrays[f"{name}/level{i}/{f}"]) for f in fields5)
        missing, extra = sum((ref - ours).values()), sum((ours - ref).values())
        report.add(
            f"{name}.positives.level{i}",
            ours == ref,
            f"{sum(ours.values())} ours / {sum(ref.values())} official, {missing} missing, {extra} extra"
            + (", same order" if same_order else ", different order"),
        )
        key = f"{name}/cand_level{i}/"
        if key + "gt" in arrays:
            c = result.candidates[i]
            same = all(np.array_equal(getattr(c, f).numpy(), arrays[key + f]) for f in fields5)
            same = same and np.array_equal(c.anchor_wh.numpy(), arrays[key + "anchor_wh"])
            report.add(f"{name}.candidates.level{i}", same, f"{len(c)} ours / {len(arrays[key + 'gt'])} official")
    mats = {m.image: m for m in (result.matrices or [])}
    ref_images = sorted(int(hit.group(1)) for k in arrays if (hit := re.fullmatch(rf"{name}/image(\d+)/cost", k)))
    if set(mats) != set(ref_images):
        report.add(f"{name}.images", False, f"matrices for images {sorted(mats)} ours, {ref_images} official")
    for b in ref_images:
        if b not in mats:
            continue
        m = mats[b]
        key = f"{name}/image{b}/"
        r_iou = torch.from_numpy(arrays[key + "pair_wise_iou"])
        r_cost = torch.from_numpy(arrays[key + "cost"])
        r_k = torch.from_numpy(arrays[key + "dynamic_k"])
        if m.iou.shape != r_iou.shape:
            report.add(f"{name}.image{b}", False, f"matrix shape {tuple(m.iou.shape)} vs {tuple(r_iou.shape)}")
            continue
        d_iou = float((m.iou - r_iou).abs().max()) if m.iou.numel() else 0.0
        d_cost = float((m.cost - r_cost).abs().max()) if m.cost.numel() else 0.0
        ok = (
            torch.allclose(m.iou, r_iou, rtol=0, atol=IOU_ATOL)
            and torch.allclose(m.cost, r_cost, rtol=COST_RTOL, atol=COST_ATOL, equal_nan=True)
            and torch.equal(m.dynamic_k, r_k)
        )
        report.add(
            f"{name}.image{b}",
            ok,
            f"{tuple(m.iou.shape)} iou max|diff| {d_iou:.1e}, cost max|diff| {d_cost:.1e}, "
            f"dynamic_k {m.dynamic_k.tolist()} vs {r_k.tolist()}",
        )
    report.add(f"{name}.unmatched_gts", True, f"boxes without positives: {result.unmatched().tolist()}")


def main(path: str, as_json: bool = False) -> int:
    """Run every case of ``path``; print a report (text or JSON); return 0 if all checks pass, 1 if any fails,
    2 if the file cannot be read."""
    try:
        cases = load_cases(path)
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}")
        return 2
    if not cases:
        print(f"{path}: no cases found")
        return 2
    torch.set_num_threads(min(2, torch.get_num_threads()))
    reports = []
    for case in sorted(cases):
        try:
            reports.append(run_case(case, cases[case]))
        except KeyError as exc:
            rep = CaseReport(case, "?")
            rep.add("format", False, f"missing array {exc}")
            reports.append(rep)
    passed = all(r.passed for r in reports)
    if as_json:
        out = {"file": str(path), "passed": passed, "cases": [asdict(r) | {"passed": r.passed} for r in reports]}
        print(json.dumps(out, indent=1))
    else:
        for r in reports:
            n_fail = sum(not c.passed for c in r.checks)
            print(f"== {Path(path).name} :: {r.case} ({r.model}): {'PASS' if r.passed else f'FAIL ({n_fail})'}")
            width = max(len(c.name) for c in r.checks)
            for c in r.checks:
                print(f"  [{'ok' if c.passed else 'FAIL'}] {c.name:<{width}}  {c.detail}")
        print(f"{'PASS' if passed else 'FAIL'}: {len(reports)} case(s) in {path}")
    return 0 if passed else 1
