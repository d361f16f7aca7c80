"""Parameter and FLOP counts, the way the paper counts them.

GFLOPs = 2 x sum over convolutions of (output elements x (C_in/groups x kh x kw + 1 if the conv has a bias)),
i.e. the older-thop convention that reproduces the paper's table for the fused deploy models (FACTS.md 1a).
BatchNorm, activations and pooling are not counted. Counting runs on the ``meta`` device: no memory, no math.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from core.models.fuse import fuse_blocks
from core.models.specs import ModelSpec, get_spec
from core.models.yolo import Yolo


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as anchors and BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: Yolo, img_size: int, *, aux: bool | None = None) -> float:
    """GFLOPs of one forward pass at ``img_size`` x ``img_size`` (see the module docstring)."""
    total = 0

    def hook(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] + (1 if m.bias is not None else 0)
        total += out.numel() // out.shape[0] * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model.forward_levels(torch.zeros(1, 3, img_size, img_size, device=device), aux=aux)
    finally:
        for h in handles:
            h.remove()
    return 2 * total / 1e9


@dataclass(frozen=True)
class ModelProfile:
    """One row of ``yolov7-studio models``."""

    name: str
    img_size: int
    params_train: int
    gflops_train: float
    params_deploy: int  # deploy form after fusion (the paper's "Params")
    gflops_deploy: float  # deploy form after fusion (the paper's "FLOPs")
    layers_train: int
    layers_deploy: int
    strides: tuple[int, ...]
    head_train: str
    head_deploy: str
    activation: str
    paper_params_m: float | None
    paper_gflops: float | None
    derived_from: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def profile(name: str | ModelSpec, num_classes: int = 80, img_size: int | None = None) -> ModelProfile:
    """Count parameters and GFLOPs of the training form and of the fused deploy form of a variant."""
    spec = get_spec(name) if isinstance(name, str) else name
    size = img_size or spec.native_size
    with torch.device("meta"):
        train = Yolo(spec, num_classes)
        deploy = fuse_blocks(Yolo(spec, num_classes, deploy=True))
    assert isinstance(deploy, Yolo)
    return ModelProfile(
        name=spec.name,
        img_size=size,
        params_train=count_params(train),
        gflops_train=count_gflops(train, size, aux=True),
        params_deploy=count_params(deploy),
        gflops_deploy=count_gflops(deploy, size),
        layers_train=len(train.model),
        layers_deploy=len(deploy.model),
        strides=spec.strides,
        head_train=type(train.head).__name__,
        head_deploy=type(deploy.head).__name__,
        activation="LeakyReLU(0.1)" if spec.act == "leaky" else "SiLU",
        paper_params_m=spec.paper[0] if spec.paper else None,
        paper_gflops=spec.paper[1] if spec.paper else None,
        derived_from=spec.derived_from,
    )
