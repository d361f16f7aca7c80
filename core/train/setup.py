"""The pieces the trainer is assembled from: device and seeds, data, hyperparameters, model, loss, loaders,
distributed wrapping, RNG state capture, progress bars and evaluation. Kept apart so that ``trainer.py`` reads
as the training loop and nothing else."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from core.train.config import SMALL_DATASET_IMAGES, SMALL_RECIPE, TrainConfig

T = TypeVar("T")


class StopTraining(Exception):
    """Raised to end the run cleanly (stop request, step limit), also from setup and evaluation."""


def interruptible(fn: Callable[[], T], should_stop: Callable[[], bool] | None, what: str, poll_s: float = 0.2) -> T:
    """``fn()``, run in a helper thread so that ``should_stop()`` is polled meanwhile; ``StopTraining`` when
    it turns true (the helper thread is left to finish in the background: it only reads files)."""
    if should_stop is None:
        return fn()
    if should_stop():
        raise StopTraining(f"stop requested during {what}")
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"yolov7-studio {what}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(poll_s)
        if worker.is_alive() and should_stop():
            raise StopTraining(f"stop requested during {what}")
    if "error" in box:
        error = box["error"]
        if not isinstance(error, StopTraining) and should_stop():
            # the work itself noticed the stop first (e.g. the dataset check's CheckStopped)
            raise StopTraining(f"stop requested during {what}") from error
        raise error
    return box["value"]


# -- distributed ------------------------------------------------------------------------------------------------
def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment; (0, 1) when not distributed."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def training_device(spec: str, rank: int) -> torch.device:
    """The device of this process; under torchrun with CUDA, ``cuda:LOCAL_RANK``. Starts the process group."""
    from core.device import select_device

    world = int(os.environ.get("WORLD_SIZE", 1))
    device = select_device(spec)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap_distributed(model: nn.Module, device: torch.device, sync_bn: bool, world: int) -> nn.Module:
    """DistributedDataParallel (optionally with SyncBatchNorm) under torchrun; the model itself otherwise."""
    if world <= 1:
        return model
    if sync_bn and device.type == "cuda":  # PyTorch's SyncBatchNorm runs on CUDA only
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)


def cleanup_distributed(ok: bool = True) -> None:
    """End the process group. After an error no barrier: the other ranks may never reach it (they end
    through the broken connection, or torchrun ends them)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


# -- randomness ------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as plain data (checkpoints are loaded with ``weights_only``)."""
    state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, cached = state
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- data ------------------------------------------------------------------------------------------------------------
def prepare_dataset(
    cfg: TrainConfig, log: Any, should_stop: Callable[[], bool] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load and check the dataset; returns the cleaned dataset and a summary. Clear errors for unusable data.

    ``should_stop`` is polled while the dataset is read and every image decoded (``StopTraining`` when true).
    """
    from core.data.check import check_dataset
    from core.data.load import load_dataset

    dataset = interruptible(lambda: load_dataset(cfg.data), should_stop, "setup (reading the dataset)")
    report = interruptible(
        lambda: check_dataset(dataset, decode=True, should_stop=should_stop),
        should_stop,
        "setup (decoding the dataset's images)",
    )  # the check itself skips the images not yet decoded once a stop is asked, so the process can end at once
    ds = report.dataset
    if not ds.images:
        raise ValueError(
            f"{cfg.data}: no usable images ({len(report.issues)} problems; run "
            f"`yolov7-studio data check {cfg.data}` for the list)"
        )
    train = ds.split(cfg.train_split)
    if not train:
        raise ValueError(f"{cfg.data}: no images in the '{cfg.train_split}' split (splits: {ds.split_counts()})")
    if sum(r.num_boxes for r in train) == 0:
        raise ValueError(f"{cfg.data}: the '{cfg.train_split}' split has no labelled boxes")
    counts = np.bincount(np.concatenate([r.classes for r in train]), minlength=ds.num_classes)
    missing = [n for n, c in zip(ds.class_names, counts) if c == 0]
    if missing:
        log(f"warning: classes without any training box (their AP stays 0): {', '.join(missing)}")
    if report.defective_boxes or report.left_out_images:
        log(
            f"data check: {report.left_out_images} images left out, {report.left_out_boxes} boxes dropped, "
            f"{report.clipped_boxes} clipped (details: `yolov7-studio data check {cfg.data}`)"
        )
    summary = {
        "path": str(cfg.data),
        "format": ds.format,
        "classes": list(ds.class_names),
        "splits": ds.split_counts(),
        "boxes": ds.num_boxes,
        "split_source": ds.split_info.describe(),
        "issues": report.counts_by_kind(),
    }
    log(
        f"data: {ds.format} dataset, {len(ds.images)} images {ds.split_counts()}, {ds.num_boxes} boxes, "
        f"{ds.num_classes} classes"
    )
    return ds, summary


def resolve_recipe(cfg: TrainConfig, n_train: int) -> tuple[TrainConfig, str]:
    """The recipe for ``n_train`` training images, and a log line saying which one and why.

    ``recipe="auto"`` picks the small-dataset recipe (``SMALL_RECIPE``) under ``SMALL_DATASET_IMAGES`` training
    images, else the official one; ``"small"``/``"official"`` force it. The small recipe only changes settings left
    at their defaults (optimizer, nominal batch, close_mosaic, lr0), so explicit flags always win. The returned
    config names the recipe it resolved to (a resumed or relaunched run resolves to the same).
    """
    defaults = TrainConfig(data="")
    if cfg.recipe not in ("auto", "small", "official"):
        raise ValueError(f"recipe {cfg.recipe!r}: expected auto, small or official")
    small = cfg.recipe == "small" or (cfg.recipe == "auto" and n_train < SMALL_DATASET_IMAGES)
    why = (
        "asked for (--recipe)"
        if cfg.recipe != "auto"
        else f"{n_train} training images {'<' if small else '>='} {SMALL_DATASET_IMAGES}"
    )
    if not small:
        return cfg.replace(recipe="official"), (
            f"recipe: official ({cfg.optimizer.upper()}, nominal batch {cfg.nbs}): {why}; "
            "--recipe small for the small-dataset recipe"
        )
    changes: dict[str, Any] = {}
    if cfg.optimizer == defaults.optimizer:
        changes["optimizer"] = SMALL_RECIPE["optimizer"]
        if "lr0" not in cfg.hyp_overrides:
            changes["hyp_overrides"] = {**cfg.hyp_overrides, "lr0": SMALL_RECIPE["lr0"]}
    if cfg.nbs == defaults.nbs:
        changes["nbs"] = SMALL_RECIPE["nbs"]
    if cfg.close_mosaic == defaults.close_mosaic and cfg.epochs >= 5:
        changes["close_mosaic"] = min(10, max(1, round(cfg.epochs * SMALL_RECIPE["close_mosaic_share"])))
    resolved = cfg.replace(recipe="small", **changes)
    lr0 = resolved.hyp_overrides.get("lr0")
    return resolved, (
        f"recipe: small-dataset ({resolved.optimizer.upper()}{f' lr0 {lr0:g}' if lr0 is not None else ''}, "
        f"nominal batch {resolved.nbs}, warmup >= {resolved.warmup_min_iters} it, no mosaic in the last "
        f"{resolved.close_mosaic} epochs): {why}. On BCCD (364 images) it reached test mAP50-95 0.58 where the "
        "official recipe (SGD, nominal batch 64: few optimizer steps on a small dataset) reached 0.17; "
        "--recipe official for the official one"
        + (f"; kept as given: {', '.join(sorted(_given(cfg, defaults)))}" if _given(cfg, defaults) else "")
    )


def _given(cfg: TrainConfig, defaults: TrainConfig) -> list[str]:
    given = [f for f in ("optimizer", "nbs", "close_mosaic") if getattr(cfg, f) != getattr(defaults, f)]
    return given + (["lr0"] if "lr0" in cfg.hyp_overrides else [])


def from_scratch_warning(cfg: TrainConfig, n_train: int) -> str | None:
    """A warning before a long wait: training from scratch on a small dataset learns little in a short run."""
    if cfg.weights or n_train >= SMALL_DATASET_IMAGES:
        return None
    return (
        f"warning: training from scratch on {n_train} images: a from-scratch model needs many epochs on a small "
        "dataset (yolov7-tiny on ~200 images at 320 px reached test mAP50 0.07 after 12 epochs; BCCD needed 50 "
        "epochs for 0.89). For a useful model sooner, start from pretrained weights: --weights with an official "
        "YOLOv7 .pt (e.g. yolov7-tiny.pt from the YOLOv7 releases; upload it in the studio) or one of your checkpoints"
    )


def val_split(cfg: TrainConfig, dataset: Any) -> str:
    """The split to evaluate on: ``cfg.val_split`` if it has images, else test, else train (logged)."""
    for name in (cfg.val_split, "val", "test", cfg.train_split):
        if dataset.split(name):
            return name
    return cfg.train_split


def resolve_hyp(cfg: TrainConfig) -> Any:
    from core.data.hyp import get_hyp
    from core.models import get_spec

    name = cfg.hyp
    if name == "auto":
        spec = get_spec(cfg.model) if not Path(cfg.model).suffix else None
        family = spec.family if spec else "p5"
        name = {"tiny": "tiny", "p6": "p6"}.get(family, "p5")
    hyp = get_hyp(name)
    return hyp.replace(**cfg.hyp_overrides) if cfg.hyp_overrides else hyp


def train_loader(cfg: TrainConfig, dataset: Any, hyp: Any, rank: int, world: int) -> Any:
    from core.data.loader import create_train_loader

    if cfg.batch % world:
        raise ValueError(f"--batch {cfg.batch} (the total batch) must be divisible by the {world} processes")
    loader = create_train_loader(
        dataset,
        cfg.img,
        cfg.batch // world,
        hyp,
        cfg.workers,
        cfg.seed,
        split=cfg.train_split,
        cache_images=cfg.cache_images,
    )
    if world > 1:
        loader.sampler.num_replicas, loader.sampler.rank = world, rank
    return loader


def set_mosaic(loader: Any, hyp: Any, enabled: bool) -> None:
    """Turn mosaic (and MixUp, which needs it) on or off for the coming epoch (``close_mosaic``)."""
    ds = loader.dataset
    ds.hyp = hyp if enabled else hyp.replace(mosaic=0.0, mixup=0.0)
    ds.mosaic = enabled and ds.augment and not ds.rect and hyp.mosaic > 0


def multi_scale(imgs: torch.Tensor, cfg: TrainConfig, epoch: int, step: int, stride: int) -> torch.Tensor:
    """Official multi-scale, with the size drawn from an RNG seeded by (seed, epoch, step) for exact resume."""
    from core.data.loader import multi_scale_resize

    rng = random.Random(hash((cfg.seed, epoch, step)))
    return multi_scale_resize(imgs, cfg.img, max(stride, 32), rng)


# -- model ---------------------------------------------------------------------------------------------------------
def read_resume_checkpoint(path: Path) -> dict[str, Any]:
    from core.checkpoint.io import CheckpointError, read_checkpoint

    file = path / "weights" / "last.pt" if path.is_dir() else path
    ckpt = read_checkpoint(file)
    if not ckpt.get("train") or "scheduler" not in ckpt["train"]:
        raise CheckpointError(f"{file}: has no training state to resume from (was it written by `train`?)")
    return ckpt


def build_or_load_model(cfg: TrainConfig, dataset: Any, ckpt: dict[str, Any] | None) -> tuple[Any, str | None]:
    """A resumed model, a model fine-tuned from ``cfg.weights``, or a fresh one; plus a note for the log."""
    from core.checkpoint.io import build_from_record, load_model
    from core.models import build_model

    names = list(dataset.class_names)
    if ckpt is not None:
        model = build_from_record(ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
        if list(model.names) != names:
            raise ValueError(f"cannot resume: the checkpoint's classes {model.names} differ from the dataset's {names}")
        return model, None
    if cfg.weights:
        loaded = load_model(cfg.weights, class_names=names, aux=cfg.aux, aux_wiring=cfg.aux_wiring)
        model = loaded.model
        if cfg.aux_wiring == "partial" and not model.aux:
            raise ValueError(f"--aux-wiring partial: {cfg.weights} has no auxiliary head to wire; add --aux")
        if any(type(m).__name__ == "Conv" and not hasattr(m, "bn") for m in model.modules()):
            raise ValueError(f"{cfg.weights}: a fused deploy model cannot be trained; use a training checkpoint")
        note = f"fine-tuning from {cfg.weights}: {loaded.description}"
        if loaded.transfer is not None and not loaded.transfer.exact:
            note += "\n" + loaded.transfer.summary()
        return model, note
    from core.models import get_spec, scale_width

    spec = get_spec(cfg.model) if cfg.width == 1.0 else scale_width(get_spec(cfg.model), cfg.width)
    cfg.check_model(spec)
    wiring = cfg.aux_wiring or "top-down"
    return build_model(spec, len(names), aux=cfg.aux, class_names=names, aux_wiring=wiring), None


def freeze_layers(model: nn.Module, layers: tuple[int, ...], log: Any) -> None:
    if not layers:
        return
    prefixes = tuple(f"model.{i}." for i in layers)
    frozen = 0
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen += p.numel()
    log(f"froze layers {list(layers)} ({frozen:,} parameters)")


def check_anchors(model: Any, dataset: Any, cfg: TrainConfig, hyp: Any) -> str:
    """Official autoanchor: if the best possible recall of the anchors is below 0.98, evolve new ones."""
    from core.train.autoanchor import check_and_evolve

    return check_and_evolve(model, dataset, cfg.img, hyp.anchor_t, split=cfg.train_split, seed=cfg.seed)


def build_loss(
    model: Any,
    hyp: Any,
    img_size: int,
    label_smoothing: float,
    assign: str = "coarse-to-fine",
    bound: float | None = None,
) -> Any:
    """The loss of ``model`` with the assignment strategy ``assign``; ``bound`` None: the loss's default."""
    from dataclasses import replace

    from core.loss import DEFAULT_BOUND, LossHyp, YoloLoss

    lh = LossHyp.from_dict(hyp.to_dict()).scaled(model.num_levels, model.nc, img_size)
    lh = replace(lh, label_smoothing=label_smoothing)
    bound = DEFAULT_BOUND if bound is None else bound
    return YoloLoss.from_model(model, lh, aux=model.aux, strategy=assign, bound=bound)


def describe_assignment(cfg: TrainConfig, model: Any) -> str:
    """``"assign coarse-to-fine, aux wiring top-down"`` (with the bound for the bounded strategy); "" without aux."""
    if not getattr(model, "aux", False):
        return ""
    text = f"assign {cfg.assign}"
    if cfg.assign == "coarse-to-fine-bounded":
        from core.loss import DEFAULT_BOUND

        text += f" (bound {DEFAULT_BOUND if cfg.assign_bound is None else cfg.assign_bound:g})"
    return f"{text}, aux wiring {getattr(model, 'aux_wiring', 'top-down')}"


# -- running ---------------------------------------------------------------------------------------------------------
def autocast(device: torch.device, amp: bool, bf16: bool) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def progress(loader: Any, total: int, desc: str, enabled: bool, start: int = 0) -> Any:
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(
        loader, total=total, desc=desc, initial=0, dynamic_ncols=True, leave=True, bar_format="{l_bar}{bar:20}{r_bar}"
    )


def update_progress(pbar: Any, losses: dict[str, float], size: int) -> None:
    if hasattr(pbar, "set_postfix_str"):
        aux = losses["aux_box"] + losses["aux_obj"] + losses["aux_cls"]
        pbar.set_postfix_str(
            f"box {losses['box']:.4f} obj {losses['obj']:.4f} cls {losses['cls']:.4f}"
            + (f" aux {aux:.4f}" if aux else "")
            + f" img {size}",
            refresh=False,
        )


def close_progress(pbar: Any) -> None:
    if hasattr(pbar, "close"):
        pbar.close()


class _StoppableLoader:
    """A loader that raises ``StopTraining`` before the next batch once ``should_stop()`` is true."""

    def __init__(self, loader: Any, should_stop: Callable[[], bool], what: str) -> None:
        self.loader, self.should_stop, self.what = loader, should_stop, what

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            if self.should_stop():
                raise StopTraining(f"stop requested during {self.what}")
            yield batch


def evaluate_model(
    model: Any,
    dataset: Any,
    cfg: TrainConfig,
    device: torch.device,
    save_json: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    what: str = "evaluation",
) -> Any:
    """Evaluate on ``val_split``; ``should_stop`` is checked before every batch (``StopTraining`` when true).
    ``save_json``: the COCO results list, written atomically."""
    import json

    from core.data.loader import create_val_loader
    from core.eval import evaluate
    from core.models import Yolo
    from core.nms import NmsConfig
    from core.train.rundir import atomic_write_text

    split = val_split(cfg, dataset)
    batch_size = max(cfg.batch, 8)
    workers = min(cfg.workers, 2)
    stride = max(model.head.strides) if isinstance(model, Yolo) else 32
    loader: Any = create_val_loader(dataset, cfg.img, batch_size, workers, split=split, stride=max(int(stride), 32))
    if should_stop is not None:
        loader = _StoppableLoader(loader, should_stop, what)
    result = evaluate(
        model,
        dataset,
        split,
        img_size=cfg.img,
        batch_size=batch_size,
        workers=workers,
        nms=NmsConfig(conf=cfg.eval_conf, iou=cfg.eval_iou, multi_label=True),
        device=device,
        loader=loader,
    )
    if save_json is not None:
        atomic_write_text(Path(save_json), json.dumps(result.detections))
    return result


# -- image weights -------------------------------------------------------------------------------------------------
def class_weights(dataset: Any, split: str, nc: int) -> np.ndarray:
    """Official ``labels_to_class_weights``: inverse label frequency (empty classes counted once), summing to 1."""
    labels = [np.asarray(r.classes) for r in dataset.split(split)]
    counts = np.bincount(np.concatenate(labels).astype(np.int64), minlength=nc)[:nc].astype(np.float64)
    counts[counts == 0] = 1
    w = 1.0 / counts
    return w / w.sum()


def image_weights(dataset: Any, split: str, cw: np.ndarray, per_class_map: np.ndarray) -> np.ndarray:
    """Per image: sum over its labels of ``cw * (1 - mAP_class)^2 / nc`` (official ``--image-weights``)."""
    nc = len(cw)
    w_cls = cw * nc * (1 - per_class_map) ** 2 / nc
    out = np.array([w_cls[np.asarray(r.classes, dtype=np.int64)].sum() for r in dataset.split(split)])
    out[out <= 0] = w_cls.min() if w_cls.min() > 0 else 1e-6  # images without labels stay drawable
    return out


def sync_flag(flag: bool, world: int) -> bool:
    """True on every rank when it is true on any rank (stop requests seen by rank 0 reach all ranks)."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
