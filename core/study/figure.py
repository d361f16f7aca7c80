"""The paper's objectness-map figure (its Figure 8), made from a study's runs: one image, every condition.

Rows are conditions, columns the lead and the auxiliary head; each panel is the network input with the head's
objectness ``sigmoid(t_obj)`` (max over the level's anchors) laid over it and the ground-truth boxes drawn; one
colour scale for the whole grid, from 0 to the largest objectness shown. The maps
come from :func:`core.explore.explore_image` on each run's checkpoint (eval mode, BN running statistics); a model
without an auxiliary head (condition ``none``) has a lead panel only. The PNG shows one level (the one with the most
positives for the first condition, :func:`core.explore.default_level`); the HTML has one figure per level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.explore import ImageExploration, default_level, write_html, write_pngs

PANEL_PX = 260  # displayed size of one panel


def _panel(fig: go.Figure, exp: ImageExploration, obj: np.ndarray | None, stride: int, zmax: float, row: int,
           col: int) -> None:  # fmt: skip
    if obj is None:
        size = exp.img_size
        fig.add_trace(go.Scatter(x=[0, size], y=[0, size], mode="markers", marker={"opacity": 0}, showlegend=False,
                                 hoverinfo="skip"), row=row, col=col)  # fmt: skip
        fig.add_annotation(x=size / 2, y=size / 2, text="no auxiliary head", showarrow=False, row=row, col=col)
        return
    fig.add_trace(go.Image(z=exp.image, hoverinfo="skip"), row=row, col=col)
    if obj is not None:
        m = obj.max(axis=0)  # [H, W]: the strongest anchor per cell
        fig.add_trace(
            go.Heatmap(z=m, x0=stride / 2, dx=stride, y0=stride / 2, dy=stride, zmin=0, zmax=zmax, opacity=0.6,
                       colorscale="Inferno", showscale=(row == 1 and col == 1),
                       colorbar={"title": "objectness", "len": 0.5, "y": 1, "yanchor": "top"},
                       hovertemplate="objectness %{z:.3f}<extra></extra>"),
            row=row, col=col,
        )  # fmt: skip
    for x1, y1, x2, y2 in exp.boxes_input:
        fig.add_trace(
            go.Scatter(x=[x1, x2, x2, x1, x1], y=[y1, y1, y2, y2, y1], mode="lines", showlegend=False,
                       line={"color": "#00e5ff", "width": 1.5}, hoverinfo="skip"),
            row=row, col=col,
        )  # fmt: skip


def objectness_grid(explorations: Sequence[tuple[str, ImageExploration]], level: int, title: str = "") -> go.Figure:
    """Rows = conditions (name, exploration), columns = lead / aux objectness at ``level``."""
    n = len(explorations)
    titles = []
    for name, exp in explorations:
        lv = exp.levels[level]
        titles += [f"{name}: lead ({lv.name})", f"{name}: aux ({lv.name})" if exp.has_aux else f"{name}: no aux head"]
    fig = make_subplots(rows=n, cols=2, subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=min(0.08, 0.3 / max(n, 1)))  # fmt: skip
    fig.update_annotations(font_size=12)  # long condition names fit above their panels
    # one colour scale for the whole grid (so conditions compare), up to the largest objectness drawn
    zmax = max([float(m.max()) for _n, e in explorations for m in (e.levels[level].lead_obj, e.levels[level].aux_obj)
                if m is not None] + [0.05])  # fmt: skip
    for r, (_name, exp) in enumerate(explorations, start=1):
        lv = exp.levels[level]
        _panel(fig, exp, lv.lead_obj, lv.stride, zmax, r, 1)
        _panel(fig, exp, lv.aux_obj, lv.stride, zmax, r, 2)
    size = explorations[0][1].img_size if explorations else 0
    for i in range(1, 2 * n + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"xaxis{suffix}"].update(range=[0, size], showticklabels=False, constrain="domain")
        fig.layout[f"yaxis{suffix}"].update(range=[size, 0], showticklabels=False, scaleanchor=f"x{suffix}")
    fig.update_layout(title=title, width=2 * PANEL_PX + 160, height=n * (PANEL_PX + 40) + 100,
                      margin={"l": 20, "r": 20, "t": 80, "b": 20}, plot_bgcolor="white")  # fmt: skip
    return fig


def save_objectness_figure(
    explorations: Sequence[tuple[str, ImageExploration]], out: str | Path, image_name: str = ""
) -> dict[str, Any]:
    """Write ``objectness.html`` (one figure per level) and ``objectness.png`` (the default level) into ``out``.
    Returns ``{"html", "png", "level", "note"}`` (``png`` None and ``note`` saying why when no PNG could be made)."""
    out = Path(out)
    if not explorations:
        return {"html": None, "png": None, "level": None, "note": "no finished run to draw"}
    first = explorations[0][1]
    level = default_level(first)
    head = f"Objectness maps of {image_name or first.source} ({first.img_size} px input)"
    figs = [objectness_grid(explorations, lv, f"{head}, level {first.levels[lv].name}")
            for lv in range(len(first.levels))]  # fmt: skip
    html = write_html(figs, out / "objectness.html", head)
    png = out / "objectness.png"
    note = write_pngs([figs[level]], [png])
    return {"html": html.name, "png": png.name if note is None else None, "level": level, "note": note}
