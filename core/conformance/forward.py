"""Forward conformance: our model vs reference outputs of the official implementation.

The reference file (format of ``shared/yolov7/conformance/tiny_forward_kaiming.npz``) holds the official
weights under their official keys, the network input, the eval-mode raw head outputs (``raw_level{i}``), the
decoded output, NMS results (``nms_conf{c}_iou{i}[_multilabel][_fused]``) and, optionally, the outputs of the
official fused model (``output_fused``) and of the notebook-style deploy conversion (``output_deploy_reparam``).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.checkpoint.identify import identify
from core.models import build_model, fuse_blocks, reparameterize
from core.nms import non_max_suppression

BOX_TOL_PX = 1e-2
PROB_TOL = 1e-5
RAW_REL_TOL = 1e-4
_NMS_KEY = re.compile(r"^nms_conf(?P<conf>[0-9.]+)_iou(?P<iou>[0-9.]+)(?P<ml>_multilabel)?(?P<fused>_fused)?$")


@dataclass
class Check:
    """One comparison: its name, the measured differences, the tolerance and whether it passed."""

    name: str
    passed: bool
    details: dict[str, float | int | str] = field(default_factory=dict)


@dataclass
class ForwardReport:
    file: str
    variant: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_text(self) -> str:
        lines = [f"conformance forward: {self.file}", f"model: {self.variant}"]
        for c in self.checks:
            det = ", ".join(f"{k}={_fmt(v)}" for k, v in c.details.items())
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {det}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _fmt(v: float | int | str) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def load_reference_weights(data: np.lib.npyio.NpzFile) -> dict[str, torch.Tensor]:
    """The ``model.*`` arrays as a state dict (``num_batches_tracked`` is stored as float32 there)."""
    sd = {}
    for k in data.files:
        if k.startswith("model."):
            t = torch.from_numpy(np.array(data[k]))
            sd[k] = t.long() if k.endswith("num_batches_tracked") else t
    return sd


def compare_decoded(name: str, ours: torch.Tensor, ref: torch.Tensor) -> Check:
    """Decoded ``[B, N, 5+nc]``: boxes within 1e-2 px, probabilities within 1e-5."""
    if ours.shape != ref.shape:
        return Check(name, False, {"shape": f"{tuple(ours.shape)} vs {tuple(ref.shape)}"})
    box = float((ours[..., :4] - ref[..., :4]).abs().max())
    prob = float((ours[..., 4:] - ref[..., 4:]).abs().max())
    return Check(
        name,
        box <= BOX_TOL_PX and prob <= PROB_TOL,
        {"max_box_px": box, "box_tol": BOX_TOL_PX, "max_prob": prob, "prob_tol": PROB_TOL},
    )


def compare_raw(name: str, ours: torch.Tensor, ref: torch.Tensor) -> Check:
    """Raw logits: max |diff| relative to the largest reference magnitude within 1e-4."""
    if ours.shape != ref.shape:
        return Check(name, False, {"shape": f"{tuple(ours.shape)} vs {tuple(ref.shape)}"})
    diff = float((ours - ref).abs().max())
    rel = diff / max(float(ref.abs().max()), 1e-12)
    return Check(name, rel <= RAW_REL_TOL, {"max_abs": diff, "max_rel": rel, "rel_tol": RAW_REL_TOL})


def compare_nms(name: str, ours: torch.Tensor, ref: torch.Tensor) -> Check:
    """NMS rows in official order: same count and classes, boxes within 1e-2 px, scores within 1e-5."""
    details: dict[str, float | int | str] = {"rows": int(ours.shape[0]), "ref_rows": int(ref.shape[0])}
    if ours.shape != ref.shape:
        return Check(name, False, details)
    same_cls = bool(torch.equal(ours[:, 5], ref[:, 5]))
    box = float((ours[:, :4] - ref[:, :4]).abs().max()) if len(ref) else 0.0
    score = float((ours[:, 4] - ref[:, 4]).abs().max()) if len(ref) else 0.0
    details.update({"same_classes": str(same_cls), "max_box_px": box, "max_score": score})
    return Check(name, same_cls and box <= BOX_TOL_PX and score <= PROB_TOL, details)


@torch.no_grad()
def run(path: str | Path) -> ForwardReport:
    """Load the reference weights into our model, run every comparison the file supports."""
    data = np.load(path, allow_pickle=False)
    sd = load_reference_weights(data)
    variant = identify(sd)
    model = build_model(variant.name, variant.num_classes, deploy=variant.deploy, aux=variant.aux)
    if variant.fused:
        fuse_blocks(model)
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.from_numpy(np.array(data["input"]))
    checks: list[Check] = []

    raw = model.forward_levels(x, aux=False)
    for i, r in enumerate(raw):
        if f"raw_level{i}" in data.files:
            checks.append(compare_raw(f"raw level {i}", r, torch.from_numpy(data[f"raw_level{i}"])))
    outputs = {"": model.head.decode(raw)}
    checks.append(compare_decoded("decoded output", outputs[""], torch.from_numpy(data["output"])))

    if "output_fused" in data.files:
        fused = fuse_blocks(copy.deepcopy(model))
        outputs["_fused"] = fused(x)
        checks.append(
            compare_decoded("fused (BN + RepConv folded)", outputs["_fused"], torch.from_numpy(data["output_fused"]))
        )
        deploy_fused = reparameterize(model)
        outputs["_deploy"] = deploy_fused(x)
        checks.append(
            compare_decoded(
                "re-parameterized deploy form vs official fused",
                outputs["_deploy"],
                torch.from_numpy(data["output_fused"]),
            )
        )
        checks.append(_self_check(model, deploy_fused, x))
    if "output_deploy_reparam" in data.files and not variant.deploy:
        deploy = reparameterize(model, fuse=False)
        checks.append(
            compare_decoded(
                "deploy form, implicit folded (unfused)", deploy(x), torch.from_numpy(data["output_deploy_reparam"])
            )
        )

    for key in sorted(data.files):
        m = _NMS_KEY.match(key)
        if not m or (m["fused"] or "") not in outputs:
            continue
        dets = non_max_suppression(
            outputs[m["fused"] or ""], conf_thres=float(m["conf"]), iou_thres=float(m["iou"]), multi_label=bool(m["ml"])
        )[0]
        label = f"NMS conf={m['conf']} iou={m['iou']}{' multi-label' if m['ml'] else ''}"
        checks.append(compare_nms(label + (" (fused)" if m["fused"] else ""), dets, torch.from_numpy(data[key])))
        if m["fused"] and "_deploy" in outputs:  # our deploy form must select what the official fused model selects
            ours = non_max_suppression(
                outputs["_deploy"], conf_thres=float(m["conf"]), iou_thres=float(m["iou"]), multi_label=bool(m["ml"])
            )[0]
            checks.append(compare_nms(f"deploy form {label} vs official fused", ours, torch.from_numpy(data[key])))
    return ForwardReport(str(path), variant.describe(), checks)


def _self_check(model: torch.nn.Module, deploy: torch.nn.Module, x: torch.Tensor) -> Check:
    """The self-check of :func:`core.inference.deploy.check_deploy`, run on the reference input."""
    from core.inference.deploy import check_deploy

    rep = check_deploy(model, deploy, x)  # type: ignore[arg-type]
    details: dict[str, float | int | str] = {
        "raw_rel": rep.raw_rel,
        "max_box_px": rep.max_box_px,
        "max_prob": rep.max_prob,
        "nms_identical": str(rep.nms_identical),
    }
    return Check("deploy conversion self-check (ours vs ours)", rep.passed and rep.nms_identical, details)


def main(path: str, as_json: bool = False) -> int:
    """CLI entry: print the report; exit code 0 when every check passes, 1 otherwise, 2 on unusable input."""
    try:
        report = run(path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot run forward conformance on {path}: {exc}")
        return 2
    if as_json:
        print(
            json.dumps(
                {
                    "file": report.file,
                    "variant": report.variant,
                    "passed": report.passed,
                    "checks": [asdict(c) for c in report.checks],
                },
                indent=1,
            )
        )
    else:
        print(report.to_text())
    return 0 if report.passed else 1
