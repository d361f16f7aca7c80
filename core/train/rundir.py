"""The run directory: the contract between a training run and the processes that watch it (the front ends).

::

    <run>/config.json         resolved configuration (TrainConfig + hyp + dataset summary + model)
    <run>/status.json         {state, epoch, epochs, step, steps, message, metrics, losses, updated, pid, ...}
    <run>/results.csv         one row per epoch: losses (lead and aux), lr, P, R, mAP50, mAP50-95, per-class AP
    <run>/weights/last.pt     written atomically after every epoch (and on stop)
    <run>/weights/best.pt     best fitness (0.1 mAP50 + 0.9 mAP50-95)
    <run>/plots/*.html|png    losses, mAP, PR curves, confusion matrix
    <run>/STOP                create this file to ask the run to stop after the current step
    <run>/train.log           the log

``state`` is one of ``queued``, ``running``, ``finished``, ``failed``, ``stopped``. ``status.json`` and the
checkpoints are replaced atomically, so a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "finished", "failed", "stopped")


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class RunDir:
    """Paths and writers of one run directory (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.weights = self.root / "weights"
        self.plots = self.root / "plots"
        self.config = self.root / "config.json"
        self.status_file = self.root / "status.json"
        self.results = self.root / "results.csv"
        self.stop_file = self.root / "STOP"
        self.log_file = self.root / "train.log"
        self.last = self.weights / "last.pt"
        self.best = self.weights / "best.pt"

    def create(self) -> RunDir:
        for d in (self.root, self.weights, self.plots):
            d.mkdir(parents=True, exist_ok=True)
        for stale in (*self.weights.glob(".*.tmp"), *self.root.glob(".*.tmp")):  # left by a killed process
            stale.unlink(missing_ok=True)
        return self

    # -- status ---------------------------------------------------------------------------------------------
    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        old = self.read_status() or {}
        status = {**old, **fields, "state": state, "updated": time.time(), "pid": os.getpid()}
        status.setdefault("started", status["updated"])
        atomic_write_text(self.status_file, json.dumps(_clean(status), indent=1))
        return status

    def read_status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    # -- stop requests ----------------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        self.stop_file.write_text(reason)

    def stop_requested(self) -> bool:
        return self.stop_file.exists()

    def clear_stop(self) -> None:
        self.stop_file.unlink(missing_ok=True)

    # -- results ----------------------------------------------------------------------------------------------
    def append_result(self, row: dict[str, Any]) -> None:
        """Append one epoch row; if new columns appear the file is rewritten with the union of columns."""
        rows = self.read_results()
        rows = [r for r in rows if str(r.get("epoch")) != str(row.get("epoch"))] + [row]
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=self.root)
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: _fmt(r.get(k)) for k in columns})
        os.replace(tmp, self.results)

    def read_results(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        with open(self.results, newline="") as f:
            return [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(f)]

    def truncate_results(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (used when resuming from an earlier checkpoint)."""
        rows = [r for r in self.read_results() if int(r["epoch"]) <= last_epoch]
        self.results.unlink(missing_ok=True)
        for r in rows:
            self.append_result(r)

    def log(self, message: str) -> None:
        with open(self.log_file, "a") as f:
            f.write(message.rstrip() + "\n")


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def _parse(v: str) -> Any:
    if v == "":
        return float("nan")
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
