"""The YOLOv7 network: an ``nn.ModuleList`` named ``model`` whose indices are the official layer numbers.

Forward contract
* training mode: ``list`` of raw per-level tensors ``[B, na, H, W, 5 + nc]`` (lead levels, then aux levels);
* eval mode: the decoded ``[B, N, 5 + nc]`` (xywh in input pixels, objectness, class probabilities), exactly
  as the official model's first output; traceable for export. ``forward_levels`` gives the raw levels in
  either mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.models.builder import build_layers, check_aux_wiring
from core.models.heads import Detect, IAuxDetect, IDetect
from core.models.specs import ModelSpec


class Yolo(nn.Module):
    """A YOLOv7 variant built from a :class:`ModelSpec`.

    ``deploy=True`` builds the official deploy config: a plain ``Detect`` head without implicit layers and no
    auxiliary branch (RepConv/BN still unfused until :func:`core.models.fuse_blocks`).
    ``aux`` adds the auxiliary head (default: as in the official training config, i.e. on for P6).
    ``aux_wiring``: where the auxiliary head reads from, ``"top-down"`` (official) or ``"partial"`` (P5 models;
    see :mod:`core.models.builder`). Without an auxiliary head it is ignored and ``model.aux_wiring`` is
    ``"top-down"``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        num_classes: int = 80,
        *,
        deploy: bool = False,
        aux: bool | None = None,
        class_names: list[str] | None = None,
        anchors: torch.Tensor | None = None,
        aux_wiring: str = "top-down",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if aux is None:
            aux = spec.default_aux
        if deploy:
            aux = False
        check_aux_wiring(spec, aux_wiring, bool(aux))
        self.spec = spec
        self.nc = num_classes
        self.deploy = deploy
        self.aux = bool(aux)
        self.aux_wiring = aux_wiring if self.aux else "top-down"
        self.names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.names) != num_classes:
            raise ValueError(f"{len(self.names)} class names for {num_classes} classes")

        layout = build_layers(spec, with_aux=self.aux, aux_wiring=self.aux_wiring)
        g = layout.graph
        anchors_px = torch.tensor(spec.anchors, dtype=torch.float32) if anchors is None else anchors.float()
        strides = list(spec.strides)
        ch = [g.ch[j] for j in layout.lead_from + layout.aux_from]
        if deploy:
            head: Detect = Detect(num_classes, anchors_px, strides, ch)
        elif self.aux:
            head = IAuxDetect(num_classes, anchors_px, strides, ch)
        else:
            head = IDetect(num_classes, anchors_px, strides, ch)
        head.initialize_biases()
        g.add(head, layout.lead_from + layout.aux_from, 0)

        self.model = nn.ModuleList(g.layers)
        froms = [getattr(m, "f") for m in g.layers]  # noqa: B009
        self.save = sorted({j for f in froms for j in ([f] if isinstance(f, int) else f) if j >= 0})
        self.lead_from = layout.lead_from
        self.aux_from = layout.aux_from
        self.backbone_end = layout.backbone_end
        self._aux_layers = set(layout.aux_from)
        self._save = set(self.save)

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def head(self) -> Detect:
        return self.model[-1]  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stride(self) -> torch.Tensor:
        return self.head.stride

    @property
    def num_levels(self) -> int:
        return self.head.nl

    # -- forward ---------------------------------------------------------------------------------------------
    def forward_levels(self, x: torch.Tensor, aux: bool | None = None) -> list[torch.Tensor]:
        """Raw head outputs ``[B, na, H, W, 5+nc]`` per level: lead levels, then aux levels if computed.

        ``aux`` (default: only in training mode) controls whether the auxiliary branch runs.
        """
        run_aux = self.aux and (self.training if aux is None else aux)
        saved: dict[int, torch.Tensor] = {}
        inp = x
        last = self.model[-1]
        for m in self.model:
            i: int = getattr(m, "i")  # noqa: B009 - layer attributes set by the builder
            f: Any = getattr(m, "f")  # noqa: B009
            if i in self._aux_layers and not run_aux:
                continue
            if m is last:
                feats = [saved[j] for j in (f if run_aux else self.lead_from)]
                if isinstance(m, IAuxDetect) and not run_aux:
                    return IDetect.forward(m, feats)
                return m(feats)
            if isinstance(f, list):
                x = m([inp if j == -1 else saved[j] for j in f])
            elif f == -1:
                x = m(inp)
            else:
                x = m(saved[f]) if f != i - 1 else m(x)
            if i in self._save:
                saved[i] = x
        raise RuntimeError("model has no head")  # pragma: no cover

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        if self.training:
            return self.forward_levels(x)
        return self.head.decode(self.forward_levels(x, aux=False))

    def extra_repr(self) -> str:
        form = "deploy" if self.deploy else "training"
        wiring = f", aux_wiring={self.aux_wiring}" if self.aux else ""
        return f"name={self.spec.name}, nc={self.nc}, form={form}, aux={self.aux}{wiring}"
