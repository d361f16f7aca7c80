"""Training configuration: one frozen dataclass, written to the run directory as the resolved config."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SMALL_DATASET_IMAGES = 1000  # below this many training images, recipe "auto" means the small-dataset recipe
# The README's BCCD recipe (yolov7-tiny from scratch, 364 images: test mAP50-95 0.58 vs 0.17 with the official one);
# close_mosaic is the last fifth of the run, at most 10 epochs (10 of 50 there).
SMALL_RECIPE: dict[str, Any] = {"optimizer": "adamw", "lr0": 0.002, "nbs": 16, "close_mosaic_share": 0.2}


def assign_strategies() -> tuple[str, ...]:
    """The assignment strategies of the loss (``core.loss.ASSIGN_STRATEGIES``)."""
    from core.loss import ASSIGN_STRATEGIES

    return tuple(ASSIGN_STRATEGIES)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the CLI flags of ``yolov7-studio train``).

    Recipe fields left at their defaults follow the official recipe, except ``warmup_min_iters`` (official
    1000 iterations, which covers the whole run on small datasets) and ``nbs`` (see the README). With ``recipe``
    ``"auto"`` a dataset of fewer than ``SMALL_DATASET_IMAGES`` training images gets the small-dataset recipe the
    README measured best on BCCD (``SMALL_RECIPE``: AdamW, lr0 0.002, nominal batch 16, no mosaic at the end) for
    the fields left at their defaults; ``core.train.setup.resolve_recipe`` applies it and says why in the log.
    """

    data: str
    recipe: str = "auto"  # auto (small recipe under SMALL_DATASET_IMAGES training images) | official | small
    model: str = "yolov7-tiny"
    width: float = 1.0  # channel-width multiple of the model (official width_multiple); < 1 for quick experiments
    out: str = "runs/train"
    weights: str | None = None  # our checkpoint or an official .pt: fine-tune from it
    aux: bool | None = None  # auxiliary head (default: as the official training config)
    # label assignment of the aux head (core.loss): independent | lead-guided | coarse-to-fine (official) |
    # coarse-to-fine-bounded; without an aux head it changes nothing
    assign: str = "coarse-to-fine"
    assign_bound: float | None = None  # coarse-to-fine-bounded's ceiling strength, >= 0 (None: core.loss.DEFAULT_BOUND)
    # where the aux head reads: top-down (official) | partial (P5 models, needs aux); None = top-down from scratch,
    # the start checkpoint's own wiring when fine-tuning (--weights)
    aux_wiring: str | None = None
    epochs: int = 100
    img: int = 640
    batch: int = 16  # total batch size over all processes (official --batch-size)
    device: str = "auto"
    hyp: str = "auto"  # p5 | p6 | tiny | custom | path to a YAML file; auto: tiny for tiny models, p6 for P6
    hyp_overrides: dict[str, float] = field(default_factory=dict)
    workers: int = 2
    seed: int = 0
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr_schedule: str = "cosine"  # cosine (official one-cycle) | linear
    nbs: int = 64  # nominal batch size: gradients are accumulated to it, weight decay scaled to it
    warmup_min_iters: int = 100  # official: 1000
    ema: bool = True
    amp: bool = True  # mixed precision on CUDA
    bf16: bool = False  # bf16 autocast on CPU (see the benchmark for when it pays off)
    channels_last: bool = True  # NHWC memory format: ~25% faster training on this CPU (oneDNN), also good on CUDA
    multi_scale: bool = False
    image_weights: bool = False
    freeze: tuple[int, ...] = ()  # layer indices whose parameters are frozen
    label_smoothing: float = 0.0
    cache_images: bool = False
    autoanchor: bool = True
    patience: int = 0  # early stopping: epochs without fitness improvement (0 = off)
    eval_interval: int = 1  # evaluate every N epochs (and always after the last)
    eval_conf: float = 0.001
    eval_iou: float = 0.65
    val_split: str = "val"
    train_split: str = "train"
    close_mosaic: int = 0  # turn mosaic/mixup off for the last N epochs (0 = official: never)
    save_period: int = 0  # also keep weights/epoch{N}.pt every N epochs (0 = off)
    sync_bn: bool = False
    objectness_every: int = 0  # lead/aux objectness maps of a fixed val image every N epochs (0 = off)
    max_steps: int = 0  # stop after this many optimizer iterations (0 = no limit; for tests and smoke runs)
    progress: bool = True
    plots: str = "all"  # all (HTML + PNG at the end) | html | none
    name: str | None = None

    def __post_init__(self) -> None:
        from core.models import AUX_WIRINGS

        strategies = assign_strategies()
        if self.assign not in strategies:
            raise ValueError(f"unknown assignment strategy {self.assign!r}; choose one of {', '.join(strategies)}")
        if self.aux_wiring is not None and self.aux_wiring not in AUX_WIRINGS:
            raise ValueError(
                f"unknown auxiliary-head wiring {self.aux_wiring!r}; choose one of {', '.join(AUX_WIRINGS)}"
            )
        if self.aux_wiring == "partial" and self.aux is False:
            raise ValueError("--aux-wiring partial wires the auxiliary head, but the auxiliary head is off (--no-aux)")
        if self.assign_bound is not None and not (
            isinstance(self.assign_bound, (int, float)) and math.isfinite(self.assign_bound) and self.assign_bound >= 0
        ):
            raise ValueError(f"assign_bound (the ceiling's strength) must be a number >= 0, got {self.assign_bound!r}")

    def check_model(self, spec: Any) -> None:
        """``ValueError`` when the aux settings do not fit the model ``spec`` (a ``core.models.ModelSpec``): the
        partial wiring needs an auxiliary head (``aux=True`` for P5 models) and is not for the P6 models."""
        if self.aux_wiring != "partial":
            return
        aux = spec.default_aux if self.aux is None else self.aux
        if spec.family == "p6":
            raise ValueError(
                f"--aux-wiring partial: {spec.name} is a P6 model, which keeps its official auxiliary wiring "
                "(top-down); the partial wiring is for the P5 models (yolov7-tiny, yolov7, yolov7x)"
            )
        if not aux:
            raise ValueError(
                f"--aux-wiring partial wires the auxiliary head, but {spec.name} has none by default: add --aux"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["freeze"] = list(self.freeze)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        d = dict(d)
        if "freeze" in d:
            d["freeze"] = tuple(d["freeze"] or ())
        return cls(**d)

    def write(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``{"config": fields, **extra}`` atomically (the run directory's config.json)."""
        from core.train.rundir import atomic_write_text

        payload = {"config": self.to_dict(), **(extra or {})}
        atomic_write_text(Path(path), json.dumps(payload, indent=1, default=str))
