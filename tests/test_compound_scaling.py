"""Compound scaling of concatenation-based models (paper Sec. 3.3)."""

from __future__ import annotations

import torch

from core.models import build_model, compound_scale, get_spec
from core.models.profile import profile


def _shapes(name_or_spec, upto: int) -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        m = build_model(name_or_spec, 80)
    return [(k, tuple(v.shape)) for k, v in m.state_dict().items() if int(k.split(".")[1]) <= upto]


def test_yolov7_scaled_backbone_is_yolov7x_backbone() -> None:
    """depth x1.5 on the computational blocks + width x1.25 on transitions = the official yolov7x backbone."""
    scaled = compound_scale(get_spec("yolov7"), depth=1.5, width=1.25)
    assert _shapes(scaled, 58) == _shapes("yolov7x", 58)  # layers 0..58 are yolov7x's backbone


def test_channel_ratios_stay_consistent() -> None:
    base = get_spec("yolov7")
    scaled = compound_scale(base, depth=1.5, width=1.25)
    for b, s in zip(base.backbone + base.neck_td + base.neck_bu, scaled.backbone + scaled.neck_td + scaled.neck_bu):
        assert s.depth == round(b.depth * 1.5)
        assert (s.branch, s.chain) == (b.branch, b.chain)  # inside the computational block: unchanged
        assert s.out / b.out == 1.25  # transition layer
        # the concatenated width grows with depth, and the transition keeps in/out in the same proportion
        in_b = 2 * b.branch + b.chain * (b.taps - 2)
        in_s = 2 * s.branch + s.chain * (s.taps - 2)
        assert in_s > in_b
    for widths in ("stem", "down_widths", "lateral", "neck_down_widths", "lead"):
        for b, s in zip(getattr(base, widths), getattr(scaled, widths)):
            assert s / b == 1.25
    assert scaled.spp / base.spp == 1.25
    assert scaled.derived_from == "yolov7"


def test_scaled_model_runs_and_is_profiled() -> None:
    scaled = compound_scale(get_spec("yolov7-tiny"))
    p = profile(scaled, img_size=320)
    base = profile("yolov7-tiny", img_size=320)
    assert p.params_deploy > base.params_deploy and p.gflops_deploy > base.gflops_deploy
    m = build_model(scaled, 2).eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 3 * (64 + 16 + 4), 7)
