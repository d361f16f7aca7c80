"""Building blocks of YOLOv7, with the official attribute names so that official state dicts load as is.

Every block maps ``[B, C_in, H, W] -> [B, C_out, H', W']``. Blocks that can be fused for deployment have a
``reparameterize()`` method that turns them, in place, into the equivalent inference form.
All BatchNorms use the official ``eps=1e-3, momentum=0.03``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def make_act(act: str) -> nn.Module:
    """Activation by name: ``silu`` (YOLOv7 default), ``leaky`` (LeakyReLU 0.1, yolov7-tiny) or ``none``."""
    if act == "silu":
        return nn.SiLU()
    if act == "leaky":
        return nn.LeakyReLU(0.1)
    if act == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {act!r} (expected 'silu', 'leaky' or 'none')")


def batch_norm(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


@torch.no_grad()
def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding conv: ``W' = W*g/sqrt(v+eps)``, ``b' = beta + (b-mu)*g/std``.

    ``weight``: [C_out, C_in/g, k, k]; returns the folded weight and a [C_out] bias.
    """
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None, "fold_bn needs BatchNorm running statistics"
    std = (var + bn.eps).sqrt()
    scale = bn.weight / std
    b = bias if bias is not None else torch.zeros_like(mean)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + (b - mean) * scale


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; 'same' padding. After fusion: Conv2d with bias -> act."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: str = "silu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = batch_norm(c2)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "bn"):
            return self.act(self.bn(self.conv(x)))
        return self.act(self.conv(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BatchNorm into the conv (keys become ``conv.weight``/``conv.bias``, as official ``fuse()``)."""
        if not hasattr(self, "bn"):
            return
        w, b = fold_bn(self.conv.weight, self.conv.bias, self.bn)
        conv: Any = self.conv
        fused: Any = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
            device=w.device,
            dtype=w.dtype,
        )
        fused.weight.copy_(w)
        fused.bias.copy_(b)
        self.conv = fused
        del self.bn


class RepConv(nn.Module):
    """Planned re-parameterized convolution (paper Sec. 3.2).

    Training form: ``act(BN(conv3x3(x)) + BN(conv1x1(x)) [+ BN(x)])``. The identity branch ``rbr_identity``
    exists only when ``identity`` is true, which needs ``c1 == c2`` and stride 1 (RepConv); the paper's
    RepConvN has no identity branch and is what YOLOv7 uses (its three RepConvs change the width).
    ``identity=None`` chooses automatically. Deploy form: one 3x3 conv with bias, ``rbr_reparam``.
    """

    def __init__(
        self, c1: int, c2: int, k: int = 3, s: int = 1, act: str = "silu", identity: bool | None = None
    ) -> None:
        super().__init__()
        if k != 3:
            raise ValueError("RepConv is defined for 3x3 kernels")
        can_identity = c1 == c2 and s == 1
        if identity is None:
            identity = can_identity
        if identity and not can_identity:
            raise ValueError(f"RepConv identity branch needs c1 == c2 and stride 1 (got {c1}->{c2}, s={s})")
        self.act = make_act(act)
        self.rbr_identity = batch_norm(c1) if identity else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, 3, s, 1, bias=False), batch_norm(c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, bias=False), batch_norm(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(x))
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.act(y)

    @torch.no_grad()
    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent 3x3 kernel [c2, c1, 3, 3] and bias [c2] of the three branches."""
        dense: Any = self.rbr_dense
        one: Any = self.rbr_1x1
        w3, b3 = fold_bn(dense[0].weight, None, dense[1])
        w1, b1 = fold_bn(one[0].weight, None, one[1])
        w, b = w3 + F.pad(w1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            c = w.shape[1]
            eye = torch.zeros_like(w)
            eye[torch.arange(c), torch.arange(c), 1, 1] = 1.0
            wi, bi = fold_bn(eye, None, self.rbr_identity)
            w, b = w + wi, b + bi
        return w, b

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one 3x3 conv ``rbr_reparam`` (official deploy key names)."""
        if hasattr(self, "rbr_reparam"):
            return
        w, b = self.fused_kernel()
        dense: Any = self.rbr_dense[0]
        conv: Any = nn.Conv2d(
            dense.in_channels, dense.out_channels, 3, dense.stride, 1, bias=True, device=w.device, dtype=w.dtype
        )
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        self.rbr_reparam = conv
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity


class MP(nn.Module):
    """2x2 max-pool with stride 2: [B,C,H,W] -> [B,C,H/2,W/2]."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SP(nn.Module):
    """Stride-1 'same' max-pool of size k (the SPP of yolov7-tiny)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class Concat(nn.Module):
    """Channel concatenation of a list of [B,C_i,H,W] tensors."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.d = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class Shortcut(nn.Module):
    """Element-wise sum of two tensors: the cardinality merge of E-ELAN (yolov7-e6e)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0] + xs[1]


class Upsample(nn.Upsample):
    """Nearest-neighbour x2 up-sampling (parameter-free; a class of its own so layer tables can name it)."""

    def __init__(self) -> None:
        super().__init__(None, 2, "nearest")


class ReOrg(nn.Module):
    """Space-to-depth x2 (first layer of the P6 models): [B,C,H,W] -> [B,4C,H/2,W/2], official channel order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


class DownC(nn.Module):
    """Down-sampling of e6/d6/e6e: ``cat(conv3x3_s2(conv1x1(x)), conv1x1(maxpool2(x)))``, each half of ``c2``."""

    def __init__(self, c1: int, c2: int, k: int = 2, act: str = "silu") -> None:
        super().__init__()
        self.cv1 = Conv(c1, c1, 1, 1, act)
        self.cv2 = Conv(c1, c2 // 2, 3, k, act)
        self.cv3 = Conv(c1, c2 // 2, 1, 1, act)
        self.mp = nn.MaxPool2d(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), 1)


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling (max-pools 5, 9, 13) inside a cross-stage-partial block: [B,c1,H,W] -> [B,c2,H,W]."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13), act: str = "silu") -> None:
        super().__init__()
        c_ = c2  # the official hidden width is int(2 * c2 * 0.5)
        self.cv1 = Conv(c1, c_, 1, 1, act)
        self.cv2 = Conv(c1, c_, 1, 1, act)
        self.cv3 = Conv(c_, c_, 3, 1, act)
        self.cv4 = Conv(c_, c_, 1, 1, act)
        self.m = nn.ModuleList(nn.MaxPool2d(x, 1, x // 2) for x in k)
        self.cv5 = Conv(4 * c_, c_, 1, 1, act)
        self.cv6 = Conv(c_, c_, 3, 1, act)
        self.cv7 = Conv(2 * c_, c2, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))


class ImplicitA(nn.Module):
    """YOLOR implicit knowledge, additive: ``x + implicit`` with implicit [1,C,1,1] ~ N(0, 0.02)."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=0.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """YOLOR implicit knowledge, multiplicative: ``x * implicit`` with implicit [1,C,1,1] ~ N(1, 0.02)."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x
