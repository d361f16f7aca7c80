"""Write checkpoint files in the official YOLOv7 formats, for tests (official files cannot be downloaded here).

The official train.py pickles whole ``models.yolo.Model`` objects. We reproduce that byte layout from our own
models: stand-in classes are registered under the official module paths (``models.yolo``, ``models.common``)
only while saving, each of our modules is re-classed to its stand-in, and the dict is saved as train.py,
strip_optimizer or the re-parameterization notebook would. After saving, the fake modules are removed so that
loading cannot import them.

``fuse=True`` reproduces what official ``Model.fuse()`` leaves in a model (FACTS.md 1d): BN folded into every
Conv and RepConv merged, the implicit terms folded into the head convs with ``ia``/``im`` kept (unused), and
``forward = fuseforward`` set on each fused Conv and on the IDetect/IAuxDetect head, which pickles as
``getattr(<module>, 'fuseforward')``.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models import Yolo, fuse_blocks
from core.models import blocks as B
from core.models import heads as H

_COMMON = {
    B.Conv: "Conv",
    B.RepConv: "RepConv",
    B.MP: "MP",
    B.SP: "SP",
    B.SPPCSPC: "SPPCSPC",
    B.Concat: "Concat",
    B.Shortcut: "Shortcut",
    B.ReOrg: "ReOrg",
    B.DownC: "DownC",
    B.ImplicitA: "ImplicitA",
    B.ImplicitM: "ImplicitM",
}
_YOLO = {H.Detect: "Detect", H.IDetect: "IDetect", H.IAuxDetect: "IAuxDetect"}


_FUSEFORWARD = {"Conv", "IDetect", "IAuxDetect"}  # official classes with a fuseforward method


def fuseforward(self: nn.Module, *args: object) -> None:  # pickled by name: getattr(obj, "fuseforward")
    raise NotImplementedError


def _fake_modules() -> dict[str, types.ModuleType]:
    pkg = types.ModuleType("models")
    common = types.ModuleType("models.common")
    yolo = types.ModuleType("models.yolo")
    pkg.common, pkg.yolo = common, yolo
    for mod, names in ((common, list(_COMMON.values())), (yolo, [*_YOLO.values(), "Model"])):
        for name in names:
            attrs = {"__module__": mod.__name__, "__qualname__": name}
            if name in _FUSEFORWARD:
                attrs["fuseforward"] = fuseforward
            setattr(mod, name, type(name, (nn.Module,), attrs))
    return {"models": pkg, "models.common": common, "models.yolo": yolo}


@contextlib.contextmanager
def official_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Fake ``models``/``models.common``/``models.yolo`` importable only inside the block (for pickling)."""
    mods = _fake_modules()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@torch.no_grad()
def _official_fuse(m: Yolo) -> None:
    """What official ``Model.fuse()`` does to the weights, on our classes: BN/RepConv fused, implicit folded."""
    fuse_blocks(m)
    head = m.head
    if isinstance(head, H.IDetect):
        for conv, (w, b) in zip(head.m, head.folded_convs()):
            conv.weight.copy_(w)
            conv.bias.copy_(b)


def _officialise(model: Yolo, mods: dict[str, types.ModuleType], fuse: bool = False) -> nn.Module:
    """A deep copy of ``model`` whose classes are the official ones, with the official Model attributes."""
    m = copy.deepcopy(model).cpu()
    if fuse:
        _official_fuse(m)
    for sub in m.modules():
        if type(sub) in _COMMON:
            sub.__class__ = getattr(mods["models.common"], _COMMON[type(sub)])
        elif type(sub) in _YOLO:
            sub.__class__ = getattr(mods["models.yolo"], _YOLO[type(sub)])
        elif isinstance(sub, B.Upsample):
            sub.__class__ = nn.Upsample
        if fuse and type(sub).__name__ in _FUSEFORWARD and type(sub).__module__.startswith("models."):
            sub.forward = sub.fuseforward  # as official fuse(): pickles as getattr(sub, 'fuseforward')
    official = mods["models.yolo"].Model()
    official.model = nn.Sequential(*m.model)
    official.yaml = {
        "nc": model.nc,
        "depth_multiple": 1.0,
        "width_multiple": 1.0,
        "anchors": model.head.anchor_grid.view(model.head.nl, -1).tolist(),
        "backbone": [],
        "head": [],
    }
    official.yaml_file = f"{model.spec.name}.yaml"
    official.save = list(model.save)
    official.names = list(model.names)
    official.nc = model.nc
    official.stride = model.head.stride.clone()
    official.traced = False
    official.gr = 1.0
    official.hyp = {"lr0": 0.01, "box": 0.05}
    official.class_weights = torch.ones(model.nc)
    return official


def write_official(
    path: str | Path, model: Yolo, kind: str = "train", *, fuse: bool = False, half: bool = True
) -> Path:
    """Save ``model`` as an official file: ``train`` (train.py dict, fp16 model + ema), ``stripped``
    (strip_optimizer: ema moved to model, fp16, epoch -1) or ``deploy`` (notebook: 4-key dict).

    ``fuse``: after official ``Model.fuse()`` (see the module docstring). ``half=False`` keeps float32."""

    def cast(m: nn.Module) -> nn.Module:
        return m.half() if half else m

    with official_modules() as mods:
        official = _officialise(model, mods, fuse)
        if kind == "train":
            ckpt = {
                "epoch": 3,
                "best_fitness": np.array([0.25]),
                "training_results": "results",
                "model": cast(copy.deepcopy(official)),
                "ema": cast(copy.deepcopy(official)),
                "updates": 120,
                "optimizer": {"state": {}, "param_groups": []},
                "wandb_id": None,
            }
        elif kind == "stripped":
            stripped = cast(official)
            for p in stripped.parameters():
                p.requires_grad_(False)
            ckpt = {
                "epoch": -1,
                "best_fitness": np.array([0.25]),
                "training_results": None,
                "model": stripped,
                "ema": None,
                "updates": None,
                "optimizer": None,
                "wandb_id": None,
            }
        elif kind == "deploy":
            ckpt = {"model": cast(official), "optimizer": None, "training_results": None, "epoch": -1}
        else:
            raise ValueError(kind)
        torch.save(ckpt, path)
    return Path(path)
