"""Study folders (``yolov7-studio study assignment|scaling --out DIR``) for the studio's Compare tab (``/open_study``)
and the dashboard's Compare page: plain data in, plain data out.

A study folder holds ``study.json`` (the format in the README: kind, settings, runs with their status and metrics,
summary mean/std per condition, the paper's numbers), ``table.md`` and, for an assignment study, ``objectness.png``.
:func:`open_study` turns one into what the front ends show: a summary line, the paper-style table (our mean +- spread
over seeds per condition, the paper's numbers beside), a plotly bar chart with error bars and the paper's values as
markers, the objectness figure, and the status of every run (read live from its run directory, so a study in
progress can be watched). Scaling studies give their table and a parameters/GFLOPs chart.

Study folders are only read, never written, and only under the workspace's allowed roots (the workspace itself,
the current directory, folders given with ``--allow``/``--runs``), like linked dataset folders.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.workspace import Workspace, _within

STUDY_FILE = "study.json"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PAPER_METRICS = ("AP", "AP50", "AP75")
CONDITION_ORDER = ("none", "independent", "lead-guided", "coarse-to-fine", "coarse-to-fine-bounded")
SCALING_ORDER = ("base", "width-only", "depth-only", "compound")
RUN_HEADERS = ["run", "condition", "seed", "status", "epoch", "AP", "AP50", "run folder"]


class StudyError(ValueError):
    """A study that cannot be opened; the message names the folder or file and the problem."""


@dataclass
class StudyView:
    """Everything the front ends show of one study folder."""

    id: str  # what :func:`open_study` accepts again (relative to the workspace when inside it)
    path: Path
    kind: str  # "assignment" | "scaling"
    summary: str  # markdown
    headers: list[str]
    rows: list[list[Any]]  # the paper-style table (assignment) or the variants (scaling)
    figure: Any  # plotly figure
    image: Path | None  # objectness.png (assignment studies)
    run_rows: list[list[Any]]  # RUN_HEADERS (assignment studies)
    record: dict[str, Any]  # study.json as read, plus "folder", "id" and the live run states
    notes: list[str] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------------------------------
def load(folder: str | Path) -> dict[str, Any]:
    """study.json of ``folder`` (or of the folder holding this study.json), validated by ``core.study.load_study``;
    a :class:`StudyError` names the file and the problem."""
    from core.study import load_study

    folder = Path(folder)
    if folder.name == STUDY_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise StudyError(f"{folder}: no such folder")
    try:
        return load_study(folder)
    except ValueError as exc:
        raise StudyError(str(exc)) from None
    except OSError as exc:
        raise StudyError(f"{folder / STUDY_FILE}: cannot be read ({exc})") from None


def _find(root: Path) -> list[Path]:
    """Study folders under ``root`` (``core.study.list_studies``: the root and two levels down)."""
    from core.study import list_studies as core_list

    try:
        return [Path(p) for p in core_list(root)]
    except (OSError, ValueError):
        return []


def study_roots(ws: Workspace, extra: list[str | Path] | tuple[str | Path, ...] = ()) -> list[Path]:
    """Where studies are looked for: ``<workspace>/studies``, the workspace's runs folder, and ``extra`` folders."""
    roots = [ws.root / "studies", ws.runs_dir, *(Path(p) for p in extra)]
    out: list[Path] = []
    for r in roots:
        r = r.resolve()
        if r not in out:
            out.append(r)
    return out


def study_id(ws: Workspace, folder: Path) -> str:
    """The folder relative to the workspace when inside it (``studies/abl``), else its absolute path."""
    folder = folder.resolve()
    try:
        return str(folder.relative_to(ws.root))
    except ValueError:
        return str(folder)


def list_studies(ws: Workspace, extra: list[str | Path] | tuple[str | Path, ...] = ()) -> list[Path]:
    """Study folders under :func:`study_roots` (depth <= 2), newest study.json first."""
    seen: dict[Path, float] = {}
    for root in study_roots(ws, extra):
        for folder in _find(root):
            try:
                seen.setdefault(folder.resolve(), (folder / STUDY_FILE).stat().st_mtime)
            except OSError:
                continue
    return sorted(seen, key=lambda p: (-seen[p], str(p)))


def study_choices(ws: Workspace, extra: list[str | Path] | tuple[str | Path, ...] = ()) -> list[tuple[str, str]]:
    """(label, id) per study found: the id, and the kind when study.json says it."""
    out = []
    for folder in list_studies(ws, extra):
        ident = study_id(ws, folder)
        try:
            kind = json.loads((folder / STUDY_FILE).read_text()).get("kind", "?")
        except (OSError, ValueError, AttributeError):
            kind = "unreadable"
        out.append((f"{ident} ({kind})", ident))
    return out


def resolve(ws: Workspace, ident: str | Path | None) -> Path:
    """The folder of a study id or path (a study.json path is accepted too); it must lie under an allowed root."""
    text = str(ident or "").strip()
    if not text:
        raise StudyError("no study: pick one from the list or type the path of a study folder")
    p = Path(text).expanduser()
    if not p.is_absolute():
        in_ws, in_cwd = ws.root / p, Path.cwd() / p
        p = in_ws if in_ws.exists() or not in_cwd.exists() else in_cwd
    p = p.resolve()
    if p.name == STUDY_FILE:
        p = p.parent
    if not any(_within(p, r) for r in ws.allowed_roots):
        roots = ", ".join(str(r) for r in ws.allowed_roots)
        raise StudyError(f"{text}: outside the folders the studio and dashboard may read ({roots})")
    if not p.exists():
        raise StudyError(f"{text}: no such folder")
    if not p.is_dir():
        raise StudyError(f"{text}: not a folder (give the study folder, the one holding {STUDY_FILE})")
    return p


# -- numbers ---------------------------------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _pct(value: Any) -> float | None:
    """An AP as a percentage (the paper's unit). Ours are fractions; a paper value above 1 is taken as percent."""
    x = _num(value)
    if x is None:
        return None
    return x if x > 1.0 else 100.0 * x


def _mean_std(entry: dict[str, Any], metric: str) -> str:
    mean, std = _pct(entry.get(f"{metric}_mean")), _pct(entry.get(f"{metric}_std"))
    if mean is None:
        return "–"
    n = entry.get("n")
    if std is None or (isinstance(n, int) and n < 2):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def _ordered(names: list[str], order: tuple[str, ...]) -> list[str]:
    return sorted(dict.fromkeys(names), key=lambda c: (order.index(c) if c in order else len(order), names.index(c)))


# -- live run states -------------------------------------------------------------------------------------------------
def run_state(folder: Path, run: dict[str, Any]) -> tuple[str, str]:
    """(state, epoch text) of one study run: its run directory's status when there is one, else study.json's."""
    from core.train import RunDir

    recorded = str(run.get("status") or "pending")
    rel = run.get("run_dir")
    if not rel:
        return recorded, ""
    run_dir = (folder / str(rel)).resolve()
    if not _within(run_dir, folder) or not (run_dir / "status.json").is_file():
        return recorded, ""
    rd = RunDir(run_dir)
    try:
        status = rd.read_status() or {}
        state = rd.effective_state() or recorded
    except (OSError, ValueError):
        return recorded, ""
    if recorded in ("finished", "failed") and state not in ("running", "queued"):
        state = recorded  # the study evaluated it after training (or gave up): its word is the last
    epoch, epochs = status.get("epoch"), status.get("epochs")
    return str(state), (f"{epoch}/{epochs}" if epoch is not None and epochs else "")


# -- the view --------------------------------------------------------------------------------------------------------
def open_study(ws: Workspace, ident: str | Path | None) -> StudyView:
    """What the front ends show of the study ``ident`` (an id from :func:`study_choices`, or a folder path)."""
    folder = resolve(ws, ident)
    doc = load(folder)
    sid = study_id(ws, folder)
    if doc.get("kind") == "scaling":
        return _scaling_view(sid, folder, doc)
    return _assignment_view(sid, folder, doc)


def _assignment_view(sid: str, folder: Path, doc: dict[str, Any]) -> StudyView:
    runs = [r for r in doc.get("runs") or [] if isinstance(r, dict)]
    summary = {str(s.get("condition")): s for s in doc.get("summary") or [] if isinstance(s, dict)}
    paper = {str(p.get("condition")): p for p in doc.get("paper") or [] if isinstance(p, dict)}
    conditions = _ordered([str(r.get("condition")) for r in runs] + list(summary) + list(paper), CONDITION_ORDER)
    headers = ["condition", "runs", *(f"{m} (%)" for m in METRICS), *(f"paper {m}" for m in PAPER_METRICS)]
    rows = []
    for c in conditions:
        s, p = summary.get(c, {}), paper.get(c, {})
        paper_cells = [f"{v:.1f}" if (v := _pct(p.get(m))) is not None else "–" for m in PAPER_METRICS]
        rows.append([c, s.get("n", 0), *(_mean_std(s, m) for m in METRICS), *paper_cells])

    run_rows, states = [], {}
    for r in runs:
        state, epoch = run_state(folder, r)
        states[str(r.get("name"))] = state
        metrics = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
        ap, ap50 = _pct(metrics.get("AP")), _pct(metrics.get("AP50"))
        run_rows.append(
            [
                r.get("name"),
                r.get("condition"),
                r.get("seed"),
                state,
                epoch,
                round(ap, 2) if ap is not None else None,
                round(ap50, 2) if ap50 is not None else None,
                str(r.get("run_dir") or ""),
            ]
        )
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st] = counts.get(st, 0) + 1
    settings = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
    figure_name = str(doc.get("figure") or "objectness.png")
    image = folder / figure_name
    notes = []
    if not image.is_file():
        image = None
        notes.append(f"no objectness figure yet ({figure_name} is written when every run has finished)")
    means = {c: m for c in conditions if (m := _num(summary.get(c, {}).get("AP_mean"))) is not None}
    top = max(means.values(), default=0.0)
    leaders = [c for c, m in means.items() if m == top]
    seeds = settings.get("seeds", "?")
    text = (
        f"**Assignment study** `{sid}`: {len(conditions)} conditions, {len(runs)} runs "
        f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'none'}). "
        f"{settings.get('model', '?')} ×{settings.get('width', '?')}, {settings.get('epochs', '?')} epochs at "
        f"{settings.get('img', '?')} px on `{settings.get('data', '?')}`, seeds "
        f"{', '.join(map(str, seeds)) if isinstance(seeds, list) else seeds}, "
        f"evaluated on the {settings.get('split', 'test')} split (pycocotools). "
        + (f"Best mean AP: **{leaders[0]}** ({100 * top:.1f}). " if top > 0 and len(leaders) == 1 else "")
        + _paper_note(paper)
    )
    record = {**doc, "id": sid, "folder": str(folder), "live_status": states}
    return StudyView(
        sid, folder, "assignment", text, headers, rows, assignment_figure(conditions, summary, paper), image,
        run_rows, record, notes,
    )  # fmt: skip


def _scaling_view(sid: str, folder: Path, doc: dict[str, Any]) -> StudyView:
    raw = [r for r in doc.get("rows") or [] if isinstance(r, dict)]
    order = _ordered([str(r.get("variant")) for r in raw], SCALING_ORDER)
    by_variant = {str(r.get("variant")): r for r in raw}
    rows_in = [by_variant[v] for v in order]
    has_metrics = any(isinstance(r.get("metrics"), dict) for r in rows_in)
    paper = {str(p.get("variant")): p for p in doc.get("paper") or [] if isinstance(p, dict)}
    headers = ["variant", "depth", "width", "params (M)", "GFLOPs", "channel ratios", "max ratio change vs base"]
    if has_metrics:
        headers += ["AP (%)", "AP50 (%)"]
    if paper:
        headers += ["paper params (M)", "paper GFLOPs", "paper AP"]
    rows = []
    for r in rows_in:
        params, gflops = _num(r.get("params")), _num(r.get("gflops"))
        ratios = r.get("channel_ratios")
        ratio_text = (
            ", ".join(f"{k} {v:.2f}" if isinstance(v, int | float) else f"{k} {v}" for k, v in ratios.items())
            if isinstance(ratios, dict)
            else ""
        )
        change = _num(r.get("max_ratio_change_vs_base"))
        row = [
            r.get("variant"),
            r.get("depth"),
            r.get("width"),
            round(params / 1e6, 3) if params is not None else None,
            round(gflops, 2) if gflops is not None else None,
            ratio_text,
            round(change, 3) if change is not None else None,
        ]
        if has_metrics:
            m = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
            row += [
                round(v, 2) if (v := _pct(m.get("AP"))) is not None else None,
                round(v, 2) if (v := _pct(m.get("AP50"))) is not None else None,
            ]
        if paper:
            p = paper.get(str(r.get("variant")), {})
            ap = _pct(p.get("AP"))
            row += [_num(p.get("params_m")), _num(p.get("gflops")), round(ap, 1) if ap is not None else None]
        rows.append(row)
    settings = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
    text = (
        f"**Scaling study** `{sid}`: {len(rows)} variants of {settings.get('model', '?')} "
        f"(depth ×{settings.get('depth', '?')}, width ×{settings.get('width', '?')}): parameters and GFLOPs of "
        "width-only, depth-only and compound scaling, and the channel ratios between blocks"
        + (f" ({settings['counts']})" if settings.get("counts") else "")
        + ". "
        + _paper_note(paper, "its variants use the paper's own factors (width 1.25, depth 2.0), not necessarily these")
    )
    record = {**doc, "id": sid, "folder": str(folder)}
    return StudyView(sid, folder, "scaling", text, headers, rows, scaling_figure(rows_in, paper), None, [], record)


def _paper_note(
    paper: dict[str, dict[str, Any]], caveat: str = "compare the ordering and the gaps, not the values"
) -> str:
    """Where the paper's numbers come from, each table named once."""
    tables = []
    for p in paper.values():
        if p.get("table"):
            name = f"{p['table']} ({p['model']})" if p.get("model") else str(p["table"])
        elif p.get("source"):
            m = re.search(r"(Table \d+) \((.*?),? COCO", str(p["source"]))
            name = f"{m.group(1)} ({m.group(2)})" if m else str(p["source"])
        else:
            continue
        if name not in tables:
            tables.append(name)
    if not tables:
        return ""
    return "Paper columns: YOLOv7 paper (arXiv:2207.02696), " + ", ".join(tables) + f", on COCO: {caveat}."


# -- figures ---------------------------------------------------------------------------------------------------------
PALETTE = {"none": "#94a3b8", "independent": "#f59e0b", "lead-guided": "#10b981", "coarse-to-fine": "#4f46e5",
           "coarse-to-fine-bounded": "#a855f7"}  # fmt: skip


def _wrap(label: str, width: int = 15) -> str:
    """A long condition name on two lines (``coarse-to-fine<br>-bounded``) so that tick labels do not collide."""
    if len(label) <= width or "-" not in label:
        return label
    cut = label.rfind("-")
    return f"{label[:cut]}<br>{label[cut:]}"


def assignment_figure(conditions: list[str], summary: dict[str, Any], paper: dict[str, Any]) -> Any:
    """AP50-95 and AP50 (%) per condition: our mean with the spread over seeds as error bars, the paper's as markers."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("AP50-95 (%)", "AP50 (%)"), horizontal_spacing=0.08)
    colors = [PALETTE.get(c, "#64748b") for c in conditions]
    for col, metric in enumerate(("AP", "AP50"), start=1):
        means = [_pct(summary.get(c, {}).get(f"{metric}_mean")) for c in conditions]
        stds = [_pct(summary.get(c, {}).get(f"{metric}_std")) or 0.0 for c in conditions]
        ns = [summary.get(c, {}).get("n", 0) for c in conditions]
        fig.add_trace(
            go.Bar(
                x=conditions,
                y=means,
                error_y={"type": "data", "array": stds, "visible": True, "thickness": 1.5},
                marker_color=colors,
                name="ours (mean ± std over seeds)",
                legendgroup="ours",
                showlegend=col == 1,
                customdata=list(zip(stds, ns)),
                hovertemplate="%{x}: %{y:.2f} ± %{customdata[0]:.2f} (%{customdata[1]} runs)<extra>ours</extra>",
            ),
            row=1,
            col=col,
        )
        paper_ys = [_pct(paper.get(c, {}).get(metric)) for c in conditions]
        if any(v is not None for v in paper_ys):
            fig.add_trace(
                go.Scatter(
                    x=conditions,
                    y=paper_ys,
                    mode="markers",
                    marker={"symbol": "diamond", "size": 12, "color": "#111827", "line": {"width": 1, "color": "#fff"}},
                    name="paper",
                    legendgroup="paper",
                    showlegend=col == 1,
                    hovertemplate="%{x}: %{y:.1f}<extra>paper</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(tickvals=conditions, ticktext=[_wrap(c) for c in conditions], tickangle=0)
    fig.update_layout(
        height=400,
        margin={"l": 50, "r": 20, "t": 70, "b": 40},
        legend={"orientation": "h", "y": -0.22},
        template="plotly_white",
        bargap=0.35,
    )
    fig.update_yaxes(rangemode="tozero")
    return fig


def scaling_figure(rows: list[dict[str, Any]], paper: dict[str, dict[str, Any]] | None = None) -> Any:
    """Parameters (M) and GFLOPs per scaled variant, side by side; the paper's (Table 3) as markers when given."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("parameters (M)", "GFLOPs"), horizontal_spacing=0.1)
    names = [str(r.get("variant")) for r in rows]
    colors = ["#94a3b8", "#f59e0b", "#10b981", "#4f46e5", "#a855f7", "#64748b"]
    paper = paper or {}
    for col, (key, scale, paper_key) in enumerate((("params", 1e-6, "params_m"), ("gflops", 1.0, "gflops")), start=1):
        ys = [(_num(r.get(key)) or 0.0) * scale for r in rows]
        fig.add_trace(
            go.Bar(
                x=names,
                y=ys,
                marker_color=[colors[i % len(colors)] for i in range(len(names))],
                showlegend=False,
                text=[f"{y:.3g}" for y in ys],
                textposition="outside",
                hovertemplate="%{x}: %{y:.3g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        paper_ys = [_num(paper.get(n, {}).get(paper_key)) for n in names]
        if any(v is not None for v in paper_ys):
            fig.add_trace(
                go.Scatter(
                    x=names,
                    y=paper_ys,
                    mode="markers",
                    marker={"symbol": "diamond", "size": 12, "color": "#111827"},
                    name="paper (Table 3, its own scale factors)",
                    showlegend=col == 1,
                    hovertemplate="%{x}: %{y:.3g}<extra>paper</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_layout(
        height=360,
        margin={"l": 50, "r": 20, "t": 70, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.15},
    )
    fig.update_yaxes(rangemode="tozero")
    return fig
