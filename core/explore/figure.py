"""Plotly figures of one :class:`~core.explore.engine.ImageExploration`: what the lead and aux heads see, and which
cells each ground-truth box gets as fine (lead) and coarse (aux) positives.

Three panels side by side, all in input pixels: (1) the network input with the ground-truth boxes; (2) the LEAD
head's map with the FINE positives drawn as filled cells; (3) the AUX head's map with the COARSE positives drawn
as outlines. Cells take the colour of the box they were assigned to; hovering a cell shows the box, IoU,
cost, dynamic k, which box proposed it and whether it was among the box's k cheapest. Every number drawn comes
from ``exp.view`` (:func:`core.assign.explain_assignment`) and every heatmap is the engine's map array as is.

* :func:`exploration_figure`: interactive; one dropdown picks the level and anchor (or the max over anchors), a
  second the map (objectness, or objectness x class probability of a box's class).
* :func:`level_figure`: static, one level, max over its anchors, objectness: the PNG panels.

Every trace carries ``meta`` = ``{"role": ..., "level": l, "anchor": a (-1 = all), ...}`` so that tests and
front ends can find what is drawn; cell markers carry ``customdata`` rows
``[box, level, anchor, gj, gi, iou, cost, dynamic_k, proposed_by, selected]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.explore.engine import ImageExploration
from core.explore.style import IMAGE_DIM, box_colour, box_path, data_uri, heatmap_trace, image_trace, rect_path, rgba

__all__ = ["exploration_figure", "level_figure", "default_level", "view_cells"]

ZMAX_FLOOR = 0.05  # shared colour range never below this, so near-zero maps (untrained heads) stay dark
_SETS = (
    ("fine", "lead", "fine positive (lead head's labels)"),
    ("coarse", "aux", "coarse positive (aux head's labels)"),
)


def default_level(exp: ImageExploration) -> int:
    """The level with the most positives (fine + coarse); without boxes the one with the highest objectness."""
    if exp.view is None or not exp.view.boxes:
        return int(np.argmax([lv.lead_obj.max() for lv in exp.levels]))
    counts = np.zeros(len(exp.levels))
    for b in exp.view.boxes:
        for s in (b.fine, b.coarse):
            if s is not None:
                counts += [len(lv.positives) for lv in s.levels]
    return int(np.argmax(counts))


def view_cells(exp: ImageExploration, kind: str, level: int, anchor: int, what: str = "positives") -> list[Any]:
    """``(box index, CellView)`` pairs of one label set (``fine``/``coarse``) on a level; ``anchor`` -1 = all.

    ``what``: ``positives`` (cells a box received) or ``candidates`` (cells a box proposed)."""
    out: list[Any] = []
    if exp.view is None:
        return out
    for b in exp.view.boxes:
        s = b.fine if kind == "fine" else b.coarse
        if s is None:
            continue
        for c in getattr(s.levels[level], what):
            if anchor < 0 or c.anchor == anchor:
                out.append((b.index, c))
    return out


def _map(exp: ImageExploration, head: str, level: int, anchor: int, kind: int | None) -> np.ndarray | None:
    """``[H, W]`` map of one head: objectness (``kind`` None) or obj x P(class ``kind``); anchor -1 = max."""
    lv = exp.levels[level]
    if kind is None:
        m = lv.lead_obj if head == "lead" else lv.aux_obj
    else:
        src = lv.lead_cls if head == "lead" else lv.aux_cls
        m = None if src is None else src[kind]
    if m is None:
        return None
    return m.max(0) if anchor < 0 else m[anchor]


def _map_label(exp: ImageExploration, kind: int | None) -> str:
    return "objectness" if kind is None else f"obj × P({exp.class_name(kind)})"


def _anchor_label(exp: ImageExploration, level: int, anchor: int) -> str:
    lv = exp.levels[level]
    if anchor < 0:
        return f"max over {len(lv.anchors_px)} anchors"
    w, h = lv.anchors_px[anchor]
    return f"anchor {anchor} ({w:.0f}×{h:.0f} px)"


def _box_name(exp: ImageExploration, g: int, level: int | None) -> str:
    """Legend name of box ``g``: class, and per label set its positives (on ``level`` of all, or all) and k."""
    name = f"box {g} {exp.class_name(int(exp.classes[g]))}"
    if exp.view is None:
        return name
    b = exp.view.boxes[g]
    parts = []
    for kind, s in (("fine", b.fine), ("coarse", b.coarse)):
        if s is None:
            continue
        here = f"{len(s.levels[level].positives)} of " if level is not None else ""
        parts.append(f"{kind} {here}{s.n_positives} (k={s.dynamic_k})" if s.n_positives else f"NO {kind}")
    return name + " · " + " · ".join(parts)


def _legend_title(exp: ImageExploration, level: int | None) -> str:
    if exp.view is None:
        return "no ground-truth boxes: maps only"
    what = f"positives on {exp.levels[level].name} of all levels" if level is not None else "positives (all levels)"
    return (
        f"<b>box</b> · fine / coarse: {what} (k = dynamic k) · a dotted box has no fine positive; "
        "hover a cell for IoU and cost<br>"
        "<i>fine</i> = the cells that teach the lead head (the box's centre cell and 2 neighbours); <i>coarse</i> = "
        "a wider set (centre and 4 neighbours) that teaches the auxiliary head · <i>dynamic k</i> = how many cells a "
        "box keeps:<br>the sum of its best IoUs with the predictions (at least 1), so a box the model already "
        "predicts well gets more; the k cells of lowest cost (class + IoU) win"
    )


def _cell_traces(exp: ImageExploration, level: int, anchor: int, kind: str) -> list[go.Scatter]:
    """Positive cells of one set on (level, anchor): per box an outline/fill trace, plus one hover-marker trace."""
    stride = exp.levels[level].stride
    pairs = view_cells(exp, kind, level, anchor)
    traces: list[go.Scatter] = []
    fine = kind == "fine"
    for g in sorted({g for g, _ in pairs}):
        cells = [(c.gj, c.gi) for gg, c in pairs if gg == g]
        xs, ys = rect_path(cells, stride, inset=0.0 if fine else stride * 0.1)
        col = box_colour(g)
        traces.append(go.Scatter(
            x=xs, y=ys, mode="lines", fill="toself" if fine else "none",
            fillcolor=rgba(col, 0.5) if fine else None, line={"color": col, "width": 1 if fine else 2.5},
            hoverinfo="skip", legendgroup=f"box{g}", showlegend=False, name=f"box {g} {kind}",
            meta={"role": f"{kind}_cells", "box": g, "level": level, "anchor": anchor, "stride": stride},
        ))  # fmt: skip
    if pairs:
        k_of = {b.index: (b.fine if fine else b.coarse).dynamic_k for b in exp.view.boxes}  # type: ignore[union-attr]
        data = [[g, level, c.anchor, c.gj, c.gi, c.iou, c.cost, k_of[g], c.proposed_by, int(c.selected)]
                for g, c in pairs]  # fmt: skip
        names = [exp.class_name(int(exp.classes[g])) for g, _ in pairs]
        text = [f"box {d[0]} · {n}" for d, n in zip(data, names)]
        set_text = _SETS[0][2] if fine else _SETS[1][2]
        traces.append(go.Scatter(
            x=[(c.gi + 0.5) * stride for _, c in pairs], y=[(c.gj + 0.5) * stride for _, c in pairs],
            mode="markers", marker={"size": 10, "opacity": 0.01, "color": [box_colour(g) for g, _ in pairs]},
            customdata=data, text=text, showlegend=False, name=f"{kind} positives",
            hovertemplate="%{text}<br>" + set_text + "<br>anchor %{customdata[2]}, cell row %{customdata[3]}, col "
            "%{customdata[4]}<br>IoU %{customdata[5]:.3f} · cost %{customdata[6]:.3f}<br>dynamic k = "
            "%{customdata[7]} · proposed by box %{customdata[8]} · among its k cheapest: %{customdata[9]}"
            "<extra></extra>",
            meta={"role": f"{kind}_hover", "level": level, "anchor": anchor, "stride": stride},
        ))  # fmt: skip
    return traces


def _candidate_trace(exp: ImageExploration, level: int, anchor: int, kind: str) -> go.Scatter | None:
    pairs = view_cells(exp, kind, level, anchor, "candidates")
    if not pairs:
        return None
    stride = exp.levels[level].stride
    off = -0.25 if kind == "fine" else 0.25  # lead and aux panels draw their own set; keep the markers apart anyway
    return go.Scatter(
        x=[(c.gi + 0.5 + off) * stride for _, c in pairs], y=[(c.gj + 0.5) * stride for _, c in pairs],
        mode="markers", marker={"symbol": "x-thin", "size": 7, "line": {"width": 2,
                                                                         "color": [box_colour(g) for g, _ in pairs]}},
        customdata=[[g, level, c.anchor, c.gj, c.gi, c.iou, c.cost, int(c.selected), int(c.positive)]
                    for g, c in pairs],
        name=f"{kind} candidates (× = cells proposed by a box)", legendgroup=f"cand_{kind}",
        hovertemplate="candidate of box %{customdata[0]}<br>anchor %{customdata[2]}, cell row %{customdata[3]}, col "
        "%{customdata[4]}<br>IoU %{customdata[5]:.3f} · cost %{customdata[6]:.3f}<br>selected %{customdata[7]} · "
        "positive %{customdata[8]}<extra></extra>",
        meta={"role": f"{kind}_candidates", "level": level, "anchor": anchor, "stride": stride},
    )  # fmt: skip


class _Builder:
    """Adds traces to a 1x3 subplot figure and remembers, per trace, the view it belongs to (None = always)."""

    def __init__(self, exp: ImageExploration, title: str, width: int) -> None:
        self.exp = exp
        aux_title = "AUX head" if exp.has_aux else "no AUX head in this model (no aux map)"
        titles = (
            "input image and ground-truth boxes",
            "LEAD head · fine positives (filled)",
            f"{aux_title} · coarse positives (outlined)",
        )
        self.fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.02)
        self.keys: list[Any] = []
        self.width = width
        self.title = title
        self.top = 90
        self.legend_level: int | None = None

    def add(self, trace: Any, col: int, key: Any = None) -> None:
        self.fig.add_trace(trace, row=1, col=col)
        self.keys.append(key)

    def add_static(self, legend_level: int | None) -> None:
        exp, s = self.exp, self.exp.img_size
        self.legend_level = legend_level
        self.add(image_trace(data_uri(exp.image), (s, s)), 1)
        grey = data_uri(exp.image, grey=True, dim=IMAGE_DIM)
        for col in (2, 3):
            self.add(image_trace(grey, (s, s)), col)
        for g in range(exp.num_boxes):
            xs, ys = box_path([exp.boxes_input[g]])
            unmatched = exp.view is not None and g in exp.view.unmatched_fine
            for col in (1, 2, 3):
                self.add(go.Scatter(
                    x=xs, y=ys, mode="lines", line={"color": box_colour(g), "width": 2.5 if col == 1 else 1.5,
                                                    "dash": "dot" if unmatched else "solid"},
                    name=_box_name(exp, g, legend_level), legendgroup=f"box{g}", showlegend=col == 1,
                    hoverinfo="skip", meta={"role": "box", "box": g, "panel": col},
                ), col)  # fmt: skip
            x1, y1 = exp.boxes_input[g][:2]
            self.add(go.Scatter(
                x=[x1], y=[y1], mode="text", text=[f"<b>{g}</b>"], textposition="top right",
                textfont={"color": box_colour(g), "size": 13}, showlegend=False, legendgroup=f"box{g}",
                hoverinfo="skip", meta={"role": "box_label", "box": g},
            ), 1)  # fmt: skip
        # legend keys explaining the cell styles
        self.add(go.Scatter(x=[None], y=[None], mode="lines", fill="toself", fillcolor="rgba(200,200,200,0.6)",
                            line={"color": "#888", "width": 1.5}, name="filled cell = FINE positive (lead labels)",
                            meta={"role": "legend_key"}), 2)  # fmt: skip
        self.add(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"color": "#888", "width": 3},
                name="outlined cell = COARSE positive (aux labels)",
                meta={"role": "legend_key"},
            ),
            3,
        )

    def add_view(self, level: int, anchor: int, kinds: list[int | None], zmax_mode: str,
                 candidates: bool = True) -> None:  # fmt: skip
        exp = self.exp
        stride = exp.levels[level].stride
        for kind in kinds:
            lead, aux = _map(exp, "lead", level, anchor, kind), _map(exp, "aux", level, anchor, kind)
            assert lead is not None  # the lead head always exists
            zmax = (
                1.0
                if zmax_mode == "fixed"
                else max(ZMAX_FLOOR, float(lead.max()), float(aux.max()) if aux is not None else 0.0)
            )
            label = _map_label(exp, kind)
            key = ("map", level, anchor, kind)
            for head, z, col in (("lead", lead, 2), ("aux", aux, 3)):
                if z is None:
                    continue
                show_bar = head == "aux" or aux is None
                tr = heatmap_trace(
                    z,
                    stride,
                    zmax,
                    name=f"{head} {label}",
                    hover_label=label,
                    colorbar_title=f"{label}<br>(both heads)" if show_bar else None,
                    colorbar_x=1.01,
                )
                tr.meta = {"role": f"{head}_map", "level": level, "anchor": anchor, "class": kind}
                self.add(tr, col, key)
        for kind_set, col in (("fine", 2), ("coarse", 3)):
            for tr in _cell_traces(exp, level, anchor, kind_set):
                self.add(tr, col, ("cells", level, anchor))
            cand = _candidate_trace(exp, level, anchor, kind_set) if candidates else None
            if cand is not None:
                self.add(cand, col, ("cand", level, anchor))

    def visibility(self, level: int, anchor: int, kind: int | None) -> list[Any]:
        vis: list[Any] = []
        for key in self.keys:
            if key is None:
                vis.append(True)
            elif key[0] == "map":
                vis.append(key[1:] == (level, anchor, kind))
            elif key[0] == "cells":
                vis.append(key[1:] == (level, anchor))
            else:
                vis.append("legendonly" if key[1:] == (level, anchor) else False)
        return vis

    def view_title(self, level: int, anchor: int, kind: int | None) -> str:
        lv = self.exp.levels[level]
        return (f"level {lv.name} (stride {lv.stride}, {lv.grid[1]}×{lv.grid[0]} cells) · "
                f"{_anchor_label(self.exp, level, anchor)} · map: {_map_label(self.exp, kind)} (bright = high) · "
                "cells coloured by the box they are assigned to · both label sets come from the lead head's "
                "predictions")  # fmt: skip

    def finish(self, level: int, anchor: int, kind: int | None) -> go.Figure:
        fig, s = self.fig, self.exp.img_size
        for i, v in enumerate(self.visibility(level, anchor, kind)):
            fig.data[i].visible = v
        stride = self.exp.levels[level].stride
        fig.update_xaxes(range=[0, s], constrain="domain", showgrid=True, dtick=stride, gridcolor="rgba(255,255,255,"
                         "0.15)", layer="above traces", showticklabels=False, zeroline=False)  # fmt: skip
        fig.update_yaxes(
            range=[s, 0],
            scaleanchor="x",
            constrain="domain",
            showgrid=True,
            dtick=stride,
            gridcolor="rgba(255,255,255,0.15)",
            layer="above traces",
            showticklabels=False,
            zeroline=False,
        )
        for c in (2, 3):
            fig.update_yaxes(scaleanchor=f"x{c}", row=1, col=c)
        fig.update_xaxes(showgrid=False, row=1, col=1)
        fig.update_yaxes(showgrid=False, row=1, col=1)
        # three square panels across the width; the legend (one entry per box) below them
        panel = (self.width - 130) / 3
        rows = -(-(self.exp.num_boxes + 2) // 3) + 1
        top, bottom = self.top, 24 + 29 * rows + (40 if self.exp.view is not None else 0)  # 2 lines of explanation
        fig.update_layout(
            title={"text": self.title, "subtitle": {"text": self.view_title(level, anchor, kind), "font": {"size": 12}},
                   "x": 0.01, "xanchor": "left", "y": 1.0, "yanchor": "top", "pad": {"t": 10}, "font": {"size": 17}},
            width=self.width, height=int(panel + top + bottom), margin={"l": 10, "r": 120, "t": top, "b": bottom},
            plot_bgcolor="#222", hoverlabel={"align": "left"},
            legend={"orientation": "h", "x": 0.0, "y": -0.01, "yanchor": "top", "font": {"size": 11},
                    "itemsizing": "constant", "entrywidth": int(self.width - 140) // 3 - 50, "entrywidthmode": "pixels",
                    "title": {"text": _legend_title(self.exp, self.legend_level), "side": "top"}},
        )  # fmt: skip
        return fig


def _title(exp: ImageExploration) -> str:
    src = exp.source.rsplit("/", 1)[-1] if exp.source else "image"
    return f"YOLOv7 label assignment · {exp.model_name} · {src} · input {exp.img_size}×{exp.img_size}"


def exploration_figure(exp: ImageExploration, *, level: int | None = None, zmax: str = "shared",
                       classes: Sequence[int] | None = None, width: int = 1500) -> go.Figure:  # fmt: skip
    """The interactive figure (see the module docstring).

    ``level``: the level shown first (default: the one with most positives). ``zmax``: ``shared`` = the colour range
    of each view is 0..max of its lead and aux maps (at least ``ZMAX_FLOOR``), so the two heads are compared on one
    scale; ``fixed`` = 0..1. ``classes``: the obj x class maps offered in the map dropdown (default: every class
    the engine computed, i.e. the boxes' classes); each adds ``2 x levels x (anchors + 1)`` heatmaps to the HTML.
    """
    b = _Builder(exp, _title(exp), width)
    b.top = 140  # room for the two dropdowns
    b.add_static(None)
    available = sorted(exp.levels[0].lead_cls)
    chosen = available if classes is None else [c for c in available if c in set(classes)]
    kinds: list[int | None] = [None, *chosen]
    for lv in exp.levels:
        for a in [-1, *range(len(lv.anchors_px))]:
            b.add_view(lv.level, a, kinds, zmax)
    start = default_level(exp) if level is None else level
    fig = b.finish(start, -1, None)

    def kind_buttons(lvl: int, a: int) -> list[dict[str, Any]]:
        return [{"label": _map_label(exp, k), "method": "update",
                 "args": [{"visible": b.visibility(lvl, a, k)}, {"title.subtitle.text": b.view_title(lvl, a, k)}]}
                for k in kinds]  # fmt: skip

    view_buttons: list[dict[str, Any]] = []
    for lv in exp.levels:
        for a in [-1, *range(len(lv.anchors_px))]:
            layout = {"title.subtitle.text": b.view_title(lv.level, a, None), "updatemenus[1].active": 0,
                      "updatemenus[1].buttons": kind_buttons(lv.level, a), **_grid(lv.stride)}  # fmt: skip
            label = f"{lv.name} (stride {lv.stride}) · {_anchor_label(exp, lv.level, a)}"
            view_buttons.append({"label": label, "method": "update",
                                 "args": [{"visible": b.visibility(lv.level, a, None)}, layout]})  # fmt: skip
    active = [i for i, btn in enumerate(view_buttons) if btn["args"][0]["visible"] == b.visibility(start, -1, None)]
    y = 1 + 36 / ((width - 130) / 3)  # just above the subplot titles
    fig.update_layout(updatemenus=[
        {"buttons": view_buttons, "active": active[0] if active else 0, "x": 0.04, "y": y, "xanchor": "left",
         "yanchor": "bottom", "direction": "down", "showactive": True},
        {"buttons": kind_buttons(start, -1), "active": 0, "x": 0.38, "y": y, "xanchor": "left",
         "yanchor": "bottom", "direction": "down", "showactive": True},
    ])  # fmt: skip
    for x, text in ((0.0, "view:"), (0.34, "map:")):
        fig.add_annotation(text=f"<b>{text}</b>", x=x, y=y, xref="paper", yref="paper", xanchor="left",
                           yanchor="bottom", showarrow=False, yshift=6)  # fmt: skip
    return fig


def _grid(stride: int) -> dict[str, Any]:
    """Layout changes that put the cell grid of ``stride`` on the two map panels."""
    return {f"{ax}{c}.dtick": stride for ax in ("xaxis", "yaxis") for c in (2, 3)}


def level_figure(exp: ImageExploration, level: int, *, zmax: str = "shared", width: int = 1500) -> go.Figure:
    """Static figure of one level: max objectness over the level's anchors, all its positives (the PNG panel)."""
    b = _Builder(exp, _title(exp), width)
    b.add_static(level)
    b.add_view(level, -1, [None], zmax, candidates=False)
    return b.finish(level, -1, None)
