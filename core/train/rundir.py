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

``state`` is one of ``queued``, ``running``, ``finished``, ``failed``, ``stopped``. Every file a reader may open
while the run writes it (status.json, config.json, results.csv, metrics.json, predictions JSON, plots, checkpoints)
is replaced atomically (temporary file, then rename), so a reader never sees a half-written file; ``train.log`` is
only appended to.

Liveness. A process that owns the directory holds ``<run>/.lock`` (its pid) and writes ``pid``, ``host`` and
``heartbeat`` (Unix time) into status.json; ``heartbeat`` is refreshed every few seconds by a background thread,
also while the run sets up (decodes the dataset) and evaluates. A ``running`` or ``queued`` status is only true
while its process lives: :meth:`RunDir.is_alive` is True when the recorded process exists (checked by pid on the
same host) and its heartbeat is younger than ``stale_after`` seconds (default 60); :meth:`RunDir.effective_state`
reports ``died`` for a ``running``/``queued`` status whose process is gone (SIGKILL, power loss, OOM killer) or
whose heartbeat is stale. A ``queued`` status without a pid (written by a job runner before the process starts)
is reported as it is.

A launch into a directory that already holds a run (weights/last.pt or results.csv), or that another live
process holds, is refused before anything in it is written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "finished", "failed", "stopped")
HEARTBEAT_S = 5.0  # how often a live run refreshes ``heartbeat`` in status.json
STALE_AFTER_S = 60.0  # a heartbeat older than this means the process is gone or hung


class RunInUse(ValueError):
    """Another live process holds the run directory."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
        for stale in (*self.weights.glob(".*.tmp"), *self.root.glob(".*.tmp"), *self.plots.glob(".*.tmp")):
            stale.unlink(missing_ok=True)  # left by a killed process
        return self

    def holds_run(self) -> bool:
        """Whether the directory already holds a (started) run: weights/last.pt or results.csv."""
        return self.last.exists() or self.results.exists()

    # -- ownership ------------------------------------------------------------------------------------------
    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def claim(self) -> None:
        """Take ``<run>/.lock`` for this process; ``RunInUse`` if another live process holds it.

        Creating the lock is atomic (``O_EXCL``), so of two launches into one directory (a double click on
        Start) exactly one proceeds. A lock left by a dead process is taken over.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host = self._lock_owner()
                here = host in ("", socket.gethostname())
                mine = here and pid == os.getpid()
                alive = (pid is not None and pid_alive(pid)) if here else self.is_alive()
                if pid is not None and not mine and alive:
                    raise RunInUse(f"{self.root} is in use by another training process (pid {pid})") from None
                self.lock_file.unlink(missing_ok=True)  # left by a dead process, or ours
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            return
        raise RuntimeError(f"{self.root}: could not take {self.lock_file.name}")

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self._lock_owner() == (os.getpid(), socket.gethostname()):
            self.lock_file.unlink(missing_ok=True)

    def _lock_owner(self) -> tuple[int | None, str]:
        try:
            pid, _, host = self.lock_file.read_text().strip().partition(" ")
            return int(pid), host
        except (OSError, ValueError):
            return None, ""

    # -- status ---------------------------------------------------------------------------------------------
    _status_lock = threading.Lock()  # the heartbeat thread and the training loop both rewrite status.json

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        with self._status_lock:
            old = self.read_status() or {}
            now = time.time()
            status = {
                **old, **fields, "state": state, "updated": now, "heartbeat": now, "pid": os.getpid(),
                "host": socket.gethostname(),
            }  # fmt: skip
            status.setdefault("started", now)
            atomic_write_text(self.status_file, json.dumps(_clean(status), indent=1))
        return status

    def heartbeat(self) -> None:
        """Refresh ``heartbeat`` (and nothing else) if this process wrote the current status."""
        with self._status_lock:
            status = self.read_status()
            if not status or status.get("pid") != os.getpid():
                return
            status["heartbeat"] = time.time()
            atomic_write_text(self.status_file, json.dumps(_clean(status), indent=1))

    def read_status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    # -- liveness (see the module docstring) ------------------------------------------------------------------
    def is_alive(self, stale_after: float = STALE_AFTER_S, status: dict[str, Any] | None = None) -> bool:
        """Whether the process recorded in status.json still lives and its heartbeat is fresh."""
        status = self.read_status() if status is None else status
        if not status or not isinstance(status.get("pid"), int):
            return False
        beat = status.get("heartbeat", status.get("updated"))
        if not isinstance(beat, (int, float)) or time.time() - beat > stale_after:
            return False
        if status.get("host", socket.gethostname()) != socket.gethostname():
            return True  # another machine: the heartbeat is all we can see
        return pid_alive(status["pid"])

    def effective_state(self, stale_after: float = STALE_AFTER_S) -> str | None:
        """The status' state, or ``died`` for a running/queued run whose process is gone; None without status."""
        status = self.read_status()
        if not status:
            return None
        state = str(status.get("state"))
        if state in ("running", "queued") and "pid" in status and not self.is_alive(stale_after, status):
            return "died"
        return state

    def liveness(self, stale_after: float = STALE_AFTER_S) -> dict[str, Any]:
        """What a UI shows: effective state, pid, seconds since the last heartbeat (None without status)."""
        status = self.read_status() or {}
        beat = status.get("heartbeat", status.get("updated"))
        return {
            "state": self.effective_state(stale_after),
            "recorded_state": status.get("state"),
            "pid": status.get("pid"),
            "alive": self.is_alive(stale_after, status) if status else False,
            "heartbeat_age_s": time.time() - beat if isinstance(beat, (int, float)) else None,
        }

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
        self._write_results(rows)

    def _write_results(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            self.results.unlink(missing_ok=True)
            return
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in columns})
        atomic_write_text(self.results, buf.getvalue())

    def read_results(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        with open(self.results, newline="") as f:
            # a row cut short (a damaged file) reads with NaN for its missing columns; surplus fields are ignored
            return [{k: _parse(v) for k, v in r.items() if k is not None} for r in csv.DictReader(f)]

    def truncate_results(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (used when resuming from an earlier checkpoint)."""
        self._write_results([r for r in self.read_results() if int(r["epoch"]) <= last_epoch])

    def log(self, message: str) -> None:
        with open(self.log_file, "a") as f:
            f.write(message.rstrip() + "\n")


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def _parse(v: str | None) -> Any:
    if v is None or v == "":
        return float("nan")
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
