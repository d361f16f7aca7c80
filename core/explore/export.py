"""Writing the explorer's results: standalone HTML (plotly.js inlined, works offline), PNG (kaleido with the system
Chromium) and JSON.

``save_exploration(exp, out)`` writes, for an image ``NAME``::

    NAME_assignment.html     interactive figure (dropdowns: level/anchor, map)
    NAME_P3.png, NAME_P4.png ...   one static panel per level: image | lead + fine | aux + coarse
    NAME_assignment.json     ImageExploration.to_dict(): mapping, boxes, per-box counts, the full assignment view

``save_stats(stats, out)`` writes ``assignment_stats.json``, ``assignment_stats.html`` and one PNG per figure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from core.data.figures import write_pngs as write_figure_pngs
from core.explore.engine import ImageExploration
from core.explore.figure import exploration_figure, level_figure
from core.explore.stats import AssignmentStats

__all__ = ["SavedFiles", "write_html", "write_pngs", "save_exploration", "save_stats", "safe_stem"]


@dataclass
class SavedFiles:
    """Paths written, and why PNGs are missing when they are (no Chromium, export error), else ``None``."""

    html: Path | None = None
    json: Path | None = None
    pngs: list[Path] = field(default_factory=list)
    note: str | None = None

    def all(self) -> list[Path]:
        return [p for p in (self.html, self.json) if p is not None] + list(self.pngs)


def safe_stem(name: str) -> str:
    """A file-name-safe stem (letters, digits, ``-_.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"


def write_html(figs: Sequence[go.Figure], path: Path, title: str) -> Path:
    """One self-contained HTML page with ``figs`` one below the other (plotly.js inlined once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    path.write_text(f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                    + "".join(parts) + "</body></html>")  # fmt: skip
    return path


def write_pngs(figs: Sequence[go.Figure], paths: Sequence[Path]) -> str | None:
    """PNG of each figure at its layout size; returns ``None``, or why nothing was written."""
    if not figs:
        return None
    paths = [Path(p) for p in paths]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    widths = [f.layout.width or 1200 for f in figs]
    heights = [f.layout.height or 700 for f in figs]
    return write_figure_pngs(list(figs), paths, widths, heights)


def save_exploration(exp: ImageExploration, out: str | Path, *, name: str | None = None, png: bool = True,
                     levels: Sequence[int] | None = None) -> SavedFiles:  # fmt: skip
    """Write the interactive HTML, the JSON and (``png``) one PNG per level (``levels``: default all)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(name or (Path(exp.source).stem if exp.source and exp.source != "array" else "image"))
    files = SavedFiles()
    files.html = out / f"{stem}_assignment.html"
    exploration_figure(exp).write_html(files.html, include_plotlyjs=True, full_html=True)
    files.json = out / f"{stem}_assignment.json"
    files.json.write_text(json.dumps(exp.to_dict(), indent=1))
    if png:
        chosen = list(range(len(exp.levels))) if levels is None else list(levels)
        paths = [out / f"{stem}_{exp.levels[i].name}.png" for i in chosen]
        files.note = write_pngs([level_figure(exp, i) for i in chosen], paths)
        if files.note is None:
            files.pngs = paths
    return files


def save_stats(stats: AssignmentStats, out: str | Path, *, png: bool = True) -> SavedFiles:
    """Write ``assignment_stats.json``, ``assignment_stats.html`` (all figures) and one PNG per figure."""
    from core.explore.stats_figures import STATS_FIGURES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = SavedFiles()
    files.json = out / "assignment_stats.json"
    files.json.write_text(stats.to_json(indent=1))
    figs = {name: make(stats) for name, make in STATS_FIGURES.items()}
    files.html = write_html(list(figs.values()), out / "assignment_stats.html", "Assignment statistics")
    if png:
        paths = [out / f"{name}.png" for name in figs]
        files.note = write_pngs(list(figs.values()), paths)
        if files.note is None:
            files.pngs = paths
    return files
