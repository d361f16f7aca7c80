"""Cached reads for the pages, keyed by the files' mtimes: a finished run is read once, a live run again only when
one of its files changed, so a workspace with many runs stays interactive (see benchmarks/bench_dashboard.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app.dashboard.context import DashboardContext
from app.services import dashboard_runs as R


def _mtime(path: Path) -> tuple[int, int]:
    try:
        st_ = path.stat()
    except OSError:
        return (0, 0)
    return (st_.st_mtime_ns, st_.st_size)


@st.cache_data(max_entries=2000, show_spinner=False)
def _summary(ref: R.RunRef, sig: tuple[Any, ...]) -> R.RunSummary:
    s = R.summarize(ref)
    key = R.model_key(ref.key)
    s.params = _params(*key) if key else None
    return s


@st.cache_data(max_entries=64, show_spinner=False)
def _params(model: str, width: float, nc: int) -> int | None:
    return R.deploy_params(model, width, nc)


def runs(ctx: DashboardContext) -> tuple[list[R.RunRef], list[R.RunSummary], list[str]]:
    """Every run of the workspace and the extra folders, with its summary (cached), and the problems found."""
    refs, problems = R.find_runs(ctx.workspace.runs_dir, ctx.extra_runs)
    return refs, [_summary(r, R.signature(r.key)) for r in refs], problems


def states(ctx: DashboardContext, refs: list[R.RunRef]) -> dict[str, str]:
    """The live state of each run (not cached: it depends on processes, not files)."""
    return {r.key: R.run_state(r, ctx.jobs) for r in refs}


@st.cache_data(max_entries=500, show_spinner=False)
def _results(folder: str, sig: tuple[Any, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    return R.read_results(folder)


def results(folder: str) -> tuple[list[dict[str, Any]], list[str]]:
    return _results(folder, R.signature(folder))


@st.cache_data(max_entries=50, show_spinner=False)
def _detail(folder: str, sig: tuple[Any, ...], log: tuple[int, int], lines: int) -> R.RunDetail:
    return R.run_detail(folder, lines)


def detail(folder: str, lines: int = 40) -> R.RunDetail:
    root = Path(folder)
    log = max(_mtime(root / "train.log"), _mtime(root / "process.log"), _mtime(root / "objectness"))
    return _detail(folder, R.signature(folder), log, lines)
