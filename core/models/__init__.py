"""The YOLOv7 model zoo: every official variant, built in plain Python with the official layer numbering.

>>> model = build_model("yolov7-tiny", num_classes=3)
>>> deploy = reparameterize(model)  # fused inference form, numerically equal
"""

from __future__ import annotations

import torch

from core.models.blocks import (
    MP,
    SP,
    SPPCSPC,
    Concat,
    Conv,
    DownC,
    ImplicitA,
    ImplicitM,
    ReOrg,
    RepConv,
    Shortcut,
)
from core.models.builder import AUX_WIRINGS
from core.models.fuse import fuse_blocks, reparameterize
from core.models.heads import Detect, IAuxDetect, IDetect
from core.models.profile import count_gflops, count_params
from core.models.specs import SPECS, Elan, ModelSpec, compound_scale, get_spec, scale_width
from core.models.yolo import Yolo

__all__ = [
    "AUX_WIRINGS",
    "count_gflops",
    "count_params",
    "MP",
    "SP",
    "SPECS",
    "SPPCSPC",
    "Concat",
    "Conv",
    "Detect",
    "DownC",
    "Elan",
    "IAuxDetect",
    "IDetect",
    "ImplicitA",
    "ImplicitM",
    "ModelSpec",
    "ReOrg",
    "RepConv",
    "Shortcut",
    "Yolo",
    "build_model",
    "compound_scale",
    "fuse_blocks",
    "get_spec",
    "list_models",
    "model_anchors",
    "reparameterize",
    "scale_width",
]


def list_models() -> list[str]:
    """Names of every registered variant, smallest first."""
    return list(SPECS)


def build_model(
    name: str | ModelSpec,
    num_classes: int = 80,
    *,
    deploy: bool = False,
    aux: bool | None = None,
    class_names: list[str] | None = None,
    anchors: torch.Tensor | None = None,
    aux_wiring: str = "top-down",
) -> Yolo:
    """Build a variant by name (``yolov7-tiny``, ``yolov7-tiny-silu``, ``yolov7``, ``yolov7x``, ``yolov7-w6``,
    ``yolov7-e6``, ``yolov7-d6``, ``yolov7-e6e``) or from a spec (e.g. one made by :func:`compound_scale`).

    ``deploy``: the official deploy config (plain Detect head, no aux branch). ``aux``: add the auxiliary head
    (default: as the official training config; ``True`` also works for the P5 models). ``anchors``: pixel
    anchors (nl, na, 2) replacing the defaults (e.g. after autoanchor). ``aux_wiring``: ``"top-down"`` (official)
    or ``"partial"`` (P5 models; see :mod:`core.models.builder`), ignored without the auxiliary head.
    """
    spec = get_spec(name) if isinstance(name, str) else name
    return Yolo(
        spec, num_classes, deploy=deploy, aux=aux, class_names=class_names, anchors=anchors, aux_wiring=aux_wiring
    )


def model_anchors(name: str) -> tuple[list[list[tuple[float, float]]], list[int]]:
    """Default anchors of a variant: per level a list of (w, h) in pixels, and the level strides."""
    spec = get_spec(name)
    return [[(float(w), float(h)) for w, h in level] for level in spec.anchors], list(spec.strides)
