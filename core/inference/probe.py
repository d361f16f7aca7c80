"""Deterministic inputs and weights for self-checks, tests and benchmarks.

* :func:`probe_image` is an image-like network input (smooth colour regions plus texture), so that a
  numerical comparison sees the value ranges of real photos rather than white noise.
* :func:`well_conditioned_` fills a model with the ``kaiming`` scheme of the conformance reference file
  (``shared/yolov7/conformance``): non-trivial BatchNorm statistics, so that a fusion check is meaningful, and
  activations that neither die out nor explode, so that scores are spread out and NMS is not decided by ties.
  PyTorch's default initialisation leaves BN at mean 0 / var 1 and lets activations decay to denormal floats,
  which makes CPU convolutions many times slower and timings meaningless.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.models.blocks import ImplicitA, ImplicitM
from core.models.heads import Detect


def probe_image(size: int | tuple[int, int] = 320, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A ``[batch, 3, H, W]`` float32 RGB input in [0, 1], the same for the same arguments on every machine."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, h // 32), max(2, w // 32), generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img = img + 0.08 * torch.randn(batch, 3, h, w, generator=g)
    return img.clamp_(0.0, 1.0)


@torch.no_grad()
def well_conditioned_(model: nn.Module, seed: int = 0, head_gain: float = 0.25) -> nn.Module:
    """Fill every weight in place with the conformance file's ``kaiming`` scheme; returns ``model``.

    Convs: ``N(0, 2/fan_in)`` (head convs ``N(0, (0.25/sqrt(fan_in))^2)`` with bias ``N(0, 0.5^2)``);
    BatchNorm: weight and running_var ``U(0.5, 1.5)``, bias and running_mean ``N(0, 0.1^2)``;
    ImplicitA ``N(0, 0.02^2)``, ImplicitM ``N(1, 0.02^2)``. Anchors are left as they are.
    ``head_gain`` replaces the 0.25 of the head convs: thin test models need ~1 for well-spread scores.
    """
    g = torch.Generator().manual_seed(seed)

    def fill(t: torch.Tensor | None, values: torch.Tensor) -> None:
        if t is not None:
            t.copy_(values.to(device=t.device, dtype=t.dtype))

    head_convs: set[int] = set()
    for m in model.modules():
        if isinstance(m, Detect):
            for convs in m._prediction_convs():
                head_convs.update(id(c) for c in convs)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            std = head_gain / math.sqrt(fan_in) if id(m) in head_convs else math.sqrt(2.0 / fan_in)
            fill(m.weight, torch.randn(m.weight.shape, generator=g) * std)
            if m.bias is not None:
                fill(m.bias, torch.randn(m.bias.shape, generator=g) * (0.5 if id(m) in head_convs else 0.1))
        elif isinstance(m, nn.BatchNorm2d):
            shape = m.weight.shape
            fill(m.weight, torch.rand(shape, generator=g) + 0.5)
            fill(m.bias, torch.randn(shape, generator=g) * 0.1)
            fill(m.running_mean, torch.randn(shape, generator=g) * 0.1)
            fill(m.running_var, torch.rand(shape, generator=g) + 0.5)
        elif isinstance(m, ImplicitA):
            fill(m.implicit, torch.randn(m.implicit.shape, generator=g) * 0.02)
        elif isinstance(m, ImplicitM):
            fill(m.implicit, 1.0 + torch.randn(m.implicit.shape, generator=g) * 0.02)
    return model
