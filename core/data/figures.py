"""Plotly figures of a dataset check: class counts, boxes per image, box sizes against anchors, image sizes.

``save_figures`` writes one self-contained ``dataset_report.html`` (all figures, plotly.js inlined once, works
offline) and one PNG per figure through kaleido, which needs a Chrome/Chromium: :func:`write_pngs` hands kaleido
the browser :func:`ensure_browser_path` finds (``BROWSER_PATH`` if set, else a system Chromium/Chrome) as an
argument; nothing process-wide (such as ``os.environ``) is changed, so concurrent exports do not interfere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.data.stats import DatasetStats

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def ensure_browser_path() -> str | None:
    """The Chrome/Chromium for PNG export: ``BROWSER_PATH`` if set, else the first of ``chromium``, ``google-chrome``
    ... on ``PATH``; ``None`` if there is none. Reads the environment, never writes it."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_pngs(
    figs: Sequence[go.Figure], paths: Sequence[Path], widths: Sequence[int], heights: Sequence[int]
) -> str | None:
    """Write each figure as a PNG of the given size through kaleido with the browser of
    :func:`ensure_browser_path` passed as an argument (no environment change). Returns ``None``, or why no PNG
    was written (no browser, export error); never raises for a broken browser."""
    browser = ensure_browser_path()
    if browser is None:
        return "PNG export skipped: no Chrome/Chromium found (install chromium or set BROWSER_PATH)"
    try:
        import kaleido
        import plotly.io as pio

        specs = [
            {
                "fig": fig.to_dict(),
                "path": Path(path),
                "opts": {"format": "png", "width": int(w), "height": int(h), "scale": 1},
                "topojson": pio.defaults.topojson,
            }
            for fig, path, w, h in zip(figs, paths, widths, heights)
        ]
        kopts: dict[str, Any] = {"path": browser}
        for key in ("plotlyjs", "mathjax"):
            if getattr(pio.defaults, key, None):
                kopts[key] = getattr(pio.defaults, key)
        kaleido.write_fig_from_object_sync(specs, kopts=kopts)
    except Exception as exc:  # noqa: BLE001 - a broken browser must not break the caller
        return f"PNG export failed: {exc}"
    return None


def class_counts_figure(stats: DatasetStats) -> go.Figure:
    """Stacked bars: boxes per class, one colour per split."""
    fig = go.Figure()
    for split, counts in stats.boxes_per_class_split.items():
        fig.add_bar(name=split or "unsplit", x=list(counts), y=list(counts.values()))
    fig.update_layout(barmode="stack", title="Boxes per class", xaxis_title="class", yaxis_title="boxes")
    return fig


def boxes_per_image_figure(stats: DatasetStats) -> go.Figure:
    """Histogram of the number of boxes per image."""
    counts = np.bincount(stats.boxes_per_image) if stats.num_images else np.zeros(1, dtype=int)
    fig = go.Figure(go.Bar(x=list(range(len(counts))), y=counts.tolist(), marker_color=_PALETTE[0]))
    fig.update_layout(title="Boxes per image", xaxis_title="boxes in the image", yaxis_title="images")
    return fig


def _short(models: tuple[str, ...]) -> str:
    """``yolov7-w6 / e6 / d6``: the common prefix written once."""
    first, rest = models[0], [m.replace("yolov7-", "").replace("yolov7", "") or m for m in models[1:]]
    return " / ".join([first, *rest])


def box_sizes_figure(stats: DatasetStats) -> go.Figure:
    """Box (w, h) at each model group's training size (log-log), with that group's anchors coloured by level."""
    fits = stats.anchor_fits
    fig = make_subplots(
        rows=1,
        cols=max(len(fits), 1),
        subplot_titles=[f"{_short(f.models)} @ {f.train_size}<br>BPR {f.bpr:.3f}" for f in fits] or ["boxes"],
        shared_yaxes=True,
    )
    rng = np.random.default_rng(0)
    idx = np.arange(stats.num_boxes)
    if len(idx) > 5000:  # keep the figure light; the sample is seeded so the PNG is reproducible
        idx = np.sort(rng.choice(idx, 5000, replace=False))
    shown: set[str] = set()
    for col, fit in enumerate(fits or [None], start=1):
        size = fit.train_size if fit else 640
        wh = stats.box_wh[idx] * (size / stats.box_long_side[idx])[:, None] if len(idx) else np.zeros((0, 2))
        cls = stats.box_classes[idx]
        for c, name in enumerate(stats.class_names):
            m = cls == c
            fig.add_scatter(
                x=wh[m, 0],
                y=wh[m, 1],
                mode="markers",
                marker={"size": 4, "opacity": 0.5, "color": _PALETTE[c % len(_PALETTE)]},
                name=name,
                legendgroup=name,
                showlegend=col == 1,
                row=1,
                col=col,
            )
        if fit is None:
            continue
        for lvl, (stride, level) in enumerate(zip(fit.strides, fit.anchors)):
            a = np.asarray(level)
            fig.add_scatter(
                x=a[:, 0],
                y=a[:, 1],
                mode="markers",
                marker={"symbol": "x", "size": 11, "color": "black", "line": {"width": 1}},
                marker_opacity=0.4 + 0.6 * lvl / max(len(fit.strides) - 1, 1),
                name=f"anchors P{lvl + 3} (stride {stride})",
                legendgroup=f"anchors{lvl}",
                showlegend=f"anchors{lvl}" not in shown,
                row=1,
                col=col,
            )
            shown.add(f"anchors{lvl}")
        fig.update_xaxes(type="log", title_text="box width (px)", row=1, col=col)
    fig.update_yaxes(type="log", title_text="box height (px)", row=1, col=1)
    fig.update_layout(title="Box sizes at each model's training size, with its anchors (x)")
    return fig


def image_sizes_figure(stats: DatasetStats) -> go.Figure:
    """Bubble chart of image sizes (width x height), bubble area ~ number of images."""
    sizes = [tuple(int(v) for v in s.split("x")) for s in stats.image_sizes]
    counts = list(stats.image_sizes.values())
    top = max(counts, default=1)
    fig = go.Figure(
        go.Scatter(
            x=[s[0] for s in sizes],
            y=[s[1] for s in sizes],
            mode="markers+text",
            text=[f"{w}x{h}: {n} images" for (w, h), n in zip(sizes, counts)],
            textposition="top center",
            marker={"size": [8 + 30 * np.sqrt(n / top) for n in counts], "color": _PALETTE[2]},
        )
    )
    fig.update_layout(title="Image sizes", xaxis_title="width (px)", yaxis_title="height (px)")
    max_w = max((w for w, _ in sizes), default=1)
    max_h = max((h for _, h in sizes), default=1)
    fig.update_xaxes(range=[0, max_w * 1.25])  # room for the labels
    fig.update_yaxes(range=[0, max_h * 1.2])
    return fig


def anchor_levels_figure(stats: DatasetStats) -> go.Figure:
    """Per model group: share of boxes whose best anchor is on each level (P3 .. P6)."""
    fig = go.Figure()
    max_levels = max((len(f.strides) for f in stats.anchor_fits), default=0)
    labels = [f"{_short(f.models)} @ {f.train_size}" for f in stats.anchor_fits]
    for lvl in range(max_levels):
        shares = [
            (f.best_level[lvl] / max(stats.num_boxes, 1)) if lvl < len(f.best_level) else 0 for f in stats.anchor_fits
        ]
        fig.add_bar(name=f"P{lvl + 3}", x=labels, y=shares, marker_color=_PALETTE[lvl])
    fig.update_layout(
        barmode="stack",
        title="Which level's anchors fit each box best",
        yaxis_title="share of boxes",
        yaxis_range=[0, 1],
    )
    return fig


FIGURES = {
    "class_counts": class_counts_figure,
    "boxes_per_image": boxes_per_image_figure,
    "box_sizes": box_sizes_figure,
    "anchor_levels": anchor_levels_figure,
    "image_sizes": image_sizes_figure,
}


def save_figures(stats: DatasetStats, out_dir: Path, png: bool = True) -> tuple[list[Path], str | None]:
    """Write ``dataset_report.html`` and one PNG per figure into ``out_dir``.

    Returns:
        (paths written, note): the note says why PNGs are missing (no Chrome/Chromium, export error), else None.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = {name: make(stats) for name, make in FIGURES.items()}
    html = out_dir / "dataset_report.html"
    parts = []
    for k, fig in enumerate(figs.values()):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(k == 0)))
    html.write_text(
        "<html><head><meta charset='utf-8'><title>Dataset report</title></head><body>"
        + "".join(parts)
        + "</body></html>"
    )
    written = [html]
    if not png:
        return written, None
    paths = [out_dir / f"{name}.png" for name in figs]
    widths = [1400 if name == "box_sizes" else 800 for name in figs]
    note = write_pngs(list(figs.values()), paths, widths, [520] * len(paths))
    return (written, note) if note else (written + paths, None)
