"""The study folder's ``study.json``: writing it atomically, reading and validating it, finding study folders.

The format (agreed with the front ends) is described in :mod:`core.study`; ``load_study`` is what the studio's
and the dashboard's Compare views read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.train.rundir import atomic_write_text

STUDY_FILE = "study.json"
VERSION = 1
KINDS = ("assignment", "scaling")
RUN_STATES = ("finished", "running", "pending", "failed")
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def write_study(folder: str | Path, study: dict[str, Any]) -> Path:
    """Write ``folder/study.json`` atomically (temp file, then rename), so readers never see half a file."""
    path = Path(folder) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(study, indent=1, default=str))
    return path


def _study_path(path: str | Path) -> Path:
    p = Path(path)
    return p / STUDY_FILE if p.is_dir() or p.suffix != ".json" else p


def load_study(path: str | Path) -> dict[str, Any]:
    """Read and validate a study: ``path`` is the study folder or its ``study.json``.

    Returns the parsed dict with ``"folder"`` (absolute path of the study folder) added. Raises ``ValueError``
    naming the file for a missing, unreadable or malformed file.
    """
    file = _study_path(path)
    if not file.is_file():
        raise ValueError(f"{file}: no study here (study.json missing)")
    try:
        study = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not a readable study.json ({exc})") from None
    problem = _problem(study)
    if problem:
        raise ValueError(f"{file}: {problem}")
    study["folder"] = str(file.parent.resolve())
    return study


def _problem(study: Any) -> str | None:
    """Why ``study`` is not a valid study dict, or None."""
    if not isinstance(study, dict):
        return "not a JSON object"
    if study.get("kind") not in KINDS:
        return f"unknown kind {study.get('kind')!r} (expected one of {', '.join(KINDS)})"
    if study.get("version") != VERSION:
        return f"unsupported version {study.get('version')!r} (this build reads version {VERSION})"
    if not isinstance(study.get("settings"), dict):
        return "'settings' missing or not an object"
    if study["kind"] == "scaling":
        rows = study.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "variant" in r for r in rows):
            return "'rows' missing or malformed (a list of objects with 'variant')"
        return None
    runs = study.get("runs")
    if not isinstance(runs, list):
        return "'runs' missing or not a list"
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            return f"runs[{i}] is not an object"
        missing = [k for k in ("name", "condition", "seed", "run_dir", "status") if k not in run]
        if missing:
            return f"runs[{i}] lacks {', '.join(missing)}"
        if run["status"] not in RUN_STATES:
            return f"runs[{i}] ({run['name']}): unknown status {run['status']!r}"
        metrics = run.get("metrics")
        if metrics is not None and (not isinstance(metrics, dict) or not set(METRIC_KEYS) <= set(metrics)):
            return f"runs[{i}] ({run['name']}): metrics must hold {', '.join(METRIC_KEYS)}"
    for key in ("summary", "paper"):
        if not isinstance(study.get(key, []), list):
            return f"'{key}' is not a list"
    return None


def list_studies(root: str | Path) -> list[Path]:
    """Study folders under ``root`` (``root`` itself, its children and grandchildren) holding a study.json,
    sorted by path. A missing ``root`` gives an empty list."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for pattern in (STUDY_FILE, f"*/{STUDY_FILE}", f"*/*/{STUDY_FILE}"):
        found += [p.parent for p in root.glob(pattern) if p.is_file()]
    return sorted(set(found))
