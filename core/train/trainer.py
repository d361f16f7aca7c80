"""The training engine: the official YOLOv7 recipe, observable from other processes, resumable without loss.

``Trainer(cfg).fit()`` runs a whole training; see :mod:`core.train.rundir` for what it writes. Everything that
is random is derived from ``(seed, epoch, step)`` (data order, augmentation, multi-scale sizes), so a run
resumed from any checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import warnings
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
from core.train.rundir import HEARTBEAT_S, RunDir
from core.train.setup import StopTraining

LOSS_COLUMNS = ("box", "obj", "cls", "aux_box", "aux_obj", "aux_cls", "total")


def run_root(resume: Path) -> Path | None:
    """The run directory a resume target belongs to: the directory itself, or ``<run>`` of
    ``<run>/weights/*.pt``; None for a loose checkpoint file."""
    if resume.is_dir():
        return resume
    if resume.parent.name == "weights":
        return resume.parent.parent
    return None


def fitness(metrics: dict[str, float]) -> float:
    """Official model selection: 0.1 * mAP50 + 0.9 * mAP50-95."""
    return 0.1 * float(metrics.get("mAP50", 0.0)) + 0.9 * float(metrics.get("mAP50-95", 0.0))


class Trainer:
    """One training run (see the module docstring). ``hooks`` observe it; ``log`` receives text lines.

    The trainer registers only its own hooks (status, plots). Hooks that settings ask for, such as the objectness
    maps of ``objectness_every``, are the caller's to register: ``hooks=core.explore.training_hooks(cfg)`` (as the
    CLI, the job runner's processes and the studies do), so that ``core.train`` depends on nothing above it.

    A resumed run continues in the run directory it is resumed from (``resume``: the directory or its
    ``weights/last.pt``), whatever ``cfg.out`` says, so a moved run or another working directory works.
    """

    heartbeat_s = HEARTBEAT_S

    def __init__(
        self, cfg: TrainConfig, *, hooks: list[Hook] | None = None, resume: str | Path | None = None, log: Any = None
    ) -> None:
        self.cfg = cfg
        self.resume_from = Path(resume) if resume else None
        self.hooks = [StatusHook(), PlotHook(), *(hooks or [])]
        # log: where progress lines go besides train.log (the CLI passes print; a library caller gets logging)
        self._print = log if log is not None else logging.getLogger("core.train").info
        self.epoch = 0
        self.step = 0
        self.iteration = 0
        self.last_opt_step = -1
        self.best_fitness = -1.0
        self.best_epoch = 0  # 1-based epoch of best_fitness (0: none evaluated yet)
        self.bad_epochs = 0  # epochs since best_epoch, counted at evaluations (early stopping)
        self.metrics: dict[str, float] = {}
        self.images_per_s = 0.0
        self._loss_sums = torch.zeros(len(LOSS_COLUMNS))
        self._loss_count = 0
        self._stop_reason: str | None = None
        self.rank, self.world = S.distributed_rank_world()
        self.is_main = self.rank == 0
        self._owns_run = False  # set once this (main) process has claimed the run directory
        self._joined = False  # every rank got through setup (so the run directory is this run's on every rank)
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    # -- logging -------------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.is_main:
            self._print(message)
            if self._owns_run:
                self.run.log(message)

    def _stop_checker(self) -> Any:
        """``should_stop`` for an evaluation starting now: None (not interruptible) when a stop is already
        under way (the epoch's evaluation then runs, as before); else true once a new stop is asked for."""
        reason = self._stop_reason
        if reason is not None and not reason.startswith("early stop"):
            return None

        def check() -> bool:
            return (self.is_main and self.run.stop_requested()) or self._stop_reason is not reason

        return check

    def should_stop(self) -> bool:
        """A stop was asked for (signal, or the STOP file seen by rank 0)."""
        if self._stop_reason is None and self.is_main and self._owns_run and self.run.stop_requested():
            self._stop_reason = "stop requested"
        return self._stop_reason is not None

    def running_losses(self) -> dict[str, float]:
        n = max(self._loss_count, 1)
        return {k: float(v) / n for k, v in zip(LOSS_COLUMNS, self._loss_sums)}

    # -- setup ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        root = run_root(self.resume_from) if self.resume_from is not None else None
        if root is not None and Path(cfg.out) != root:
            cfg = self.cfg = cfg.replace(out=str(root))
        self.run = RunDir(cfg.out)
        if self.is_main:
            self.run.claim()  # refuses (touching nothing) when another live process holds the directory
            if self.resume_from is None and self.run.holds_run():
                self.run.release()
                raise ValueError(
                    f"{cfg.out} already holds a run (weights/last.pt or results.csv): resume it with "
                    "--resume, or choose another --out"
                )
            self._owns_run = True
            self.run.create()
            self.run.clear_stop()
            if self.resume_from is None:
                self.run.status_file.unlink(missing_ok=True)
            self.run.write_status("queued", message="setting up", epochs=cfg.epochs, failed_rank=None, failure=None)
            self._start_heartbeat()
        self.device = S.training_device(cfg.device, self.rank)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal activations/gradients can slow CPU convolutions ~10x
            if cfg.bf16 and not cpu_has_native_bf16():
                self.log(
                    "warning: --bf16 asked for, but this CPU has no native bf16 (AVX-512 BF16 / AMX): oneDNN "
                    "emulates it and training runs several times slower than fp32"
                )
        S.seed_everything(cfg.seed + self.rank)
        self.dataset, self.data_report = S.prepare_dataset(cfg, self.log, self.should_stop)
        n_train = len(self.dataset.split(cfg.train_split))
        if self.resume_from is not None and cfg.recipe == "auto":
            cfg = cfg.replace(recipe="official")  # a run saved before recipes were resolved trained officially
        cfg, recipe_note = S.resolve_recipe(cfg, n_train)
        self.cfg = cfg
        self.log(recipe_note)
        scratch = S.from_scratch_warning(cfg, n_train) if self.resume_from is None else None
        if scratch:
            self.log(scratch)
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
        self.loss_fn = S.build_loss(
            self.model, self.hyp, cfg.img, cfg.label_smoothing, assign=cfg.assign, bound=cfg.assign_bound
        )
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
        if S.sync_flag(self.should_stop(), self.world):  # every rank reaches this point: stop them together
            raise StopTraining(f"{self._stop_reason or 'stop requested'} during setup")
        self._joined = True
        self.net: nn.Module = S.wrap_distributed(self.model, self.device, cfg.sync_bn, self.world)
        extra = {
            "hyp": self.hyp.to_dict(),
            "model": {
                "name": self.model.spec.name,
                "aux": self.model.aux,
                "aux_wiring": self.model.aux_wiring,
                "num_classes": self.nc,
                "class_names": self.model.names,
            },
            "assign": self._assignment(),
            "data": self.data_report,
            "device": str(self.device),
            "world_size": self.world,
            "accumulate": self.accumulate,
            "warmup_iterations": self.warmup_iters,
        }
        if self.is_main:
            cfg.write(self.run.config, extra)
        assignment = S.describe_assignment(cfg, self.model)
        self.log(
            f"{self.model.spec.name}: {sum(p.numel() for p in self.model.parameters()):,} params, "
            f"{self.nc} classes, aux head {'on (' + assignment + ')' if self.model.aux else 'off'}, "
            f"device {self.device}, {self.steps_per_epoch} batches/epoch, accumulate {self.accumulate}, "
            f"warmup {self.warmup_iters} it"
        )
        if cfg.objectness_every > 0 and not any(getattr(h, "objectness_maps", False) for h in self.hooks):
            self.log(
                f"note: objectness_every={cfg.objectness_every}, but no objectness hook was registered, so no maps "
                "are saved (library callers: Trainer(cfg, hooks=core.explore.training_hooks(cfg)))"
            )

    def _assignment(self) -> dict[str, Any]:
        """The label assignment of this run, as saved in config.json and in every checkpoint's training state."""
        return {
            "strategy": self.cfg.assign,
            "bound": self.loss_fn.bound,
            "aux_wiring": self.model.aux_wiring,
            "aux": self.model.aux,
        }

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _train_state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "hyp": self.hyp.to_dict(), "assign": self._assignment(),
            "epoch": self.epoch, "step": self.step,
            "iteration": self.iteration, "last_opt_step": self.last_opt_step, "best_fitness": self.best_fitness,
            "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "metrics": self.metrics,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema_state": None if self.ema is None else
            {"updates": self.ema.updates, "decay": self.ema.decay_max, "tau": self.ema.tau},
            "rng": S.rng_state(), "loss_sums": self._loss_sums.tolist(), "loss_count": self._loss_count,
            "label_counts": {int(k): v.to_dict() for k, v in self.train_loader.history.items()},
            # gradients accumulated since the last optimizer step (an epoch can end between two): resume applies them
            "pending_grads": {n: p.grad.detach().cpu().clone() for n, p in self.model.named_parameters()
                              if p.grad is not None},
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
        self.best_epoch = int(st.get("best_epoch", max(self.epoch - self.bad_epochs, 0)))
        if self.step >= self.steps_per_epoch:  # stopped during the epoch's evaluation: its training is done
            from core.data.augment import LabelCounts

            keys = ("input", "kept", "cropped", "filtered")
            self.train_loader.history = {
                int(k): LabelCounts(*(int(v[f]) for f in keys)) for k, v in st.get("label_counts", {}).items()
            }
        self._loss_sums = torch.tensor(st["loss_sums"])
        self._loss_count = int(st["loss_count"])
        pending = st.get("pending_grads") or {}
        for name, p in self.model.named_parameters():  # the next optimizer step applies them, as without the stop
            if name in pending:
                p.grad = pending[name].to(p.device)
        S.set_rng_state(st["rng"])
        self.log(f"resumed from {self.resume_from}: epoch {self.epoch + 1}, step {self.step}/{self.steps_per_epoch}")

    # -- the loop ------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train (setting up first); returns the final status. Errors set status 'failed' and re-raise; a
        refused launch (the directory holds a run, or another process uses it) raises and touches nothing."""
        state, message, in_step = "finished", "done", False
        try:
            try:
                with self._signals():
                    self.setup()
                    self._call("before_train")
                    self._loop()
                    in_step = True  # every rank left the loop at the same (synchronised) point
                    if self.is_main and (not self._stop_reason or self._stop_reason.startswith("early stop")):
                        self._final_eval()
                if self._stop_reason:
                    state = "stopped" if not self._stop_reason.startswith("early stop") else "finished"
                    message = self._stop_reason
            except StopTraining as stop:
                state, message = "stopped", str(stop)
            except BaseException as exc:
                self._stop_heartbeat()
                self._record_failure(exc)
                raise
            finally:
                self._stop_heartbeat()
                S.cleanup_distributed(ok=in_step)
            if self.is_main:
                self._call("after_train")
                final = self.run.write_status(state, message=message, epoch=self.epoch, metrics=self.metrics)
                self.log(f"{state}: {message}")
                return final
            return {"state": state, "message": message}
        finally:
            if self._owns_run:
                self.run.release()

    def _record_failure(self, exc: BaseException) -> None:
        """Mark the run failed (or stopped, for a second Ctrl-C); any rank may, the first error's message wins."""
        if not hasattr(self, "run") or (self.is_main and not self._owns_run):
            return  # refused launch: the directory belongs to another run
        interrupted = isinstance(exc, KeyboardInterrupt)
        state = "stopped" if interrupted else "failed"
        message = (
            "interrupted (second Ctrl-C): resume continues from the last checkpoint"
            if interrupted
            else f"{type(exc).__name__}: {exc}"
        )
        current = self.run.read_status() or {}
        other = current.get("failed_rank")
        if not self.is_main:
            if not self._joined or current.get("state") not in ("running", "queued") or other is not None:
                return  # the status may not be this run's (rank 0 refused the launch), or the run has ended
            message = f"rank {self.rank}: {message}"
        with contextlib.suppress(OSError):
            self.run.log(f"{'STOPPED' if interrupted else 'FAILED'}: {message}")
            if other is not None and other != self.rank:  # another rank failed first: its error is the cause
                state, message = "failed", str(current.get("failure") or message)
            self.run.write_status(state, message=message, failed_rank=self.rank if other is None else other,
                                  failure=message)  # fmt: skip

    def _start_heartbeat(self) -> None:
        """Refresh ``heartbeat`` in status.json every ``heartbeat_s`` seconds until the run ends."""

        def beat() -> None:
            while not self._heartbeat_stop.wait(self.heartbeat_s):
                with contextlib.suppress(OSError):
                    self.run.heartbeat()

        self._heartbeat_thread = threading.Thread(target=beat, name="yolov7-studio heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _stop_heartbeat(self) -> None:
        self._heartbeat_stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join()
            self._heartbeat_thread = None

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
        for i, batch in enumerate(pbar if start < nb else ()):  # start == nb: resumed before the evaluation
            if i < start:
                continue  # resuming mid-epoch: the skipped batches were already trained on
            self._call("before_step")
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
        self.should_stop()
        if self._stop_reason is None and self.cfg.max_steps and self.iteration >= self.cfg.max_steps:
            self._stop_reason = f"stopped after max_steps={self.cfg.max_steps}"
        if S.sync_flag(self._stop_reason is not None, self.world) and self._stop_reason is None:
            self._stop_reason = "stop requested"  # seen on another rank
        return self._stop_reason is not None

    def _end_epoch(self) -> None:
        cfg = self.cfg
        epoch = self.epoch
        last = epoch + 1 == cfg.epochs
        evaluated = self.is_main and (last or (epoch + 1) % max(cfg.eval_interval, 1) == 0)
        if evaluated:
            try:
                result = S.evaluate_model(
                    self.ema.ema if self.ema else self.model, self.dataset, cfg, self.device,
                    should_stop=self._stop_checker(), what=f"the evaluation after epoch {epoch + 1}",
                )  # fmt: skip
            except StopTraining as stop:
                self._stop_reason = str(stop)
                self.save(self.run.last)  # the epoch is trained, not evaluated: a resume starts with its evaluation
                self.log(f"{stop}: saved {self.run.last} before the evaluation of epoch {epoch + 1}")
                self._check_stop()  # the other ranks wait there
                return
            self.metrics = result.row()
            self.last_eval = result
            self.log(result.summary())
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        with warnings.catch_warnings():  # a run resumed right before an evaluation has no optimizer step yet
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({k: v for k, v in self.running_losses().items()})
        row.update({f"lr{j}": lr for j, lr in enumerate(lrs)})
        counts = self.train_loader.label_counts(epoch)
        row["labels_lost_share"] = counts.lost_share
        if evaluated:
            row.update(self.metrics)
        fit = fitness(self.metrics) if self.metrics else -1.0
        row["fitness"] = fit
        improved = evaluated and fit > self.best_fitness
        if improved:
            self.best_fitness, self.best_epoch = fit, epoch + 1
        if evaluated:  # patience counts epochs since the best evaluated epoch, looked at only when evaluating
            self.bad_epochs = epoch + 1 - self.best_epoch
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
        if evaluated and cfg.patience and self.bad_epochs >= cfg.patience and not last:  # rank 0 decides ...
            self._stop_reason = (
                f"early stop: no improvement in the {self.bad_epochs} epochs since epoch {self.best_epoch} "
                f"(patience {cfg.patience})"
            )
        self._call("after_epoch")
        self._check_stop()  # ... and this tells every rank

    def _final_eval(self) -> None:
        """Evaluate best.pt (EMA weights) once more and export its predictions as COCO results JSON."""
        import json

        from core.checkpoint.io import load_model
        from core.train.rundir import atomic_write_text

        if not self.run.best.exists():
            return
        best = load_model(self.run.best).model
        split = S.val_split(self.cfg, self.dataset)
        try:
            result = S.evaluate_model(
                best, self.dataset, self.cfg, self.device, save_json=self.run.root / f"predictions_{split}.json",
                should_stop=self._stop_checker(), what="the final evaluation of best.pt",
            )  # fmt: skip
        except StopTraining as stop:
            self._stop_reason = f"{stop} (resume to run it)"
            return
        self.last_eval = result

        def entry(res: Any) -> dict[str, Any]:
            return {
                "coco": res.coco.stats,
                "precision": res.precision,
                "recall": res.recall,
                "per_class_ap50": res.coco.per_class_ap50,
                "per_class_ap": res.coco.per_class_ap,
                "speed_ms_per_image": res.speed_ms,
            }

        metrics: dict[str, Any] = {"split": split, "weights": str(self.run.best), **entry(result)}
        self.log(f"best.pt on '{split}':\n{result.coco.summary}{result.summary()}")
        if split != "test" and self.dataset.split("test"):  # the held-out split, never used to pick best.pt
            try:
                test = S.evaluate_model(
                    best, self.dataset, self.cfg.replace(val_split="test"), self.device,
                    save_json=self.run.root / "predictions_test.json", should_stop=self._stop_checker(),
                    what="the test-split evaluation of best.pt",
                )  # fmt: skip
            except StopTraining as stop:
                self._stop_reason = f"{stop} (resume to run it)"
            else:
                metrics["test"] = {"split": "test", **entry(test)}
                self.log(f"best.pt on 'test':\n{test.coco.summary}{test.summary()}")
        atomic_write_text(self.run.root / "metrics.json", json.dumps(metrics, indent=1, default=str))

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
