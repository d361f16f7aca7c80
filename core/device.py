"""Choosing the device to run on: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that cannot be used here; the message says which and why."""


def select_device(spec: str | int | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for ``spec``.

    ``"auto"`` / ``None``: ``cuda:0`` when CUDA is available, else ``cpu``. ``"cpu"``; ``"cuda"`` (= ``cuda:0``);
    ``"cuda:N"``; a bare index ``N`` or ``"N"`` (as the official ``--device 0``). Asking for a GPU that is not there
    raises :class:`DeviceError` instead of failing later inside a kernel.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec is None:
        spec = "auto"
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.isdigit():
        text = f"cuda:{text}"
    if text == "cuda":
        text = "cuda:0"
    if not text.startswith("cuda:") or not text[5:].isdigit():
        raise DeviceError(f"unknown device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} asked for, but CUDA is not available here (use 'cpu' or 'auto')")
    index, count = int(text[5:]), torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {spec!r} asked for, but only {count} CUDA device(s) are present")
    return torch.device(text)
