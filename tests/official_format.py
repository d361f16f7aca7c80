"""Write checkpoint files in the official YOLOv7 formats, for tests (official files cannot be downloaded here).

The official train.py pickles whole ``models.yolo.Model`` objects. We reproduce that byte layout from our own
models: stand-in classes are registered under the official module paths (``models.yolo``, ``models.common``)
only while saving, each of our modules is re-classed to its stand-in, and the dict is saved as train.py,
strip_optimizer or the re-parameterization notebook would. After saving, the fake modules are removed so that
loading cannot import them.
"""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models import Yolo
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


def _fake_modules() -> dict[str, types.ModuleType]:
    pkg = types.ModuleType("models")
    common = types.ModuleType("models.common")
    yolo = types.ModuleType("models.yolo")
    pkg.common, pkg.yolo = common, yolo
    for name in _COMMON.values():
        setattr(common, name, type(name, (nn.Module,), {"__module__": "models.common", "__qualname__": name}))
    for name in [*_YOLO.values(), "Model"]:
        setattr(yolo, name, type(name, (nn.Module,), {"__module__": "models.yolo", "__qualname__": name}))
    return {"models": pkg, "models.common": common, "models.yolo": yolo}


def _officialise(model: Yolo, mods: dict[str, types.ModuleType]) -> nn.Module:
    """A deep copy of ``model`` whose classes are the official ones, with the official Model attributes."""
    m = copy.deepcopy(model).cpu()
    for sub in m.modules():
        if type(sub) in _COMMON:
            sub.__class__ = getattr(mods["models.common"], _COMMON[type(sub)])
        elif type(sub) in _YOLO:
            sub.__class__ = getattr(mods["models.yolo"], _YOLO[type(sub)])
        elif isinstance(sub, B.Upsample):
            sub.__class__ = nn.Upsample
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


def write_official(path: str | Path, model: Yolo, kind: str = "train") -> Path:
    """Save ``model`` as an official file: ``train`` (train.py dict, fp16 model + ema), ``stripped``
    (strip_optimizer: ema moved to model, fp16, epoch -1) or ``deploy`` (notebook: 4-key dict)."""
    mods = _fake_modules()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        official = _officialise(model, mods)
        if kind == "train":
            ckpt = {
                "epoch": 3,
                "best_fitness": np.array([0.25]),
                "training_results": "results",
                "model": copy.deepcopy(official).half(),
                "ema": copy.deepcopy(official).half(),
                "updates": 120,
                "optimizer": {"state": {}, "param_groups": []},
                "wandb_id": None,
            }
        elif kind == "stripped":
            half = official.half()
            for p in half.parameters():
                p.requires_grad_(False)
            ckpt = {
                "epoch": -1,
                "best_fitness": np.array([0.25]),
                "training_results": None,
                "model": half,
                "ema": None,
                "updates": None,
                "optimizer": None,
                "wandb_id": None,
            }
        elif kind == "deploy":
            ckpt = {"model": official.half(), "optimizer": None, "training_results": None, "epoch": -1}
        else:
            raise ValueError(kind)
        torch.save(ckpt, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return Path(path)
