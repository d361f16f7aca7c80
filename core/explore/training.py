"""Objectness maps during training (``yolov7-studio train --objectness-every N``): watch the lead and aux heads
converge on one fixed validation image, as in the paper's objectness-map figure.

``ObjectnessHook(every)`` (registered by the trainer's caller: ``training_hooks(cfg)`` gives the hooks a config asks
for) picks the first validation image with boxes (dataset order, so the same image on resume),
and before training (epoch 0) and after every N-th and the last epoch runs :func:`core.explore.explore_image` on
the EMA model (the weights that are evaluated and saved). It writes into ``<run>/objectness/``::

    image.json            which image, its boxes and classes
    epoch_XXX.npz         maps and positives after XXX epochs (see ``write_snapshot``)
    epoch_XXX.png         lead row / aux row, one column per level (with ``plots="all"``)
    objectness.html       every snapshot so far, with a slider over epochs (rebuilt each time)

Files are replaced atomically, so a front end may read them while the run goes on. A failing snapshot is logged
and never stops the training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.explore.engine import ImageExploration, explore_image
from core.explore.style import HEAT_SCALE, IMAGE_DIM, box_colour, box_path, data_uri
from core.train.hooks import Hook
from core.train.rundir import atomic_write_text

__all__ = [
    "ObjectnessHook",
    "Snapshot",
    "convergence_figure",
    "load_snapshots",
    "snapshot_figure",
    "training_hooks",
    "write_snapshot",
]

SNAPSHOT_DIR = "objectness"
PANEL = 330  # pixels per map panel in the figures


@dataclass
class Snapshot:
    """One epoch's maps of the fixed image. ``lead[l]`` / ``aux[l]``: objectness ``[na, H, W]`` (``aux`` None
    without aux head); ``fine[l]`` / ``coarse[l]``: positives ``[n, 4]`` int rows ``(box, anchor, gj, gi)``;
    ``boxes_input`` ``[N, 4]`` input-pixel xyxy; ``image`` the ``[S, S, 3]`` RGB input."""

    epoch: int
    image: np.ndarray
    boxes_input: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    level_names: list[str]
    strides: list[int]
    lead: list[np.ndarray]
    aux: list[np.ndarray] | None
    fine: list[np.ndarray]
    coarse: list[np.ndarray] | None
    model: str = ""
    source: str = ""


def _positives(exp: ImageExploration, kind: str) -> list[np.ndarray] | None:
    if exp.view is None:
        return [np.zeros((0, 4), dtype=np.int64) for _ in exp.levels]
    if kind == "coarse" and exp.view.boxes and exp.view.boxes[0].coarse is None:
        return None
    sets = [(b.index, b.fine if kind == "fine" else b.coarse) for b in exp.view.boxes]
    out = []
    for lv in range(len(exp.levels)):
        rows = [(g, c.anchor, c.gj, c.gi) for g, s in sets if s is not None for c in s.levels[lv].positives]
        out.append(np.asarray(rows, dtype=np.int64).reshape(-1, 4))
    return out


def write_snapshot(exp: ImageExploration, path: str | Path, epoch: int) -> Path:
    """Save ``exp`` as an epoch snapshot ``.npz`` (maps, positives, and a ``meta`` JSON string), atomically."""
    extra: dict[str, np.ndarray] = {}
    for kind in ("fine", "coarse"):
        for lv, rows in enumerate(_positives(exp, kind) or []):
            extra[f"{kind}_pos_{lv}"] = rows
    meta = {"epoch": epoch, "model": exp.model_name, "source": exp.source, "class_names": exp.class_names,
            "level_names": [lv.name for lv in exp.levels], "strides": exp.strides, "has_aux": exp.has_aux,
            "has_coarse": exp.view is None or not exp.view.boxes or exp.view.boxes[0].coarse is not None}  # fmt: skip
    extra["meta"] = np.array(json.dumps(meta))
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    exp.save_npz(tmp, extra)
    os.replace(tmp, path)
    return path


def read_snapshot(path: str | Path) -> Snapshot:
    """Load one ``epoch_XXX.npz`` written by :func:`write_snapshot`."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        nl = len(meta["strides"])
        coarse = meta["has_coarse"]
        return Snapshot(
            epoch=int(meta["epoch"]), image=z["image"], boxes_input=z["boxes_input"], classes=z["classes"],
            class_names=meta["class_names"], level_names=meta["level_names"], strides=meta["strides"],
            lead=[z[f"lead_obj_{i}"] for i in range(nl)],
            aux=[z[f"aux_obj_{i}"] for i in range(nl)] if meta["has_aux"] else None,
            fine=[z[f"fine_pos_{i}"] for i in range(nl)],
            coarse=[z[f"coarse_pos_{i}"] for i in range(nl)] if coarse else None,
            model=meta["model"], source=meta["source"],
        )  # fmt: skip


def load_snapshots(folder: str | Path) -> list[Snapshot]:
    """Every snapshot in ``folder`` (a run directory or its ``objectness/`` folder), by epoch."""
    folder = Path(folder)
    if (folder / SNAPSHOT_DIR).is_dir():
        folder = folder / SNAPSHOT_DIR
    return sorted((read_snapshot(p) for p in folder.glob("epoch_*.npz")), key=lambda s: s.epoch)


# -- figures ---------------------------------------------------------------------------------------------------------
def _rows(snap: Snapshot) -> list[tuple[str, list[np.ndarray] | None, list[np.ndarray] | None]]:
    return [("LEAD head · fine positives", snap.lead, snap.fine), ("AUX head · coarse positives", snap.aux,
                                                                    snap.coarse)]  # fmt: skip


def _dynamic(snap: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    """The per-epoch traces, in a fixed order: per (row, level) a heatmap then a positives marker trace."""
    out: list[tuple[str, dict[str, Any]]] = []
    size = int(snap.image.shape[0])
    for r, (_, maps, pos) in enumerate(_rows(snap)):
        for lv, s in enumerate(snap.strides):
            z = maps[lv].max(0) if maps is not None else np.zeros(snap.lead[lv].shape[1:], dtype=np.float32)
            out.append(("heatmap", {"z": z, "x0": s / 2, "dx": s, "y0": s / 2, "dy": s, "zmin": 0.0, "zmax": 1.0,
                                    "meta": {"role": "map", "head": ("lead", "aux")[r], "level": lv}}))  # fmt: skip
            rows = pos[lv] if pos is not None else np.zeros((0, 4), dtype=np.int64)
            out.append(("cells", {
                "x": ((rows[:, 3] + 0.5) * s).tolist(), "y": ((rows[:, 2] + 0.5) * s).tolist(),
                "marker": {"color": [box_colour(int(b)) for b in rows[:, 0]], "size": max(3.0, 0.7 * PANEL * s / size),
                           "symbol": "square" if r == 0 else "square-open", "line": {"width": 2}},
                "meta": {"role": ("fine", "coarse")[r], "level": lv},
            }))  # fmt: skip
    return out


def _base(snap: Snapshot, title: str, panel: int = PANEL) -> go.Figure:
    nl = len(snap.strides)
    fig = make_subplots(rows=2, cols=nl, horizontal_spacing=0.015, vertical_spacing=0.07,
                        subplot_titles=[f"{name} · {lvl} (stride {s})" for name, _, _ in _rows(snap)
                                        for lvl, s in zip(snap.level_names, snap.strides)])  # fmt: skip
    grey = data_uri(snap.image, grey=True, dim=IMAGE_DIM)
    size = int(snap.image.shape[0])
    for r in range(2):
        for lv in range(nl):
            fig.add_trace(go.Image(source=grey, x0=0.5, y0=0.5, hoverinfo="skip"), row=r + 1, col=lv + 1)
            xs, ys = box_path(snap.boxes_input.tolist())
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "rgba(255,255,255,0.5)", "width": 1},
                                     hoverinfo="skip", showlegend=False), row=r + 1, col=lv + 1)  # fmt: skip
    for k, (kind, props) in enumerate(_dynamic(snap)):
        r, lv = divmod(k // 2, nl)
        if kind == "heatmap":
            tr: Any = go.Heatmap(colorscale=HEAT_SCALE, showscale=k == 0, zsmooth=False, hoverinfo="z",
                                 colorbar={"title": {"text": "objectness", "side": "right", "font": {"color": "white"}},
                                           "bgcolor": "#555", "tickfont": {"color": "white"}, "len": 0.8,
                                           "thickness": 14}, **props)  # fmt: skip
        else:
            tr = go.Scatter(mode="markers", showlegend=False, hoverinfo="skip", **props)
        fig.add_trace(tr, row=r + 1, col=lv + 1)
    if snap.aux is None:
        for lv in range(nl):
            fig.add_annotation(text="no auxiliary head", x=size / 2, y=size / 2, showarrow=False, row=2, col=lv + 1,
                               font={"color": "white"})  # fmt: skip
    fig.update_xaxes(range=[0, size], showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(range=[size, 0], showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    for i in range(2 * nl):
        fig.update_yaxes(scaleanchor=f"x{i + 1 if i else ''}", row=i // nl + 1, col=i % nl + 1)
    fig.update_layout(
        title={"text": title, "x": 0.01, "subtitle": {"text": (
            "objectness σ(obj), max over each level's anchors, colour range fixed 0..1 (bright = high); grey "
            "outlines: ground-truth boxes<br>filled squares: fine positives (lead labels) · open squares: coarse "
            "positives (aux labels) · coloured per box · both sets assigned from the lead predictions")}},
        width=panel * nl + 120, height=2 * panel + 200, margin={"l": 10, "r": 100, "t": 140, "b": 30},
        plot_bgcolor="#222",
    )  # fmt: skip
    return fig


def _title(snap: Snapshot) -> str:
    src = snap.source.rsplit("/", 1)[-1]
    return f"Objectness maps while training · {snap.model} · {src}"


def snapshot_figure(snap: Snapshot) -> go.Figure:
    """Static figure of one epoch: lead row and aux row, one column per level (the ``epoch_XXX.png``)."""
    return _base(snap, f"{_title(snap)} · after epoch {snap.epoch}")


def convergence_figure(source: str | Path | list[Snapshot]) -> go.Figure:
    """All snapshots (a run directory, its ``objectness/`` folder, or a list) with a slider over epochs."""
    snaps = load_snapshots(source) if not isinstance(source, list) else source
    if not snaps:
        raise ValueError(f"{source}: no objectness snapshots (train with --objectness-every N)")
    last = snaps[-1]
    fig = _base(last, _title(last))
    n_static = len(fig.data) - len(_dynamic(last))
    idx = list(range(n_static, len(fig.data)))
    frames = []
    for s in snaps:
        data = [go.Heatmap(**p) if k == "heatmap" else go.Scatter(**p) for k, p in _dynamic(s)]
        frames.append(go.Frame(data=data, traces=idx, name=str(s.epoch)))
    fig.frames = frames
    steps = [{"label": str(s.epoch), "method": "animate",
              "args": [[str(s.epoch)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                        "transition": {"duration": 0}}]} for s in snaps]  # fmt: skip
    fig.update_layout(
        sliders=[{"active": len(snaps) - 1, "steps": steps, "currentvalue": {"prefix": "after epoch "},
                  "pad": {"t": 10}, "x": 0.08, "len": 0.9}],
        updatemenus=[{"type": "buttons", "showactive": False, "x": 0.0, "y": 0, "xanchor": "left", "yanchor": "top",
                      "pad": {"t": 18}, "buttons": [{"label": "▶ play", "method": "animate", "args": [None, {
                          "frame": {"duration": 700, "redraw": True}, "fromcurrent": False,
                          "transition": {"duration": 0}}]}]}],
        height=fig.layout.height + 90, margin={"b": 90},
    )  # fmt: skip
    return fig


# -- the hooks --------------------------------------------------------------------------------------------------------
class ObjectnessHook(Hook):
    """Snapshot the objectness maps of a fixed validation image every ``every`` epochs (see the module docstring)."""

    objectness_maps = True  # the trainer notes a run with objectness_every > 0 that has no such hook

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"objectness snapshots need every >= 1 epochs, got {every}")
        self.every = every
        self.record: Any = None
        self.folder: Path | None = None

    def before_train(self) -> None:
        t = self.trainer
        if not t.is_main:
            return
        from core.train.setup import val_split

        records = t.dataset.split(val_split(t.cfg, t.dataset))
        self.record = next((r for r in records if r.num_boxes), records[0] if records else None)
        if self.record is None:
            t.log("objectness maps: no validation image; skipped")
            return
        self.folder = t.run.root / SNAPSHOT_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        r = self.record
        atomic_write_text(self.folder / "image.json", json.dumps({
            "image": str(r.path), "key": r.key, "split": r.split, "boxes": r.boxes.tolist(),
            "classes": r.classes.tolist(), "every": self.every, "img_size": t.cfg.img}, indent=1))  # fmt: skip
        if t.epoch == 0:
            self._snapshot(0)

    def after_epoch(self) -> None:
        t = self.trainer
        if t.is_main and self.folder is not None and (t.epoch % self.every == 0 or t.epoch >= t.cfg.epochs):
            self._snapshot(t.epoch)

    def _snapshot(self, epoch: int) -> None:
        t = self.trainer
        assert self.folder is not None
        model = t.ema.ema if t.ema is not None else t.model
        try:
            r = self.record
            exp = explore_image(model, r.path, r.boxes, r.classes, img_size=t.cfg.img, device=t.device)
            path = write_snapshot(exp, self.folder / f"epoch_{epoch:03d}.npz", epoch)
            if t.cfg.plots != "none":
                html = convergence_figure(self.folder).to_html(include_plotlyjs=True, full_html=True, auto_play=False)
                atomic_write_text(self.folder / "objectness.html", html)
            if t.cfg.plots == "all":
                from core.explore.export import write_pngs

                note = write_pngs([snapshot_figure(read_snapshot(path))], [path.with_suffix(".png")])
                if note:
                    t.log(f"objectness maps: {note}")
        except Exception as exc:  # noqa: BLE001 - an observer must never stop the training
            t.log(f"objectness maps after epoch {epoch} failed: {type(exc).__name__}: {exc}")


def training_hooks(cfg: Any) -> list[Hook]:
    """The hooks a training run's settings ask for, for every caller of ``core.train.Trainer`` to register the same
    way (the CLI, the demo, the studies): ``ObjectnessHook(cfg.objectness_every)`` when ``objectness_every > 0``.

    >>> Trainer(cfg, hooks=training_hooks(cfg)).fit()
    """
    every = int(getattr(cfg, "objectness_every", 0) or 0)
    return [ObjectnessHook(every)] if every > 0 else []
