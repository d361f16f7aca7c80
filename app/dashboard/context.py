"""What every dashboard page shares: the workspace, the job runner, the model cache and the extra run folders.

Configured by the script's arguments (``streamlit run app/dashboard/app.py -- --workspace DIR --runs DIR ...``),
else by the environment (``YOLOV7_DASHBOARD_WORKSPACE``, ``YOLOV7_DASHBOARD_RUNS``: folders separated by ``:``),
else the studio's default workspace. One context per server process (``st.cache_resource``), so the job runner
and the loaded models are shared by every browser tab.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from app.jobs import JobRunner
from app.modelcache import ModelCache
from app.workspace import DEFAULT_ROOT, Workspace

ENV_WORKSPACE = "YOLOV7_DASHBOARD_WORKSPACE"
ENV_RUNS = "YOLOV7_DASHBOARD_RUNS"


@dataclass
class DashboardContext:
    workspace: Workspace
    jobs: JobRunner
    cache: ModelCache
    extra_runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> tuple[str, list[str]]:
    """(workspace, extra run folders) from the script's arguments, else the environment, else the defaults."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workspace", default=None)
    p.add_argument("--runs", nargs="*", action="extend", default=None)
    args, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    workspace = args.workspace or os.environ.get(ENV_WORKSPACE) or str(DEFAULT_ROOT)
    runs = args.runs if args.runs is not None else [r for r in os.environ.get(ENV_RUNS, "").split(os.pathsep) if r]
    return workspace, runs


@st.cache_resource(show_spinner="opening the workspace")
def _context(workspace: str, extra_runs: tuple[str, ...]) -> DashboardContext:
    ws = Workspace(workspace, allowed_roots=[Path.cwd(), *(Path(r) for r in extra_runs if Path(r).is_dir())])
    notes = []
    try:
        ws.ensure_demo()  # the built-in demo dataset (seconds, once)
    except Exception as exc:  # noqa: BLE001 - the other pages work without it
        notes.append(f"the demo dataset could not be generated: {type(exc).__name__}: {exc}")
    jobs = JobRunner(ws, poll_interval=2.0)  # the queue moves on while only the dashboard is open
    return DashboardContext(ws, jobs, ModelCache(max_entries=3), list(extra_runs), notes)


def get_context() -> DashboardContext:
    workspace, runs = parse_args()
    return _context(str(Path(workspace).resolve()), tuple(str(Path(r).resolve()) for r in runs))
