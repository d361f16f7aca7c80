"""The input size a command uses when none is given: the size the checkpoint was trained at."""

from __future__ import annotations

from typing import Any

FALLBACK_SIZE = 640  # the official default, for checkpoints that do not record a training size


def training_size(checkpoint: dict[str, Any] | None) -> int | None:
    """The training image size a checkpoint records (``train.config.img`` or ``train.img``), else ``None``."""
    if not isinstance(checkpoint, dict):
        return None
    train = checkpoint.get("train")
    if not isinstance(train, dict):
        return None
    config = train.get("config")
    for source in (config if isinstance(config, dict) else {}, train):
        value = source.get("img")
        if isinstance(value, (int, float)) and value > 0:
            return int(value)
    return None


def default_size(given: int | None, checkpoint: dict[str, Any] | None) -> tuple[int, str | None]:
    """(size to use, a note to print or ``None``): ``given`` when set, else the checkpoint's training size, else 640."""
    if given:
        return given, None
    trained = training_size(checkpoint)
    if trained:
        return trained, f"input size {trained} (the size the checkpoint was trained at; --img to change it)"
    return FALLBACK_SIZE, f"input size {FALLBACK_SIZE} (the checkpoint records no training size; --img to change it)"


def checkpoint_training_size(path: str) -> int | None:
    """The training size recorded in the yolov7-studio checkpoint at ``path``; ``None`` for anything else (an
    official ``.pt``, an exported model, an unreadable file: the command then reports its own error)."""
    from pathlib import Path

    if Path(path).suffix.lower() not in (".pt", ".pth"):
        return None
    try:
        from core.checkpoint.io import read_checkpoint

        return training_size(read_checkpoint(path))
    except Exception:  # noqa: BLE001 - only a default is at stake; loading the model reports real problems
        return None
