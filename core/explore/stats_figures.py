"""Plotly figures of :class:`~core.explore.stats.AssignmentStats`: by class (left) and by box size at the network
input (right), the fine (lead, blue) and coarse (aux, orange) label sets side by side.

* ``positives_per_box``: mean number of positives per box;
* ``boxes_without_positive``: share of boxes that got no positive at all;
* ``positives_per_level``: how each group's positives split over the levels (stacked to 100 %).
"""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.explore.stats import AssignmentStats, GroupStats
from core.explore.style import COARSE_COLOUR, FINE_COLOUR, LEVEL_COLOURS

__all__ = ["STATS_FIGURES", "positives_per_box_figure", "boxes_without_positive_figure",
           "positives_per_level_figure"]  # fmt: skip

_SUBTITLES = ("by class", "by box area at the network input (small < 32², medium < 96², large ≥ 96² px)")
_LEGEND = {"orientation": "h", "y": -0.16, "x": 0.5, "xanchor": "center", "yanchor": "top", "font": {"size": 13}}


def _label(g: GroupStats) -> str:
    return f"{g.name}<br>({g.boxes} boxes)"


def _subtitle(stats: AssignmentStats) -> str:
    return (f"{stats.model} · split '{stats.split}' · {stats.images} images, {stats.boxes} boxes · input "
            f"{stats.img_size}×{stats.img_size} · top-k {stats.topk} · both sets assigned from the lead "
            "head's predictions, no augmentation")  # fmt: skip


def _sets(stats: AssignmentStats) -> list[tuple[str, str, str]]:
    out = [("fine", "fine (lead head's labels)", FINE_COLOUR)]
    if stats.coarse:
        out.append(("coarse", "coarse (aux head's labels)", COARSE_COLOUR))
    return out


def _bars(stats: AssignmentStats, value: Callable[[GroupStats, str], float | None], title: str, y_title: str,
          fmt: str) -> go.Figure:  # fmt: skip
    fig = make_subplots(rows=1, cols=2, subplot_titles=_SUBTITLES, column_widths=[0.55, 0.45],
                        horizontal_spacing=0.08)  # fmt: skip
    for col, groups in ((1, stats.by_class), (2, stats.by_size)):
        for kind, name, colour in _sets(stats):
            ys = [value(g, kind) for g in groups]
            fig.add_bar(
                x=[_label(g) for g in groups], y=ys, name=name, marker_color=colour, showlegend=col == 1,
                legendgroup=kind, text=[fmt.format(v) if v is not None else "no boxes" for v in ys],
                textposition="outside", cliponaxis=False, row=1, col=col,
            )  # fmt: skip
    top = max([v for g in stats.by_class + stats.by_size for k, _, _ in _sets(stats) if (v := value(g, k))] or [0])
    fig.update_yaxes(title_text=y_title, range=[0, max(top * 1.15, 1.0)])
    fig.update_layout(
        barmode="group", title={"text": title, "subtitle": {"text": _subtitle(stats)}, "x": 0.01},
        width=1200, height=560, margin={"t": 110, "b": 120}, legend=_LEGEND,
    )  # fmt: skip
    return fig


def positives_per_box_figure(stats: AssignmentStats) -> go.Figure:
    """Mean positives per box, fine vs coarse, by class and by size."""

    def value(g: GroupStats, kind: str) -> float | None:
        return g.fine_mean if kind == "fine" else g.coarse_mean

    return _bars(stats, value, "Positives per ground-truth box (mean): fine vs coarse label sets",
                 "mean positives per box", "{:.2f}")  # fmt: skip


def boxes_without_positive_figure(stats: AssignmentStats) -> go.Figure:
    """Share of boxes with no positive at all (in %), fine vs coarse, by class and by size."""

    def value(g: GroupStats, kind: str) -> float | None:
        v = g.fine_none_share if kind == "fine" else g.coarse_none_share
        return None if v is None else 100 * v

    fig = _bars(stats, value, "Boxes that got no positive cell at all (never trained on as an object)",
                "% of boxes without a positive", "{:.1f} %")  # fmt: skip
    return fig


def positives_per_level_figure(stats: AssignmentStats) -> go.Figure:
    """Where the positives go: share of each group's positives on each level, stacked to 100 %."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=_SUBTITLES, horizontal_spacing=0.14)
    for col, groups in ((1, stats.by_class), (2, stats.by_size)):
        rows = [(g, kind) for g in groups for kind, _, _ in _sets(stats)]
        labels = [[f"{g.name} ({g.boxes})" for g, _ in rows], [kind for _, kind in rows]]  # two-level axis
        for lv, name in enumerate(stats.level_names):
            xs = []
            for g, kind in rows:
                share = g.fine_level_share if kind == "fine" else g.coarse_level_share
                xs.append(100 * share[lv] if share else 0.0)
            fig.add_bar(
                y=labels, x=xs, orientation="h", name=f"{name} (stride {stats.strides[lv]})",
                marker_color=LEVEL_COLOURS[lv % len(LEVEL_COLOURS)], showlegend=col == 1, legendgroup=name,
                text=[f"{x:.0f}%" if x >= 6 else "" for x in xs], textposition="inside", insidetextanchor="middle",
                row=1, col=col,
            )  # fmt: skip
    fig.update_xaxes(title_text="% of the group's positives", range=[0, 100])
    fig.update_yaxes(autorange="reversed")
    n = max(len(stats.by_class), len(stats.by_size)) * len(_sets(stats))
    fig.update_layout(
        barmode="stack", title={"text": "Which level the positives are on (group (boxes) · label set)",
                                "subtitle": {"text": _subtitle(stats)}, "x": 0.01},
        width=1200, height=max(460, 230 + 30 * n), margin={"t": 110, "b": 110, "l": 20}, legend=_LEGEND,
    )  # fmt: skip
    return fig


STATS_FIGURES: dict[str, Callable[[AssignmentStats], go.Figure]] = {
    "positives_per_box": positives_per_box_figure,
    "boxes_without_positive": boxes_without_positive_figure,
    "positives_per_level": positives_per_level_figure,
}
