"""One-call deploy conversion that checks itself.

:func:`convert_for_deploy` turns any model (training form with ``IDetect`` or ``IAuxDetect``, an already fused
model, or a deploy model) into the fused deploy form with :func:`core.models.fuse.reparameterize`, then runs both
networks on the same probe input and reports how far the decoded outputs and the NMS results are apart.

The pass criterion is scale-free: the largest raw-logit difference relative to the largest logit must stay
below ``1e-4`` (the conformance tolerance for raw outputs; float32 round-off through ~100 layers is ~1e-6..1e-5).
The report also gives the differences users see: decoded boxes in pixels and probabilities (FACTS.md 1d measured
2.4e-3 px / 2.6e-6 for the official fusion of yolov7-tiny), and whether NMS keeps exactly the same detections.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from core.inference.eval_view import eval_view
from core.inference.probe import probe_image
from core.models.fuse import is_fused, reparameterize
from core.models.profile import count_params
from core.models.yolo import Yolo
from core.nms import NmsConfig, apply_nms

RAW_REL_TOL = 1e-4
BOX_TOL_PX = 1e-2  # NMS agreement: same detections, boxes within this (px)
PROB_TOL = 1e-5  # NMS agreement: scores within this


class ReparamError(RuntimeError):
    """The deploy form does not reproduce the original outputs within tolerance (``strict=True``)."""


@dataclass(frozen=True)
class NmsAgreement:
    """NMS results of the original and the deploy model on the probe.

    ``matched``: detections of the original with a partner in the deploy result (same class, boxes within
    1e-2 px, scores within 1e-5); ``same_order``: the partners are in the same order. Exactly tied scores (common
    with untrained weights) may come out in either order, so the order is reported but not required.
    """

    conf: float
    iou: float
    multi_label: bool
    rows: int
    rows_deploy: int
    matched: int
    same_order: bool
    max_box_px: float  # over matched pairs
    max_score: float  # over matched pairs

    @property
    def identical(self) -> bool:
        """The same detections (classes, boxes within 1e-2 px, scores within 1e-5), in any order among ties."""
        return self.rows == self.rows_deploy == self.matched


@dataclass(frozen=True)
class ReparamCheck:
    """What a conversion changed and how far the outputs moved (decoded outputs: xywh pixels, probabilities)."""

    variant: str
    source_form: str
    probe_shape: tuple[int, ...]
    max_raw: float  # largest |raw logit difference|
    raw_scale: float  # largest |raw logit| of the original model
    max_box_px: float
    max_prob: float
    box_scale_px: float  # largest |box value| of the original output, for scale
    params_before: int
    params_after: int
    nms: list[NmsAgreement] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Raw outputs equal up to float round-off (NMS agreement is reported, see :attr:`nms_identical`)."""
        return self.raw_rel <= RAW_REL_TOL

    @property
    def raw_rel(self) -> float:
        return self.max_raw / max(self.raw_scale, 1e-12)

    @property
    def nms_identical(self) -> bool:
        return all(a.identical for a in self.nms)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(raw_rel=self.raw_rel, passed=self.passed, nms_identical=self.nms_identical)
        return d

    def to_text(self) -> str:
        shape = "x".join(map(str, self.probe_shape))
        lines = [
            f"re-parameterization check: {self.variant}, {self.source_form} -> deploy (fused)",
            f"  parameters: {self.params_before:,} -> {self.params_after:,}",
            f"  probe input {shape}: max |raw logit diff| = {self.max_raw:.3g} = {self.raw_rel:.2g} of the largest "
            f"logit (tol {RAW_REL_TOL:g})",
            f"  decoded: max |box diff| = {self.max_box_px:.3g} px (boxes up to {self.box_scale_px:.0f} px), "
            f"max |prob diff| = {self.max_prob:.3g}",
        ]
        for a in self.nms:
            kind = "multi-label" if a.multi_label else "best class"
            verdict = "identical" if a.identical else f"not identical: {a.matched} of {a.rows} matched"
            order = "" if a.same_order or not a.identical else ", tied scores in another order"
            lines.append(
                f"  NMS conf={a.conf:g} iou={a.iou:g} {kind}: {a.rows} vs {a.rows_deploy} detections, "
                f"{verdict} (max box diff {a.max_box_px:.3g} px, max score diff {a.max_score:.3g}{order})"
            )
        lines.append("  check " + ("PASSED" if self.passed else "FAILED: outputs differ beyond tolerance"))
        if self.passed and not self.nms_identical:
            lines.append(
                "  why this passes: the raw outputs agree within float round-off, so the two networks are the same; "
                "NMS picked a few different boxes only because many boxes have nearly equal scores (typical of "
                "untrained or barely trained weights), and a round-off-sized change reorders boxes at the "
                "score/overlap cut-off. A trained model's detections are identical."
            )
        return "\n".join(lines)


@dataclass
class DeployConversion:
    """The fused deploy model (eval mode) and its self-check (``None`` when the check was skipped)."""

    model: Yolo
    check: ReparamCheck | None


def source_form(model: Yolo) -> str:
    """Human-readable form of ``model``: training / training + aux / deploy, fused or not."""
    form = "deploy" if model.deploy else ("training + aux head" if model.aux else "training")
    return form + (" (fused)" if is_fused(model) else "")


def _nms_agreement(a: torch.Tensor, b: torch.Tensor, cfg: NmsConfig) -> NmsAgreement:
    da, db = apply_nms(a, cfg)[0], apply_nms(b, cfg)[0]
    close = (
        (da[:, None, 5] == db[None, :, 5])
        & ((da[:, None, :4] - db[None, :, :4]).abs().amax(-1) <= BOX_TOL_PX)
        & ((da[:, None, 4] - db[None, :, 4]).abs() <= PROB_TOL)
    )
    partner, taken = [], set()
    for i in range(len(da)):  # greedy, in score order: the first free candidate
        for j in close[i].nonzero().view(-1).tolist():
            if j not in taken:
                taken.add(j)
                partner.append((i, j))
                break
    box = score = 0.0
    if partner:
        ia, ib = (torch.tensor(v) for v in zip(*partner))
        box = float((da[ia, :4] - db[ib, :4]).abs().max())
        score = float((da[ia, 4] - db[ib, 4]).abs().max())
    same_order = len(partner) == len(da) == len(db) and all(i == j for i, j in partner)
    return NmsAgreement(cfg.conf, cfg.iou, cfg.multi_label, len(da), len(db), len(partner), same_order, box, score)


@torch.no_grad()
def check_deploy(
    original: Yolo,
    deploy: Yolo,
    probe: torch.Tensor | None = None,
    *,
    img_size: int = 320,
    nms: tuple[NmsConfig, ...] = (NmsConfig(), NmsConfig(conf=0.001, iou=0.65, multi_label=True)),
) -> ReparamCheck:
    """Run ``original`` and ``deploy`` (both in eval mode, through :func:`eval_view`: neither is changed) on
    ``probe`` (default: :func:`probe_image` of ``img_size`` rounded up to the largest stride) and compare decoded
    outputs and NMS results.

    The comparison runs in float32 on copies when a model is in another dtype.
    """
    ref_model, new_model = original, deploy
    if next(original.parameters()).dtype != torch.float32:
        ref_model = copy.deepcopy(original).float()
    if next(deploy.parameters()).dtype != torch.float32:
        new_model = copy.deepcopy(deploy).float()
    if probe is None:
        s = int(original.stride.max())
        size = -(-img_size // s) * s
        probe = probe_image(size)
    probe = probe.to(device=next(ref_model.parameters()).device, dtype=torch.float32)
    ref_model, new_model = eval_view(ref_model), eval_view(new_model)  # the callers' models keep their modes
    raw_a, raw_b = ref_model.forward_levels(probe, aux=False), new_model.forward_levels(probe, aux=False)
    a, b = ref_model.head.decode(raw_a), new_model.head.decode(raw_b)
    return ReparamCheck(
        variant=original.spec.name,
        source_form=source_form(original),
        probe_shape=tuple(probe.shape),
        max_raw=max(float((ra - rb).abs().max()) for ra, rb in zip(raw_a, raw_b)),
        raw_scale=max(float(ra.abs().max()) for ra in raw_a),
        max_box_px=float((a[..., :4] - b[..., :4]).abs().max()),
        max_prob=float((a[..., 4:] - b[..., 4:]).abs().max()),
        box_scale_px=float(a[..., :4].abs().max()),
        params_before=count_params(original),
        params_after=count_params(deploy),
        nms=[_nms_agreement(a, b, cfg) for cfg in nms],
    )


def convert_for_deploy(
    model: Yolo, *, check: bool = True, probe: torch.Tensor | None = None, img_size: int = 320, strict: bool = False
) -> DeployConversion:
    """The fused deploy form of ``model`` (RepConv and BN fused, implicit terms folded, aux head dropped) and,
    with ``check``, the :class:`ReparamCheck` comparing it with ``model`` on a probe input.

    ``model`` is not changed. ``strict``: raise :class:`ReparamError` when the check fails.
    """
    deploy = reparameterize(model, fuse=True)
    report = check_deploy(model, deploy, probe, img_size=img_size) if check else None
    if strict and report is not None and not report.passed:
        raise ReparamError(report.to_text())
    return DeployConversion(deploy, report)
