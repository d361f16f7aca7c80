"""The studio workspace: where uploaded datasets, uploaded checkpoints and training runs live.

One folder (default ``runs/studio``) shared by the Gradio studio, the Streamlit dashboard and the FiftyOne bridge::

    <root>/datasets/<name>/      uploaded (extracted) datasets and the generated demo dataset (datasets/demo)
    <root>/checkpoints/<name>.pt uploaded checkpoints (checked by the safe loader before they are listed)
    <root>/runs/<name>/          training runs (core.train run directories)
    <root>/queue/                the job runner's queue (app.jobs)
    <root>/tmp/                  staging for uploads
    <root>/cache/                exported ONNX graphs and comparison results (re-made when a checkpoint changes)
    <root>/workspace.json        dataset folders linked from outside (under an allowed root)

Everything is found again by listing these folders, so nothing is lost when the studio restarts. Items are
named by stable ids that the UIs and the API use: ``demo``, ``run:<name>``, ``upload:<name>`` (checkpoints) and
``demo``, ``upload:<name>``, ``folder:<name>`` (datasets). No id or path from a request can reach outside the
workspace (or the allowed roots for linked folders, or the shipped demo checkpoint).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
DEMO_CHECKPOINT = ASSETS / "demo_yolov7-tiny_aux.pt"
DEMO_RUN = ASSETS / "demo_run"  # the run that made DEMO_CHECKPOINT: curves, log, objectness snapshots (no weights)
DEFAULT_ROOT = Path("runs/studio")
DEMO_DATASET_PARAMS = {"n_images": 300, "img_size": 320, "seed": 0}  # what the demo checkpoint was trained on
DATASET_FILES = ("data.yaml", "data.yml", "dataset.yaml")


class WorkspaceError(ValueError):
    """A request the workspace refuses; the message says what and why."""


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset the studio can use: ``path`` is what ``core.data.load_dataset`` reads."""

    id: str
    label: str
    path: Path
    source: str  # "demo" | "upload" | "folder"


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint the studio can use."""

    id: str
    label: str
    path: Path
    source: str  # "demo" | "run" | "upload"


def safe_name(text: str, fallback: str = "item") -> str:
    """A file-system-safe name: letters, digits, ``-_.``; never empty, never starting with a dot."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(text)).name).strip("._")
    return name[:80] or fallback


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class Workspace:
    """Folders and ids of the studio's datasets, checkpoints and runs (see the module docstring)."""

    def __init__(self, root: str | Path = DEFAULT_ROOT, allowed_roots: list[str | Path] | None = None) -> None:
        self.root = Path(root).resolve()
        self.datasets_dir = self.root / "datasets"
        self.checkpoints_dir = self.root / "checkpoints"
        self.runs_dir = self.root / "runs"
        self.queue_dir = self.root / "queue"
        self.tmp_dir = self.root / "tmp"
        self.registry = self.root / "workspace.json"
        for d in (self.datasets_dir, self.checkpoints_dir, self.runs_dir, self.queue_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        # folders a user may link as datasets by name (default: the current directory and the workspace)
        roots = allowed_roots if allowed_roots is not None else [Path.cwd()]
        self.allowed_roots = [Path(r).resolve() for r in roots] + [self.root]
        self._lock = threading.Lock()

    # -- the built-in demo ------------------------------------------------------------------------------------
    @property
    def demo_dataset_dir(self) -> Path:
        return self.datasets_dir / "demo"

    def ensure_demo(self) -> DatasetEntry:
        """Generate the demo dataset into the workspace unless it is there (seconds; nothing downloaded)."""
        from core.data.demo import ensure_demo_dataset

        with self._lock:
            yaml_path = ensure_demo_dataset(self.demo_dataset_dir, **DEMO_DATASET_PARAMS)
            self._seed_demo_run()
        return DatasetEntry("demo", "demo (built-in shapes)", yaml_path, "demo")

    def _seed_demo_run(self) -> None:
        """Copy the shipped record of the demo checkpoint's training into runs/demo, once per workspace.

        Never overwritten, and not brought back once a user deleted it (``.demo_run_seeded`` records the copy).
        """
        dest, marker = self.runs_dir / "demo", self.root / ".demo_run_seeded"
        if marker.exists() or not DEMO_RUN.is_dir():
            return
        if not dest.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".demo_run.", dir=self.runs_dir))
            shutil.copytree(DEMO_RUN, tmp, dirs_exist_ok=True)
            os.replace(tmp, dest)
        marker.touch()

    # -- datasets -------------------------------------------------------------------------------------------------
    def _linked(self) -> dict[str, str]:
        try:
            data = json.loads(self.registry.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {str(k): str(v) for k, v in (data.get("folders") or {}).items()}

    def _write_registry(self, folders: dict[str, str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".workspace.", suffix=".tmp", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump({"folders": folders}, f, indent=1)
        os.replace(tmp, self.registry)

    @staticmethod
    def _dataset_path(folder: Path) -> Path:
        for name in DATASET_FILES:
            if (folder / name).is_file():
                return folder / name
        return folder

    def list_datasets(self) -> list[DatasetEntry]:
        out: list[DatasetEntry] = []
        if (self.demo_dataset_dir / "data.yaml").is_file():
            out.append(DatasetEntry("demo", "demo (built-in shapes)", self.demo_dataset_dir / "data.yaml", "demo"))
        for d in sorted(p for p in self.datasets_dir.iterdir() if p.is_dir() and p.name != "demo"):
            if d.name.startswith("."):
                continue
            out.append(DatasetEntry(f"upload:{d.name}", f"{d.name} (uploaded)", self._dataset_path(d), "upload"))
        for name, path in sorted(self._linked().items()):
            p = Path(path)
            if p.exists():
                out.append(DatasetEntry(f"folder:{name}", f"{name} ({p})", p, "folder"))
        return out

    def new_dataset_dir(self, name: str) -> Path:
        """A fresh, uniquely named folder under datasets/ for an upload."""
        base = safe_name(name, "dataset")
        if base == "demo":
            base = "demo_upload"
        with self._lock:
            candidate, i = base, 1
            while (self.datasets_dir / candidate).exists():
                i += 1
                candidate = f"{base}_{i}"
            path = self.datasets_dir / candidate
            path.mkdir(parents=True)
        return path

    def link_folder(self, path: str | Path, name: str | None = None) -> DatasetEntry:
        """Register a dataset folder or file on disk; it must lie under one of the allowed roots."""
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = Path.cwd() / p
        p = p.resolve()
        if not any(_within(p, r) for r in self.allowed_roots):
            roots = ", ".join(str(r) for r in self.allowed_roots)
            raise WorkspaceError(f"{path}: outside the folders the studio may read ({roots})")
        if not p.exists():
            raise WorkspaceError(f"{path}: no such file or folder")
        key = safe_name(name or p.stem, "dataset")
        with self._lock:
            folders = self._linked()
            folders[key] = str(p)
            self._write_registry(folders)
        return DatasetEntry(f"folder:{key}", f"{key} ({p})", p, "folder")

    def dataset(self, ident: str | None) -> DatasetEntry:
        """The dataset with this id (``None``/empty: the demo)."""
        ident = (ident or "demo").strip()
        if ident == "demo":
            return self.ensure_demo()
        for entry in self.list_datasets():
            if ident in (entry.id, entry.label):
                return entry
        raise WorkspaceError(f"unknown dataset {ident!r}; known: {', '.join(e.id for e in self.list_datasets())}")

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def list_checkpoints(self) -> list[CheckpointEntry]:
        out: list[CheckpointEntry] = []
        if DEMO_CHECKPOINT.is_file():
            out.append(CheckpointEntry("demo", "demo: yolov7-tiny + aux head (built-in)", DEMO_CHECKPOINT, "demo"))
        for run in sorted(p for p in self.runs_dir.iterdir() if p.is_dir()):
            for which in ("best", "last"):
                ck = run / "weights" / f"{which}.pt"
                if ck.is_file():
                    out.append(CheckpointEntry(f"run:{run.name}", f"run {run.name} ({which}.pt)", ck, "run"))
                    break
        for ck in sorted(self.checkpoints_dir.glob("*.pt")):
            out.append(CheckpointEntry(f"upload:{ck.name}", f"{ck.name} (uploaded)", ck, "upload"))
        return out

    def checkpoint(self, ident: str | None) -> CheckpointEntry:
        """The checkpoint with this id (``None``/empty: the demo checkpoint)."""
        ident = (ident or "demo").strip()
        for entry in self.list_checkpoints():
            if ident in (entry.id, entry.label):
                return entry
        if ident == "demo":
            raise WorkspaceError(f"the demo checkpoint {DEMO_CHECKPOINT} is missing from this installation")
        raise WorkspaceError(f"unknown checkpoint {ident!r}; known: {', '.join(e.id for e in self.list_checkpoints())}")

    def add_checkpoint(self, upload: str | Path, name: str | None = None) -> CheckpointEntry:
        """Copy an uploaded ``.pt`` into checkpoints/ after the safe loader accepted it.

        A file the loader refuses (foreign code, TorchScript, corrupt) is deleted and the loader's message is
        raised as a :class:`WorkspaceError` naming the file.
        """
        from core.checkpoint.io import CheckpointError, load_model

        src = Path(upload)
        shown = name or src.name
        try:
            load_model(src)
        except CheckpointError as exc:
            raise WorkspaceError(f"{shown}: refused: {str(exc).replace(str(src), '').lstrip(': ')}") from None
        except Exception as exc:  # any other failure of a foreign file is a refusal, never a crash
            raise WorkspaceError(f"{shown}: cannot be loaded ({type(exc).__name__}: {exc})") from None
        stem = safe_name(Path(shown).stem, "checkpoint")
        with self._lock:
            dest, i = self.checkpoints_dir / f"{stem}.pt", 1
            while dest.exists():
                i += 1
                dest = self.checkpoints_dir / f"{stem}_{i}.pt"
            fd, tmp = tempfile.mkstemp(prefix=".upload.", suffix=".tmp", dir=self.checkpoints_dir)
            os.close(fd)
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        return CheckpointEntry(f"upload:{dest.name}", f"{dest.name} (uploaded)", dest, "upload")

    # -- runs ------------------------------------------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        """The folder of the run with this name (a safe name; the folder need not exist)."""
        clean = safe_name(name, "run")
        if clean != name:
            raise WorkspaceError(f"invalid run name {name!r} (use letters, digits, '-', '_', '.')")
        return self.runs_dir / clean

    def list_runs(self) -> list[Path]:
        return sorted((p for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=str)

    # -- confinement ------------------------------------------------------------------------------------------------
    def inside(self, path: str | Path) -> Path:
        """``path`` resolved, if it lies inside the workspace; otherwise a :class:`WorkspaceError`."""
        p = Path(path)
        if not p.is_absolute():
            p = self.root / p
        if not _within(p, self.root):
            raise WorkspaceError(f"{path}: outside the workspace {self.root}")
        return p.resolve()
