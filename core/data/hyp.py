"""Training hyperparameters: the official presets (``hyp.scratch.{p5,p6,tiny,custom}.yaml`` values, FACTS 1e).

API for the trainer::

    from core.data.hyp import Hyp, get_hyp, HYP_PRESETS
    hyp = get_hyp("tiny")                      # a preset (p5, p6, tiny, custom) ...
    hyp = get_hyp("my_hyp.yaml")               # ... or an official-style YAML file (missing keys: p5 values)
    hyp = hyp.replace(mixup=0.0)               # frozen: change fields by copy
    hyp.to_yaml("run/hyp.yaml"); hyp.to_dict()

Optimizer/loss keys (lr0 ... fl_gamma, loss_ota) are read by the trainer and loss; augmentation keys (hsv_h ...
paste_in) by ``core.data.pipeline``. ``copy_paste`` and ``paste_in`` are carried for fidelity but the loader does not
implement them yet (both are 0 in ``custom``; ``paste_in`` is 0.15/0.05 in the official p5/p6/tiny files).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Hyp:
    """One hyperparameter set; field names and meanings are the official YAML keys."""

    lr0: float = 0.01
    lrf: float = 0.1
    momentum: float = 0.937
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    box: float = 0.05
    cls: float = 0.3
    cls_pw: float = 1.0
    obj: float = 0.7
    obj_pw: float = 1.0
    iou_t: float = 0.2
    anchor_t: float = 4.0
    fl_gamma: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.2
    scale: float = 0.9
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.15
    copy_paste: float = 0.0
    paste_in: float = 0.15
    loss_ota: int = 1

    def replace(self, **changes: Any) -> Hyp:
        """Copy with some fields changed (unknown names raise ``TypeError``)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: Hyp | None = None, strict: bool = True) -> Hyp:
        """Hyp from a mapping; keys not given keep ``base``'s values (default: p5).

        Raises:
            ValueError: unknown keys when ``strict`` (they are ignored otherwise), or non-numeric values.
        """
        base = base or HYP_P5
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown and strict:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}")
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                continue
            try:
                changes[key] = int(value) if key == "loss_ota" else float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"hyperparameter {key}: {value!r} is not a number") from exc
        return replace(base, **changes)

    @classmethod
    def from_yaml(cls, path: str | Path, base: Hyp | None = None, strict: bool = True) -> Hyp:
        """Hyp from an official-style YAML file (e.g. ``hyp.scratch.p5.yaml``)."""
        content = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(content, dict):
            raise ValueError(f"{path}: expected a mapping of hyperparameters")
        return cls.from_dict(content, base=base, strict=strict)


HYP_P5 = Hyp()
HYP_P6 = Hyp(lrf=0.2)
HYP_TINY = Hyp(lrf=0.01, cls=0.5, obj=1.0, translate=0.1, scale=0.5, mixup=0.05, paste_in=0.05)
HYP_CUSTOM = Hyp(scale=0.5, mixup=0.0, paste_in=0.0)
HYP_PRESETS: dict[str, Hyp] = {"p5": HYP_P5, "p6": HYP_P6, "tiny": HYP_TINY, "custom": HYP_CUSTOM}

# 9-image mosaic share among mosaic samples: hard-coded in the official loader, not a hyp key.
MOSAIC9_PROB = 0.2
# Beta(alpha, alpha) of the MixUp blend ratio (official).
MIXUP_BETA = 8.0


def get_hyp(name_or_path: str | Path | Hyp) -> Hyp:
    """A preset by name (``p5``, ``p6``, ``tiny``, ``custom``), a YAML file, or a ``Hyp`` passed through."""
    if isinstance(name_or_path, Hyp):
        return name_or_path
    key = str(name_or_path).lower().removeprefix("hyp.scratch.").removesuffix(".yaml")
    if key in HYP_PRESETS and not Path(str(name_or_path)).is_file():
        return HYP_PRESETS[key]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"{name_or_path!r}: not a preset ({', '.join(HYP_PRESETS)}) nor a YAML file")
    return Hyp.from_yaml(path)


def default_hyp_for(model_name: str) -> Hyp:
    """The official preset for a model: tiny for ``yolov7-tiny*``, p6 for the 4-level models, else p5."""
    name = model_name.lower()
    if "tiny" in name:
        return HYP_TINY
    if any(tag in name for tag in ("w6", "e6", "d6")):
        return HYP_P6
    return HYP_P5
