"""Plotly figures of a run: losses and mAP per epoch (from results.csv), PR curves and confusion matrix (from
the last evaluation). Saved as standalone HTML and, through kaleido, PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.train.hooks import Hook

LOSSES = ("box", "obj", "cls", "aux_box", "aux_obj", "aux_cls")


def _col(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r.get(key, math.nan)) if r.get(key) not in ("", None) else math.nan for r in rows]


def _explained(title: str, line: str) -> dict[str, Any]:
    """A figure title with a one-line explanation under it, for a reader who has not read the paper."""
    return {"text": f"{title}<br><sup>{line}</sup>", "x": 0.02, "xanchor": "left"}


def losses_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Lead losses (solid) and auxiliary losses (dashed, only for a model with an auxiliary head) per epoch.

    The classification panel is left out when the class loss is zero throughout (one-class data: nothing to tell
    apart), so no flat line suggests that something is broken.
    """
    epochs = _col(rows, "epoch")
    has_cls = any(v > 0 for v in _col(rows, "cls") if not math.isnan(v))
    has_aux = any(v > 0 for k in ("aux_box", "aux_obj", "aux_cls") for v in _col(rows, k) if not math.isnan(v))
    panels = [("box", "box (1 - CIoU)"), ("obj", "objectness")] + ([("cls", "classification")] if has_cls else [])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    colours = {"box": "#1f77b4", "obj": "#d62728", "cls": "#2ca02c"}
    for j, (base, _) in enumerate(panels):
        fig.add_scatter(
            x=epochs,
            y=_col(rows, base),
            name=f"lead {base}" if has_aux else base,
            mode="lines+markers",
            row=1,
            col=j + 1,
            line={"color": colours[base]},
        )
        aux = _col(rows, f"aux_{base}")
        if has_aux and any(v > 0 for v in aux if not math.isnan(v)):
            fig.add_scatter(
                x=epochs,
                y=aux,
                name=f"aux {base} (x0.25 weight)",
                mode="lines+markers",
                row=1,
                col=j + 1,
                line={"color": colours[base], "dash": "dash"},
            )
    fig.update_xaxes(title_text="epoch")
    heads = "lead head solid, auxiliary head dashed" if has_aux else "no auxiliary head"
    line = (
        "Training losses, lower is better: box = how well predicted boxes overlap the labels,<br>objectness = "
        "'is there an object here'"
        + (
            ", classification = which class"
            if has_cls
            else "; no classification panel: one class, nothing to tell apart"
        )
    )
    fig.update_layout(
        title=_explained(f"training losses ({heads})", line),
        height=430,
        width=1100 if len(panels) == 3 else 800,
        margin={"t": 140},
    )
    return fig


def metrics_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """mAP50, mAP50-95 (pycocotools), precision and recall per epoch."""
    fig = go.Figure()
    epochs = _col(rows, "epoch")
    for key, colour in (("mAP50", "#1f77b4"), ("mAP50-95", "#ff7f0e"), ("precision", "#2ca02c"), ("recall", "#9467bd")):
        fig.add_scatter(  # epochs without evaluation (--eval-interval) are gaps: join the evaluated points
            x=epochs, y=_col(rows, key), name=key, mode="lines+markers", line={"color": colour}, connectgaps=True
        )
    fig.update_layout(
        title=_explained(
            "validation metrics per epoch (EMA model; mAP from pycocotools)",
            "Higher is better: mAP50 = share of objects found with boxes overlapping at least 50%, averaged over "
            "confidence; mAP50-95 = the same with stricter overlaps (the main score)",
        ),
        margin={"t": 100},
        xaxis_title="epoch",
        yaxis={"range": [0, 1]},
        height=420,
        width=800,
    )
    return fig


def pr_figure(result: Any) -> go.Figure:
    """Precision-recall curve per class at IoU 0.5, with AP50 in the legend."""
    curves = result.curves
    fig = go.Figure()
    for c, name in enumerate(result.class_names):
        if curves.n_gt[c] == 0:
            continue
        order = np.argsort(curves.recall[c])
        ap50 = result.coco.per_class_ap50.get(name, float("nan"))
        fig.add_scatter(
            x=curves.recall[c][order], y=curves.precision[c][order], mode="lines", name=f"{name} (AP50 {ap50:.3f})"
        )
    fig.update_layout(
        title=_explained(
            f"precision-recall at IoU 0.5 (mAP50 {result.coco.map50:.3f})",
            "Each point is a confidence threshold: a lower one finds more objects (recall, right)<br>with more "
            "false alarms (precision, down). AP50 is the area under the curve;<br>a barely trained model gives a "
            "near-straight falling line",
        ),
        margin={"t": 140},
        legend={"x": 0.02, "y": 0.02, "bgcolor": "rgba(255,255,255,0.7)"},
        xaxis_title="recall",
        yaxis_title="precision",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1.02]},
        height=500,
        width=650,
    )
    return fig


def confusion_figure(result: Any) -> go.Figure:
    """Confusion matrix (conf 0.25, IoU 0.45), normalised per true class; counts on hover."""
    m = np.asarray(result.confusion, dtype=np.float64)
    labels = [*result.class_names, "background"]
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    text = [[f"{int(v)}" for v in row] for row in m]
    fig = go.Figure(
        go.Heatmap(
            z=norm,
            x=[f"pred {n}" for n in labels],
            y=[f"true {n}" for n in labels],
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "share of row"},
        )
    )
    fig.update_layout(
        title=_explained(
            "confusion matrix (counts; colour = share of the true class; conf 0.25, IoU 0.45)",
            "Rows: what the label says; columns: what the model predicted. The diagonal is right; 'background' "
            "= missed<br>(row) or a detection where nothing is labelled (column)",
        ),
        margin={"t": 120},
        yaxis={"autorange": "reversed"},
        height=520,
        width=640,
    )
    return fig


def save_figure(fig: go.Figure, path_no_suffix: Path, png: bool = True) -> list[Path]:
    """Write ``.html`` (plotly.js inlined, works offline) and ``.png`` (kaleido; skipped if no browser), each
    atomically: a front end may be showing the previous version while the run writes the next."""
    from core.data.figures import ensure_browser_path
    from core.train.rundir import atomic_write_bytes, atomic_write_text

    out = [path_no_suffix.with_suffix(".html")]
    atomic_write_text(out[0], fig.to_html(include_plotlyjs=True, full_html=True))
    if png and ensure_browser_path():
        try:
            atomic_write_bytes(path_no_suffix.with_suffix(".png"), fig.to_image(format="png", scale=1))
            out.append(path_no_suffix.with_suffix(".png"))
        except Exception:  # noqa: BLE001 - a missing/broken browser must not fail a training run
            pass
    return out


def write_run_plots(run_dir: Any, result: Any | None, png: bool = True) -> list[Path]:
    """All run plots into ``<run>/plots``."""
    rows = run_dir.read_results()
    written: list[Path] = []
    if rows:
        written += save_figure(losses_figure(rows), run_dir.plots / "losses", png)
        written += save_figure(metrics_figure(rows), run_dir.plots / "metrics", png)
    if result is not None:
        written += save_figure(pr_figure(result), run_dir.plots / "pr_curves", png)
        written += save_figure(confusion_figure(result), run_dir.plots / "confusion_matrix", png)
    return written


class PlotHook(Hook):
    """HTML plots after every evaluated epoch, HTML + PNG at the end of the run."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.is_main and t.cfg.plots != "none":
            write_run_plots(t.run, getattr(t, "last_eval", None), png=False)

    def after_train(self) -> None:
        t = self.trainer
        if t.is_main and hasattr(t, "run") and t.cfg.plots != "none":
            png = t.cfg.plots == "all" and not stopped_by_user(getattr(t, "_stop_reason", None))
            if t.cfg.plots == "all" and not png:
                t.log(
                    "plots written as HTML only: the PNG export (a headless browser) is skipped on a stop, "
                    "so the run ends at once"
                )
            write_run_plots(t.run, getattr(t, "last_eval", None), png=png)


def stopped_by_user(reason: str | None) -> bool:
    """A stop someone is waiting on (SIGTERM/SIGINT, the STOP file), as opposed to early stopping or max_steps."""
    return bool(reason) and (str(reason).startswith("stopped by") or str(reason).startswith("stop requested"))
