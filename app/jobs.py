"""The job runner: launch, queue, stop and follow training processes through their run directories.

One module for every front end (the Gradio studio, the Streamlit dashboard): they all construct
``JobRunner(workspace)`` and call ``start`` / ``status`` / ``stop`` / ``list_jobs`` / ``export``.

* A training is a separate process (``python -m app.cli train ...``, its own session, so the studio's Ctrl-C
  does not reach it) writing ``<workspace>/runs/<name>/`` (see ``core.train.RunDir``). Its stdout and stderr go
  to ``<run>/process.log``; the runner's own record is ``<run>/job.json`` (request, command, pid, exit code).
* ONE training at a time. Further requests wait in ``<workspace>/queue/`` as one JSON file each (written
  atomically, named by creation time, so the queue is FIFO and survives restarts); ``poll()`` starts the next
  one when the running job has ended. A background thread calls ``poll()`` every ``poll_interval`` seconds.
* Everything is found again from the files: a new ``JobRunner`` (studio restart) re-attaches to a process that
  still runs (by the pid in job.json/status.json), shows runs whose process is gone as ``died``, and keeps the
  queue. Several runners on one workspace (studio + dashboard) coordinate through a file lock.
* ``stop(name)`` writes the run's STOP file (the run ends ``stopped`` with its checkpoints) or removes a queued
  request from the queue.

States reported by ``status``: ``queued`` (waiting in the queue), ``starting`` (process launched, not training
yet), ``running``, ``finished``, ``stopped``, ``failed`` (the run or the process reported an error: see
``log_tail``), ``died`` (the process vanished without a final status), ``unknown``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.workspace import REPO_ROOT, Workspace, WorkspaceError, safe_name
from core.loss import ASSIGN_STRATEGIES, DEFAULT_ASSIGN
from core.models import AUX_WIRINGS, get_spec
from core.train import RunDir

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "starting", "running")
DONE_STATES = ("finished", "stopped", "failed", "died")
VARIANTS_HINT = "see `yolov7-studio models`"

# The recipe presets of the Fine-tune tab: name -> (description, flags builder).
RECIPES: dict[str, str] = {
    "small-data": "AdamW lr0 0.002, nominal batch 16, warmup 100 iterations, no mosaic in the last epochs "
    "(a fifth of the run, at most 10): the recipe that reached mAP50 0.886 on BCCD from scratch (README)",
    "official": "the official YOLOv7 recipe: SGD with the variant's hyperparameters, nominal batch 64, "
    "warmup 1,000 iterations (capped at a third of the run)",
}
DEFAULT_RECIPE = "small-data"
DOUBLE_CLICK_S = 5.0  # the same unnamed request again within this time returns the first one


class JobError(ValueError):
    """A request the runner refuses (unknown run, double start, bad option); the message says why."""


@dataclass(frozen=True)
class TrainRequest:
    """What a front end asks for; ``to_args`` turns it into ``yolov7-studio train`` flags.

    ``dataset`` and ``checkpoint`` are workspace ids (``checkpoint=None``: from scratch with ``variant``; a start
    checkpoint brings its own architecture, so ``variant`` then only names the run). ``width`` < 1 and
    ``max_steps`` are for quick experiments and tests.

    ``assign`` (``core.loss.ASSIGN_STRATEGIES``), ``assign_bound`` (strength of ``coarse-to-fine-bounded``'s cap;
    None: ``core.loss.DEFAULT_BOUND``) and ``aux_wiring`` (``core.models.AUX_WIRINGS``) choose how the auxiliary head
    is labelled and where it reads; they need ``aux``. A start checkpoint keeps its own wiring unless ``aux_wiring``
    is ``"partial"`` (then it is rewired; the auxiliary convs whose shape changes are re-initialised). Flags are
    passed only when not at their defaults, so older requests give the same command line.
    """

    dataset: str = "demo"
    variant: str = "yolov7-tiny"
    aux: bool = True
    checkpoint: str | None = "demo"
    epochs: int = 30
    img: int = 320
    batch: int = 16
    recipe: str = DEFAULT_RECIPE
    name: str | None = None
    width: float = 1.0
    workers: int = 2
    max_steps: int = 0
    device: str = "auto"
    assign: str = DEFAULT_ASSIGN
    assign_bound: float | None = None
    aux_wiring: str = AUX_WIRINGS[0]  # top-down, the official wiring

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise JobError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise JobError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        for key, low, high in (("epochs", 1, 10000), ("img", 32, 4096), ("batch", 1, 1024), ("workers", 0, 32)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise JobError(f"{key} must be a whole number from {low} to {high}, got {value!r}")
        if self.img % 32:
            raise JobError(f"image size must be a multiple of 32 (the models' stride), got {self.img}")
        if not 0.0 < float(self.width) <= 2.0:
            raise JobError(f"width must be in (0, 2], got {self.width}")
        if not self.variant or not str(self.variant).replace("-", "").replace("_", "").isalnum():
            raise JobError(f"invalid variant {self.variant!r} ({VARIANTS_HINT})")
        self._validate_assignment()

    def _validate_assignment(self) -> None:
        if self.assign not in ASSIGN_STRATEGIES:
            raise JobError(f"unknown assignment strategy {self.assign!r}; choose one of {', '.join(ASSIGN_STRATEGIES)}")
        if self.aux_wiring not in AUX_WIRINGS:
            raise JobError(f"unknown auxiliary-head wiring {self.aux_wiring!r}; choose one of {', '.join(AUX_WIRINGS)}")
        bound = self.assign_bound
        if bound is not None:
            number = isinstance(bound, (int, float)) and not isinstance(bound, bool)
            if not number or not math.isfinite(bound) or bound < 0:
                raise JobError(f"assign_bound (the cap's strength) must be a number >= 0, got {bound!r}")
            if self.assign != "coarse-to-fine-bounded":
                raise JobError(
                    f"assign_bound is the strength of coarse-to-fine-bounded's cap; with assign {self.assign!r} it has "
                    "no effect: leave it out or choose assign 'coarse-to-fine-bounded'"
                )
        if not self.aux:
            if self.aux_wiring != AUX_WIRINGS[0]:
                raise JobError(
                    f"aux_wiring {self.aux_wiring!r} wires the auxiliary head, but the auxiliary head is off: turn it "
                    f"on (aux) or keep {AUX_WIRINGS[0]!r}"
                )
            if self.assign != DEFAULT_ASSIGN:
                raise JobError(
                    f"assign {self.assign!r} chooses the auxiliary head's labels, but the auxiliary head is off: turn "
                    f"it on (aux) or keep {DEFAULT_ASSIGN!r}"
                )
        if self.aux_wiring == "partial" and self.checkpoint is None:  # a start checkpoint brings its own model
            try:
                family = get_spec(self.variant).family
            except KeyError:
                return  # an unknown variant: the training process names the known ones
            if family == "p6":
                raise JobError(
                    f"aux_wiring 'partial' is for the P5 models (yolov7-tiny, yolov7, yolov7x and their scaled "
                    f"variants); {self.variant} is a P6 model and keeps the official wiring: use 'top-down'"
                )

    def recipe_args(self) -> list[str]:
        if self.recipe == "official":
            return ["--optimizer", "sgd", "--nbs", "64", "--warmup-min-iters", "1000"]
        close = min(10, self.epochs // 5)
        return ["--optimizer", "adamw", "--set", "lr0=0.002", "--nbs", "16", "--warmup-min-iters", "100"] + (
            ["--close-mosaic", str(close)] if close else []
        )

    def to_args(self, data: Path, weights: Path | None, out: Path) -> list[str]:
        """The ``train`` sub-command's arguments for this request (dataset and checkpoint already resolved)."""
        args = ["train", "--data", str(data), "--model", self.variant, "--out", str(out), "--name", out.name]
        args += ["--aux" if self.aux else "--no-aux", "--epochs", str(self.epochs), "--img", str(self.img)]
        args += ["--batch", str(self.batch), "--workers", str(self.workers), "--device", self.device, "--no-progress"]
        if weights is not None:
            args += ["--weights", str(weights)]
        if float(self.width) != 1.0:
            args += ["--width", str(float(self.width))]
        if self.max_steps:
            args += ["--max-steps", str(int(self.max_steps))]
        if self.assign != DEFAULT_ASSIGN:
            args += ["--assign", self.assign]
        if self.assign_bound is not None:
            args += ["--assign-bound", str(float(self.assign_bound))]
        if self.aux_wiring != AUX_WIRINGS[0]:
            args += ["--aux-wiring", self.aux_wiring]
        return args + self.recipe_args()


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: Any, run_root: Path | None = None) -> bool:
    """Whether ``pid`` lives (zombies count as gone); on Linux also that it is the process training ``run_root``."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if run_root is not None:  # a recycled pid belongs to another program
            return str(run_root) in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        pass
    return True


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, recursively."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def tail(path: Path, lines: int = 30, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


class JobRunner:
    """Launch, queue, stop and follow trainings of one workspace (see the module docstring).

    ``poll_interval``: seconds between the background thread's ``poll()`` calls (None: no thread; call ``poll()``
    yourself). ``threads``: OMP/MKL threads of a training process (default: the CPU count, at most 8).
    """

    JOB_FILE = "job.json"
    PROCESS_LOG = "process.log"

    def __init__(self, workspace: Workspace, *, poll_interval: float | None = 2.0, threads: int | None = None) -> None:
        self.ws = workspace
        self.threads = threads or max(1, min(os.cpu_count() or 1, 8))
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._export_lock = threading.Lock()
        self._recent: list[tuple[float, dict[str, Any], str]] = []  # (time, request without name, name)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.poll()  # re-attach: a job still running keeps running; the queue continues if none is
        if poll_interval:
            self._thread = threading.Thread(
                target=self._loop, args=(poll_interval,), name="yolov7-studio-jobs", daemon=True
            )
            self._thread.start()

    # -- paths and records ------------------------------------------------------------------------------------
    def run(self, name: str) -> RunDir:
        try:
            return RunDir(self.ws.run_dir(name))
        except WorkspaceError as exc:
            raise JobError(str(exc)) from None

    def _job(self, name: str) -> dict[str, Any] | None:
        return _read_json(self.ws.runs_dir / name / self.JOB_FILE)

    def _update_job(self, name: str, **fields: Any) -> None:
        path = self.ws.runs_dir / name / self.JOB_FILE
        job = _read_json(path) or {"name": name}
        job.update(fields)
        _atomic_json(path, job)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This runner's lock and the workspace-wide file lock (another studio or a dashboard may poll too)."""
        with self._lock:
            fd = os.open(self.ws.queue_dir / ".runner.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    # -- the queue -----------------------------------------------------------------------------------------------
    def _queue_files(self) -> list[Path]:
        return sorted(p for p in self.ws.queue_dir.glob("*.json") if not p.name.startswith("."))

    def queue(self) -> list[dict[str, Any]]:
        """Waiting requests in the order they will run: ``{name, position (1 = next), created, request}``."""
        out = []
        for path in self._queue_files():
            entry = _read_json(path)
            if entry and isinstance(entry.get("name"), str):
                out.append({**entry, "position": len(out) + 1, "file": path.name})
        return out

    def _queue_entry(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.queue() if e["name"] == name), None)

    # -- starting -----------------------------------------------------------------------------------------------
    def _new_name(self, req: TrainRequest) -> str:
        ds = safe_name(req.dataset.split(":", 1)[-1], "data")
        base = safe_name(f"{req.variant}-{ds}-{time.strftime('%Y%m%d-%H%M%S')}", "run")
        name, i = base, 1
        while self._name_taken(name):
            i += 1
            name = f"{base}-{i}"
        return name

    def _name_taken(self, name: str) -> bool:
        return (self.ws.runs_dir / name).exists() or self._queue_entry(name) is not None

    def _resolve(self, req: TrainRequest) -> tuple[Path, Path | None]:
        try:
            data = self.ws.dataset(req.dataset).path
            weights = self.ws.checkpoint(req.checkpoint).path if req.checkpoint else None
        except WorkspaceError as exc:
            raise JobError(str(exc)) from None
        return data, weights

    def start(self, request: TrainRequest | dict[str, Any]) -> dict[str, Any]:
        """Queue a training (it starts at once when nothing runs); returns its status (``queued`` or ``starting``).

        Refused with :class:`JobError` (nothing changed) for an unknown dataset/checkpoint, a bad option, or a name
        that a run or a queued request already has. The same unnamed request again within ``DOUBLE_CLICK_S``
        seconds (a double click) returns the first one's status instead of queueing a copy.
        """
        req = request if isinstance(request, TrainRequest) else TrainRequest.from_dict(dict(request))
        req.validate()
        self._resolve(req)  # refuse unknown ids now, not when the request's turn comes
        with self._locked():
            same = {**req.to_dict(), "name": None}
            for t, earlier, earlier_name in self._recent:  # a double click on Start: the same request again
                if not req.name and earlier == same and time.time() - t < DOUBLE_CLICK_S:
                    return self.status(earlier_name)
            if req.name:
                name = req.name.strip()
                if safe_name(name, "") != name:
                    raise JobError(f"invalid run name {name!r} (use letters, digits, '-', '_', '.')")
                if self._name_taken(name):
                    raise JobError(f"a run or queued request named {name!r} exists already: choose another name")
            else:
                name = self._new_name(req)
            req = dataclasses.replace(req, name=name)
            entry = {"name": name, "created": time.time(), "request": req.to_dict()}
            path = self.ws.queue_dir / f"{time.time_ns():020d}-{name}.json"
            _atomic_json(path, entry)
            now = time.time()
            self._recent = [r for r in self._recent if now - r[0] < DOUBLE_CLICK_S] + [(now, same, name)]
            log.info("queued training %s", name)
            self._poll_locked()
        return self.status(name)

    def _launch(self, entry: dict[str, Any]) -> None:
        """Start the queued ``entry`` as a process (called under the lock, with nothing running)."""
        name = entry["name"]
        req = TrainRequest.from_dict(entry["request"])
        run = self.run(name)
        run.root.mkdir(parents=True, exist_ok=True)
        try:
            data, weights = self._resolve(req)
        except JobError as exc:  # the dataset or checkpoint went away while the request waited
            self._update_job(name, request=req.to_dict(), launched=time.time(), returncode=2, error=str(exc))
            run.log(f"FAILED before launch: {exc}")
            return
        cmd = [sys.executable, "-m", "app.cli", *req.to_args(data, weights, run.root)]
        env = dict(os.environ)
        env.update(
            OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
        )  # fmt: skip
        self._update_job(name, request=req.to_dict(), command=cmd, launched=time.time(), queued=entry.get("created"))
        try:
            with open(run.root / self.PROCESS_LOG, "ab") as out:
                proc = subprocess.Popen(
                    cmd, cwd=run.root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        except OSError as exc:
            self._update_job(name, returncode=127, error=f"cannot start the training process: {exc}")
            return
        self._procs[name] = proc
        self._update_job(name, pid=proc.pid)
        log.info("started training %s (pid %d): %s", name, proc.pid, " ".join(cmd))

    # -- following -------------------------------------------------------------------------------------------------
    def _alive(self, name: str, job: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> bool:
        """Whether the training process of ``name`` still runs: by our process handle, else by the recorded pid."""
        proc = self._procs.get(name)
        if proc is not None:
            rc = proc.poll()
            if rc is None:
                return True
            self._procs.pop(name, None)
            with contextlib.suppress(OSError):
                self._update_job(name, returncode=rc, ended=time.time())
            return False
        root = self.ws.runs_dir / name
        job = self._job(name) if job is None else job
        if job is not None:  # launched by a runner: its command line names the run directory
            if "returncode" in job:
                return False
            if "pid" not in job:  # being launched right now (or the launcher died in between: give up after 60 s)
                return time.time() - float(job.get("launched") or 0) < 60
            return _pid_alive(job["pid"], root)
        status = RunDir(root).read_status() if status is None else status
        return _pid_alive((status or {}).get("pid"))  # a run started from the command line

    def _active_runs(self) -> list[str]:
        """Runs of this workspace whose training process lives (normally at most one)."""
        out = []
        for root in self.ws.list_runs():
            job, status = self._job(root.name), RunDir(root).read_status()
            if (job is None and status is None) or (job is not None and "returncode" in job):
                continue
            if (status or {}).get("state") in ("finished", "failed", "stopped") and root.name not in self._procs:
                continue
            if self._alive(root.name, job, status):
                out.append(root.name)
        return out

    def poll(self) -> str | None:
        """Reap ended processes and start the next queued request if nothing runs; returns the running job's name."""
        with self._locked():
            return self._poll_locked()

    def _poll_locked(self) -> str | None:
        active = self._active_runs()
        for name in active:  # a stop asked for before the trainer took its run directory is asked again
            job = self._job(name) or {}
            run = self.run(name)
            running = (run.read_status() or {}).get("state") == "running"
            if job.get("stop_requested") and running and not run.stop_requested():
                run.request_stop("stop requested from the studio")
        if active:
            return active[0]
        for path in self._queue_files():
            entry = _read_json(path)
            path.unlink(missing_ok=True)
            if not entry or not isinstance(entry.get("name"), str):
                log.warning("dropped unreadable queue entry %s", path)
                continue
            self._launch(entry)
            if entry["name"] in self._procs:
                return str(entry["name"])
        return None

    def _loop(self, interval: float) -> None:
        while not self._stop_event.wait(interval):
            try:
                self.poll()
            except Exception:  # the poller must survive anything (a full disk, a removed folder)
                log.exception("job runner poll failed")

    def close(self) -> None:
        """Stop the background poller (running trainings continue)."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- status ----------------------------------------------------------------------------------------------------
    def state(self, name: str) -> str:
        """The run's state (see the module docstring)."""
        if self._queue_entry(name) is not None:
            return "queued"
        root = self.ws.runs_dir / name
        if not root.is_dir():
            return "unknown"
        run = RunDir(root)
        job, status = self._job(name), run.read_status()
        recorded = (status or {}).get("state")
        if recorded in ("finished", "failed", "stopped"):
            return str(recorded)
        if job is None:  # not launched by a runner: what the run directory says
            if status is None:
                return "unknown"
            if hasattr(run, "effective_state"):
                return str(run.effective_state() or "unknown")
            return str(recorded) if _pid_alive(status.get("pid")) else "died"
        if self._alive(name, job, status):
            return "running" if recorded == "running" else "starting"
        job = self._job(name) or job  # _alive may just have recorded the exit code
        if job.get("stop_requested"):
            return "stopped"  # stopped before the trainer took its run directory
        rc = job.get("returncode")
        if isinstance(rc, int) and rc >= 0 and (status is None or recorded == "queued"):
            return "failed"  # ended before training started (bad option, import error, dataset gone)
        return "died"  # killed by a signal, or gone while nobody watched its exit code

    def status(self, name: str, log_lines: int = 30) -> dict[str, Any]:
        """Plain data about one run or queued request (JSON-safe); :class:`JobError` if there is none."""
        name = (name or "").strip()
        entry = self._queue_entry(name)
        if entry is not None:
            return {
                "name": name, "state": "queued", "queue_position": entry["position"], "request": entry["request"],
                "message": f"waiting: position {entry['position']} in the queue", "queue": self.queue_names(),
                "epoch": 0, "epochs": entry["request"].get("epochs"), "step": 0, "steps": None, "losses": {},
                "metrics": {}, "results": [], "log_tail": "", "images_per_s": None, "eta_s": None, "eta": "",
                "files": {}, "pid": None, "returncode": None, "run_dir": None,
            }  # fmt: skip
        root = self.ws.runs_dir / name
        if not name or safe_name(name, "") != name or not root.is_dir():
            raise JobError(f"no run or queued request named {name!r}")
        run = RunDir(root)
        state = self.state(name)
        job, st = self._job(name) or {}, run.read_status() or {}
        req = job.get("request") or {}
        epochs, steps = st.get("epochs") or req.get("epochs"), st.get("steps")
        epoch, step = int(st.get("epoch") or 0), int(st.get("step") or 0)
        ips = st.get("images_per_s") if state == "running" else None
        eta = None
        if ips and epochs and steps and req.get("batch"):
            remaining = max(0, (int(epochs) - epoch) * int(steps) - step) * int(req["batch"])
            eta = remaining / float(ips)
        log_tail = tail(run.log_file, log_lines)
        if state in ("failed", "died", "unknown"):
            out = tail(root / self.PROCESS_LOG, log_lines)
            if out and out.strip() not in log_tail:
                log_tail = (log_tail + "\n--- process output ---\n" + out).strip()
        message = str(st.get("message") or "")
        if state == "died":
            rc = job.get("returncode")
            message = (
                f"the training process ended without a final status (exit code {rc})"
                if rc is not None
                else ("the training process is gone (killed, or the machine restarted) without a final status")
            )
        elif state == "failed" and not message:
            message = str(job.get("error") or f"the training process exited with code {job.get('returncode')}")
        elif state == "starting":
            message = message or "starting the training process"
        files = {k: str(p) for k, p in (("best", run.best), ("last", run.last)) if p.is_file()}
        files.update(self._export_files(name))
        return _clean({
            "name": name, "state": state, "message": message, "epoch": epoch, "epochs": epochs, "step": step,
            "steps": steps, "images_per_s": ips, "eta_s": eta, "eta": format_eta(eta),
            "losses": st.get("losses") or {}, "metrics": st.get("metrics") or {}, "queue_position": 0 if state in (
                "starting", "running") else None, "queue": self.queue_names(), "log_tail": log_tail,
            "results": run.read_results(), "request": req, "pid": job.get("pid") or st.get("pid"),
            "returncode": job.get("returncode"), "run_dir": str(root), "files": files,
        })  # fmt: skip

    def queue_names(self) -> list[str]:
        return [e["name"] for e in self.queue()]

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every run (newest first) and queued request: ``{name, state, queue_position}``."""

        def started(root: Path) -> float:
            job, status = self._job(root.name) or {}, RunDir(root).read_status() or {}
            t = job.get("launched") or status.get("started")
            return float(t) if isinstance(t, (int, float)) else root.stat().st_mtime

        runs = sorted(self.ws.list_runs(), key=started, reverse=True)
        out = [{"name": e["name"], "state": "queued", "queue_position": e["position"]} for e in self.queue()]
        return out + [{"name": r.name, "state": self.state(r.name), "queue_position": None} for r in runs]

    # -- stopping ----------------------------------------------------------------------------------------------------
    def stop(self, name: str) -> dict[str, Any]:
        """Stop a run (it ends ``stopped`` with its checkpoints) or take a queued request out of the queue."""
        name = (name or "").strip()
        with self._locked():
            entry = self._queue_entry(name)
            if entry is not None:
                (self.ws.queue_dir / entry["file"]).unlink(missing_ok=True)
                log.info("removed %s from the queue", name)
                queue = self.queue_names()
                return {"name": name, "state": "cancelled", "message": "removed from the queue", "queue": queue}
            state = self.state(name)
            if state == "unknown":
                raise JobError(f"no run or queued request named {name!r}")
            if state not in ("starting", "running"):
                return {**self.status(name), "message": f"not running ({state}): nothing to stop"}
            run = self.run(name)
            self._update_job(name, stop_requested=time.time())
            run.request_stop("stop requested from the studio")
            log.info("stop requested for %s", name)
        return self.status(name)

    def kill(self, name: str) -> None:
        """SIGKILL the run's process group (last resort; the run then shows ``died``)."""
        job = self._job(name) or {}
        pid = job.get("pid")
        if isinstance(pid, int) and _pid_alive(pid, self.ws.runs_dir / name):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    # -- downloads -------------------------------------------------------------------------------------------------
    def _export_files(self, name: str) -> dict[str, str]:
        from app.services.training import export_paths

        return {k: str(p) for k, p in export_paths(self.ws.runs_dir / name).items() if p.is_file()}

    def export(self, name: str, form: str) -> dict[str, Any]:
        """The run's ``deploy`` checkpoint (re-parameterized, with its self-check text) or ``onnx`` file.

        Made from best.pt (else last.pt) into ``<run>/export/`` once and reused while the checkpoint is unchanged.
        Returns ``{path, check, passed, cached}``. Refused while the run trains.
        """
        from app.services.training import export_run

        state = self.state(name)
        if state in ACTIVE_STATES:
            raise JobError(f"{name} is {state}: downloads are made when the run has ended")
        run = self.run(name)
        source = run.best if run.best.is_file() else run.last
        if not source.is_file():
            raise JobError(f"{name}: no checkpoint to export (the run ended {state} before its first epoch)")
        img = int(((self._job(name) or {}).get("request") or {}).get("img") or 320)
        with self._export_lock:  # one export at a time in this process (they are CPU-heavy)
            return export_run(run.root, source, form, img)
