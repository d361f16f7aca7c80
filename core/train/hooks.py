"""Trainer hooks (detectron2-style): small objects called before/after the run, each epoch and each step.

The trainer calls, in order, every hook's ``before_train``, then per epoch ``before_epoch``, per step
``before_step``/``after_step``, then ``after_epoch``, and finally ``after_train``. ``before_step`` comes before the
batch is moved to the device, while ``trainer.step`` still counts the steps done before it; the batches a mid-epoch
resume skips get neither call. A hook reads and writes the trainer's state (``trainer.epoch``, ``trainer.step``,
``trainer.metrics`` ...). Checkpointing, evaluation, logging and early stopping live in the trainer itself because
resume depends on their exact order; hooks are for observers (status files, plots, objectness snapshots) and user
extensions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from core.train.trainer import Trainer


class Hook:
    """Base class: override what you need. ``trainer`` is set before ``before_train``."""

    trainer: Trainer

    def before_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def after_epoch(self) -> None: ...

    def after_train(self) -> None: ...


class StatusHook(Hook):
    """Keeps ``status.json`` current (at most every ``every_s`` seconds during an epoch) for watching processes."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._last = 0.0

    def _write(self, message: str, **extra: Any) -> None:
        t = self.trainer
        if not t.is_main:
            return
        t.run.write_status(
            "running", epoch=t.epoch, epochs=t.cfg.epochs, step=t.step, steps=t.steps_per_epoch,
            iteration=t.iteration, message=message, losses=t.running_losses(), **extra,
        )  # fmt: skip

    def before_train(self) -> None:
        self._write("starting")

    def before_epoch(self) -> None:
        self._write(f"epoch {self.trainer.epoch + 1}/{self.trainer.cfg.epochs}")

    def after_step(self) -> None:
        import time

        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            t = self.trainer
            self._write(
                f"epoch {t.epoch + 1}/{t.cfg.epochs}, step {t.step}/{t.steps_per_epoch}", images_per_s=t.images_per_s
            )

    def after_epoch(self) -> None:
        t = self.trainer
        self._write(f"finished epoch {t.epoch + 1}/{t.cfg.epochs}", metrics=t.metrics)
