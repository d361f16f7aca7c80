"""Detection heads: ``Detect`` (deploy), ``IDetect`` (implicit knowledge, training) and ``IAuxDetect`` (+ aux head).

Raw output per level: ``[B, na, H, W, 5 + nc]`` logits, channels ``(tx, ty, tw, th, obj, cls...)``.
Decoded output (:meth:`Detect.decode`): ``[B, sum(na*H*W), 5 + nc]`` with ``(x, y, w, h)`` box centre and size in
input pixels and sigmoid probabilities, exactly as the official eval-mode output:
``xy = (2*sigmoid(t_xy) - 0.5 + grid) * stride`` and ``wh = (2*sigmoid(t_wh))**2 * anchor_px``.

Buffers (official names): ``anchors`` (nl, na, 2) in grid units (pixels / stride), used by the loss, and
``anchor_grid`` (nl, 1, na, 1, 1, 2) in pixels, used by the decode.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from core.models.blocks import ImplicitA, ImplicitM


class Detect(nn.Module):
    """Plain YOLO head: one 1x1 conv per level (``m``). The deploy form of every variant."""

    anchors: torch.Tensor
    anchor_grid: torch.Tensor
    stride: torch.Tensor
    m: Any

    def __init__(self, nc: int, anchors_px: torch.Tensor, strides: list[int], ch: list[int]) -> None:
        super().__init__()
        anchors_px = torch.as_tensor(anchors_px, dtype=torch.float32)
        self.nc = nc
        self.no = nc + 5
        self.nl, self.na = anchors_px.shape[:2]
        if len(strides) != self.nl or len(ch) != self.nl:
            raise ValueError(f"head needs one stride and one input width per level ({self.nl} levels)")
        self.strides = [int(s) for s in strides]
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32), persistent=False)
        self.register_buffer("anchors", anchors_px / self.stride.view(-1, 1, 1))
        self.register_buffer("anchor_grid", anchors_px.clone().view(self.nl, 1, self.na, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    # -- outputs -------------------------------------------------------------------------------------------
    def _shape(self, y: torch.Tensor) -> torch.Tensor:
        """[B, na*no, H, W] -> [B, na, H, W, no]."""
        b, _, h, w = y.shape
        return y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level raw logits ``[B, na, H, W, no]`` from the level feature maps ``[B, C_i, H, W]``."""
        return [self._shape(conv(x)) for conv, x in zip(self.m, xs)]

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Decode the lead levels to ``[B, N, no]`` (xywh in input pixels, probabilities). Trace-friendly."""
        out = []
        for i, r in enumerate(raw[: self.nl]):
            b, _, ny, nx, _ = r.shape
            yv, xv = torch.meshgrid(
                torch.arange(ny, device=r.device, dtype=r.dtype),
                torch.arange(nx, device=r.device, dtype=r.dtype),
                indexing="ij",
            )
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)
            y = r.sigmoid()
            xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i].to(r.dtype)
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.no))
        return torch.cat(out, 1)

    # -- init ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def initialize_biases(self, class_freq: torch.Tensor | None = None) -> None:
        """Official prior: obj bias += log(8 / (640/s)^2), cls bias += log(0.6 / (nc - 0.99))."""
        for convs in self._prediction_convs():
            for conv, s in zip(convs, self.strides):
                b = conv.bias.view(self.na, -1)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                if class_freq is None:
                    b[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if self.nc > 1 else 0.0
                else:
                    b[:, 5:] += torch.log(class_freq / class_freq.sum())
                conv.bias.copy_(b.view(-1))

    def _prediction_convs(self) -> list[Any]:
        return [self.m]

    def class_dependent_keys(self) -> list[str]:
        """State-dict keys (relative to the head) whose shape depends on the number of classes."""
        return [k for k in self.state_dict() if k.split(".")[0] in ("m", "m2", "im")]


class IDetect(Detect):
    """Training head with YOLOR implicit knowledge per level: ``im * m(x + ia)``."""

    ia: Any
    im: Any

    def __init__(self, nc: int, anchors_px: torch.Tensor, strides: list[int], ch: list[int]) -> None:
        super().__init__(nc, anchors_px, strides, ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self._shape(self.im[i](self.m[i](self.ia[i](x)))) for i, x in enumerate(xs)]

    @torch.no_grad()
    def folded_convs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level, the 1x1 conv with the implicit terms folded in: ``W' = W*im``, ``b' = (b + W@ia)*im``."""
        out = []
        for conv, ia, im in zip(self.m, self.ia, self.im):
            w = conv.weight  # [no*na, C, 1, 1]
            b = conv.bias + (w[:, :, 0, 0] @ ia.implicit.view(-1))
            scale = im.implicit.view(-1)
            out.append((w * scale.view(-1, 1, 1, 1), b * scale))
        return out


class IAuxDetect(IDetect):
    """Lead head (implicit, levels ``0..nl-1``) plus an auxiliary head ``m2`` (plain 1x1 convs) for training.

    ``forward`` takes ``2*nl`` feature maps (lead inputs, then aux inputs) and returns ``2*nl`` raw levels.
    The aux head only exists to receive coarse-label supervision; it is dropped for deployment.
    """

    def __init__(self, nc: int, anchors_px: torch.Tensor, strides: list[int], ch: list[int]) -> None:
        nl = len(strides)
        if len(ch) != 2 * nl:
            raise ValueError("IAuxDetect needs lead and aux input widths (2 * nl)")
        super().__init__(nc, anchors_px, strides, ch[:nl])
        # m2 must be registered between m and ia to keep the official state-dict order
        ia, im = self.ia, self.im
        del self.ia, self.im
        self.m2 = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch[nl:])
        self.ia, self.im = ia, im

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        lead = super().forward(xs[: self.nl])
        aux = [self._shape(conv(x)) for conv, x in zip(self.m2, xs[self.nl :])]
        return lead + aux

    def _prediction_convs(self) -> list[Any]:
        return [self.m, self.m2]
