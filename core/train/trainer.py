"""The training engine: the official YOLOv7 recipe, observable from other processes, resumable without loss.

``Trainer(cfg).fit()`` runs a whole training; see :mod:`core.train.rundir` for what it writes. Everything that
is random is derived from ``(seed, epoch, step)`` (data order, augmentation, multi-scale sizes), so a run
resumed from any checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.device import cpu_has_native_bf16
from core.train import setup as S
from core.train.config import TrainConfig
from core.train.ema import ModelEMA
from core.train.hooks import Hook, StatusHook
from core.train.optim import accumulation, apply_warmup, build_optimizer, lr_lambda, warmup_iterations
from core.train.plots import PlotHook
from core.train.rundir import RunDir

LOSS_COLUMNS = ("box", "obj", "cls", "aux_box", "aux_obj", "aux_cls", "total")


class StopTraining(Exception):
    """Raised inside the loop to end the run cleanly (stop request, step limit)."""


def fitness(metrics: dict[str, float]) -> float:
    """Official model selection: 0.1 * mAP50 + 0.9 * mAP50-95."""
    return 0.1 * float(metrics.get("mAP50", 0.0)) + 0.9 * float(metrics.get("mAP50-95", 0.0))


class Trainer:
    """One training run (see the module docstring). ``hooks`` observe it; ``log`` receives text lines."""

    def __init__(
        self, cfg: TrainConfig, *, hooks: list[Hook] | None = None, resume: str | Path | None = None, log: Any = print
    ) -> None:
        self.cfg = cfg
        self.resume_from = Path(resume) if resume else None
        self.hooks = [StatusHook(), PlotHook(), *(hooks or [])]
        self._print = log
        self.epoch = 0
        self.step = 0
        self.iteration = 0
        self.last_opt_step = -1
        self.best_fitness = -1.0
        self.bad_epochs = 0
        self.metrics: dict[str, float] = {}
        self.images_per_s = 0.0
        self._loss_sums = torch.zeros(len(LOSS_COLUMNS))
        self._loss_count = 0
        self._stop_reason: str | None = None
        self.rank, self.world = S.distributed_rank_world()
        self.is_main = self.rank == 0
        if cfg.objectness_every > 0:  # lead/aux objectness maps of a fixed val image (core.explore.training)
            from core.explore.training import ObjectnessHook

            self.hooks.append(ObjectnessHook(cfg.objectness_every))

    # -- logging -------------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.is_main:
            self._print(message)
            self.run.log(message)

    def running_losses(self) -> dict[str, float]:
        n = max(self._loss_count, 1)
        return {k: float(v) / n for k, v in zip(LOSS_COLUMNS, self._loss_sums)}

    # -- setup ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self.run = RunDir(cfg.out)
        if self.is_main and self.resume_from is None and (self.run.last.exists() or self.run.results.exists()):
            raise ValueError(
                f"{cfg.out} already holds a run (weights/last.pt or results.csv): resume it with "
                "--resume, or choose another --out"
            )
        if self.is_main:
            self.run.create()
            self.run.clear_stop()
            if self.resume_from is None:
                self.run.status_file.unlink(missing_ok=True)
            self.run.write_status("queued", message="setting up", epochs=cfg.epochs)
        self.device = S.training_device(cfg.device, self.rank)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal activations/gradients can slow CPU convolutions ~10x
            if cfg.bf16 and not cpu_has_native_bf16():
                self.log(
                    "warning: --bf16 asked for, but this CPU has no native bf16 (AVX-512 BF16 / AMX): oneDNN "
                    "emulates it and training runs several times slower than fp32"
                )
        S.seed_everything(cfg.seed + self.rank)
        self.dataset, self.data_report = S.prepare_dataset(cfg, self.log)
        self.hyp = S.resolve_hyp(cfg)
        ckpt = S.read_resume_checkpoint(self.resume_from) if self.resume_from else None
        self.model, note = S.build_or_load_model(cfg, self.dataset, ckpt)
        if note:
            self.log(note)
        if ckpt is None and cfg.autoanchor and not cfg.weights:
            msg = S.check_anchors(self.model, self.dataset, cfg, self.hyp)
            self.log(msg)
        S.freeze_layers(self.model, cfg.freeze, self.log)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.nc = self.model.nc
        self.loss_fn = S.build_loss(self.model, self.hyp, cfg.img, cfg.label_smoothing)
        self.train_loader = S.train_loader(cfg, self.dataset, self.hyp, self.rank, self.world)
        self.steps_per_epoch = len(self.train_loader)
        self.class_weights = S.class_weights(self.dataset, cfg.train_split, self.dataset.num_classes)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{cfg.data}: the '{cfg.train_split}' split has no images to train on")
        total_batch = cfg.batch  # the total over all processes, as the official --batch-size
        self.accumulate = max(round(cfg.nbs / total_batch), 1)
        weight_decay = self.hyp.weight_decay * total_batch * self.accumulate / cfg.nbs
        self.optimizer = build_optimizer(self.model, cfg.optimizer, self.hyp.lr0, self.hyp.momentum, weight_decay)
        self.lf = lr_lambda(cfg.lr_schedule, cfg.epochs, self.hyp.lrf)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEMA(self.model) if cfg.ema and self.is_main else None
        total_iters = self.steps_per_epoch * cfg.epochs
        self.warmup_iters = warmup_iterations(
            self.hyp.warmup_epochs, self.steps_per_epoch, cfg.warmup_min_iters, total_iters
        )
        if ckpt is not None:
            self._restore(ckpt)
        if cfg.sync_bn and self.world > 1 and self.device.type != "cuda":
            self.log("note: --sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel): plain BN per process")
        self.net: nn.Module = S.wrap_distributed(self.model, self.device, cfg.sync_bn, self.world)
        extra = {
            "hyp": self.hyp.to_dict(),
            "model": {
                "name": self.model.spec.name,
                "aux": self.model.aux,
                "num_classes": self.nc,
                "class_names": self.model.names,
            },
            "data": self.data_report,
            "device": str(self.device),
            "world_size": self.world,
            "accumulate": self.accumulate,
            "warmup_iterations": self.warmup_iters,
        }
        if self.is_main:
            cfg.write(self.run.config, extra)
        self.log(
            f"{self.model.spec.name}: {sum(p.numel() for p in self.model.parameters()):,} params, "
            f"{self.nc} classes, aux head {'on' if self.model.aux else 'off'}, device {self.device}, "
            f"{self.steps_per_epoch} batches/epoch, accumulate {self.accumulate}, warmup {self.warmup_iters} it"
        )

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _train_state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "hyp": self.hyp.to_dict(), "epoch": self.epoch, "step": self.step,
            "iteration": self.iteration, "last_opt_step": self.last_opt_step, "best_fitness": self.best_fitness,
            "bad_epochs": self.bad_epochs, "metrics": self.metrics, "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema_state": None if self.ema is None else
            {"updates": self.ema.updates, "decay": self.ema.decay_max, "tau": self.ema.tau},
            "rng": S.rng_state(), "loss_sums": self._loss_sums.tolist(), "loss_count": self._loss_count,
            "label_counts": {int(k): v.to_dict() for k, v in self.train_loader.history.items()},
        }  # fmt: skip

    def save(self, path: Path) -> None:
        from core.checkpoint.io import save_checkpoint

        save_checkpoint(
            path,
            self.model,
            ema=self.ema.ema if self.ema else None,
            optimizer=self.optimizer.state_dict(),
            train=self._train_state(),
        )

    def _restore(self, ckpt: dict[str, Any]) -> None:
        st = ckpt["train"]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.ema.load_state_dict(ckpt["ema"])
            self.ema.updates = int(st["ema_state"]["updates"])
        self.epoch, self.step, self.iteration = int(st["epoch"]), int(st["step"]), int(st["iteration"])
        self.last_opt_step, self.best_fitness = int(st["last_opt_step"]), float(st["best_fitness"])
        self.bad_epochs, self.metrics = int(st["bad_epochs"]), dict(st["metrics"])
        self._loss_sums = torch.tensor(st["loss_sums"])
        self._loss_count = int(st["loss_count"])
        S.set_rng_state(st["rng"])
        self.log(f"resumed from {self.resume_from}: epoch {self.epoch + 1}, step {self.step}/{self.steps_per_epoch}")

    # -- the loop ------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train (setting up first); returns the final status. Errors set status 'failed' and re-raise."""
        state, message = "finished", "done"
        try:
            self.setup()
            with self._signals():
                self._call("before_train")
                self._loop()
                if self.is_main and (not self._stop_reason or self._stop_reason.startswith("early stop")):
                    self._final_eval()
            if self._stop_reason:
                state = "stopped" if not self._stop_reason.startswith("early stop") else "finished"
                message = self._stop_reason
        except StopTraining as stop:
            state, message = "stopped", str(stop)
        except Exception as exc:
            if hasattr(self, "run") and self.is_main:
                self.run.write_status("failed", message=f"{type(exc).__name__}: {exc}")
                self.run.log(f"FAILED: {type(exc).__name__}: {exc}")
            raise
        finally:
            S.cleanup_distributed()
        if self.is_main:
            self._call("after_train")
            final = self.run.write_status(state, message=message, epoch=self.epoch, metrics=self.metrics)
            self.log(f"{state}: {message}")
            return final
        return {"state": state, "message": message}

    def _loop(self) -> None:
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            self._train_epoch()
            if self._stop_reason and self.step < self.steps_per_epoch:
                return  # stopped mid-epoch; checkpoint already written
            self._end_epoch()
            if self._stop_reason:
                return

    def _train_epoch(self) -> None:
        cfg, model = self.cfg, self.net
        model.train()
        S.set_mosaic(
            self.train_loader, self.hyp, enabled=not (cfg.close_mosaic and self.epoch >= cfg.epochs - cfg.close_mosaic)
        )
        self.train_loader.set_epoch(self.epoch)
        if cfg.image_weights:
            maps = np.array([self.metrics.get(f"AP50-95/{n}", 0.0) for n in self.model.names], dtype=np.float64)
            maps = np.nan_to_num(maps) if self.metrics else np.zeros(self.nc)
            self.train_loader.sampler.weights = S.image_weights(self.dataset, cfg.train_split, self.class_weights, maps)
        start = self.step
        if start == 0:
            self._loss_sums.zero_()
            self._loss_count = 0
        self._call("before_epoch")
        nb = self.steps_per_epoch
        pbar = S.progress(
            self.train_loader, nb, f"epoch {self.epoch + 1}/{cfg.epochs}", cfg.progress and self.is_main, start
        )
        t_epoch, seen = time.perf_counter(), 0
        for i, batch in enumerate(pbar):
            if i < start:
                continue  # resuming mid-epoch: the skipped batches were already trained on
            ni = i + nb * self.epoch
            imgs = batch.images.to(self.device, non_blocking=True).float() / 255
            if cfg.channels_last:
                imgs = imgs.contiguous(memory_format=torch.channels_last)
            if ni <= self.warmup_iters:
                self.accumulate = accumulation(ni, self.warmup_iters, cfg.nbs, cfg.batch)
                apply_warmup(
                    self.optimizer,
                    ni,
                    self.warmup_iters,
                    self.lf(self.epoch),
                    warmup_bias_lr=self.hyp.warmup_bias_lr,
                    warmup_momentum=self.hyp.warmup_momentum,
                    momentum=self.hyp.momentum,
                    use_momentum=True,
                )
            if cfg.multi_scale:
                imgs = S.multi_scale(imgs, cfg, self.epoch, i, int(max(self.model.head.strides)))
            with S.autocast(self.device, self.use_amp, cfg.bf16):
                pred = model(imgs)
                loss, items = self.loss_fn([p.float() for p in pred], batch.targets.to(self.device), imgs.shape[2])
            if self.world > 1:
                loss = loss * self.world
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {float(loss)} at epoch {self.epoch + 1}, step {i}: "
                    "lower the learning rate or check the labels"
                )
            self.scaler.scale(loss).backward()
            optimizer_step = ni % self.accumulate == 0
            if optimizer_step:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.model)
                self.last_opt_step = ni
            self._loss_sums += torch.tensor([float(items[k]) for k in LOSS_COLUMNS])
            self._loss_count += 1
            self.step, self.iteration = i + 1, ni + 1
            seen += imgs.shape[0]
            self.images_per_s = seen / max(time.perf_counter() - t_epoch, 1e-9)
            S.update_progress(pbar, self.running_losses(), imgs.shape[-1])
            self._call("after_step")
            if optimizer_step and self._check_stop():
                if self.is_main:
                    self.save(self.run.last)
                self.log(f"{self._stop_reason}: saved {self.run.last} at epoch {self.epoch + 1}, step {self.step}")
                return
        S.close_progress(pbar)

    def _check_stop(self) -> bool:
        if self._stop_reason is None and self.is_main and self.run.stop_requested():
            self._stop_reason = "stop requested"
        if self._stop_reason is None and self.cfg.max_steps and self.iteration >= self.cfg.max_steps:
            self._stop_reason = f"stopped after max_steps={self.cfg.max_steps}"
        if S.sync_flag(self._stop_reason is not None, self.world) and self._stop_reason is None:
            self._stop_reason = "stop requested"  # seen on another rank
        return self._stop_reason is not None

    def _end_epoch(self) -> None:
        cfg = self.cfg
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scheduler.step()
        epoch = self.epoch
        last = epoch + 1 == cfg.epochs
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({k: v for k, v in self.running_losses().items()})
        row.update({f"lr{j}": lr for j, lr in enumerate(lrs)})
        counts = self.train_loader.label_counts(epoch)
        row["labels_lost_share"] = counts.lost_share
        if self.is_main and (last or (epoch + 1) % max(cfg.eval_interval, 1) == 0):
            result = S.evaluate_model(self.ema.ema if self.ema else self.model, self.dataset, cfg, self.device)
            self.metrics = result.row()
            row.update(self.metrics)
            self.last_eval = result
            self.log(result.summary())
        fit = fitness(self.metrics) if self.metrics else -1.0
        row["fitness"] = fit
        improved = fit > self.best_fitness
        if improved:
            self.best_fitness, self.bad_epochs = fit, 0
        else:
            self.bad_epochs += 1
        self.epoch, self.step = epoch + 1, 0
        self.log(
            f"epoch {epoch + 1}/{cfg.epochs}: "
            + ", ".join(f"{k} {row[k]:.4f}" for k in ("box", "obj", "cls", "aux_box", "aux_obj", "aux_cls") if k in row)
            + f"; labels lost to augmentation {100 * counts.lost_share:.1f}%"
            + (f"; mAP50 {row['mAP50']:.3f} mAP50-95 {row['mAP50-95']:.3f}" if "mAP50" in row else "")
        )
        if self.is_main:
            self.run.append_result(row)
            self.save(self.run.last)
            if improved:
                self.save(self.run.best)
            if cfg.save_period and (epoch + 1) % cfg.save_period == 0:
                self.save(self.run.weights / f"epoch{epoch + 1}.pt")
        if cfg.patience and self.bad_epochs >= cfg.patience and not last:
            self._stop_reason = f"early stop: no improvement for {cfg.patience} epochs"
        self._call("after_epoch")
        self._check_stop()

    def _final_eval(self) -> None:
        """Evaluate best.pt (EMA weights) once more and export its predictions as COCO results JSON."""
        import json

        from core.checkpoint.io import load_model

        if not self.run.best.exists():
            return
        best = load_model(self.run.best).model
        split = S.val_split(self.cfg, self.dataset)
        result = S.evaluate_model(
            best, self.dataset, self.cfg, self.device, save_json=self.run.root / f"predictions_{split}.json"
        )
        self.last_eval = result
        (self.run.root / "metrics.json").write_text(
            json.dumps(
                {
                    "split": split,
                    "weights": str(self.run.best),
                    "coco": result.coco.stats,
                    "precision": result.precision,
                    "recall": result.recall,
                    "per_class_ap50": result.coco.per_class_ap50,
                    "per_class_ap": result.coco.per_class_ap,
                    "speed_ms_per_image": result.speed_ms,
                },
                indent=1,
                default=str,
            )
        )
        self.log(f"best.pt on '{split}':\n{result.coco.summary}{result.summary()}")

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _call(self, name: str) -> None:
        for h in self.hooks:
            h.trainer = self
            getattr(h, name)()

    @contextlib.contextmanager
    def _signals(self):  # type: ignore[no-untyped-def]
        """SIGTERM/SIGINT ask for a clean stop after the current optimizer step (a second SIGINT interrupts)."""
        if not self.is_main:
            yield
            return
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            if self._stop_reason is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_reason = f"stopped by {signal.Signals(signum).name}"

        try:
            for s in (signal.SIGTERM, signal.SIGINT):
                previous[s] = signal.signal(s, handler)
        except ValueError:  # not in the main thread (e.g. launched from a UI): the STOP file still works
            previous.clear()
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def train(cfg: TrainConfig, resume: str | Path | None = None, hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Convenience: ``Trainer(cfg, resume=resume, hooks=hooks).fit()``."""
    return Trainer(cfg, hooks=hooks, resume=resume).fit()


__all__ = ["Trainer", "StopTraining", "fitness", "train"]
