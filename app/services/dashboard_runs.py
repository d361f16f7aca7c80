"""The dashboard's view of training runs: find run directories, summarize them, follow one, compare several.

Plain functions on plain data, tested without a browser; the pages in :mod:`app.dashboard` only draw them. A run
is a folder of files (``core.train.RunDir``) that this module only reads: ``status.json``, ``results.csv``,
``config.json``, ``job.json`` (the job runner's record), ``metrics.json``, ``train.log`` and ``plots/*.png``.

* :func:`find_runs` — the workspace's runs plus any extra folders (a run folder, or a folder of runs).
* :func:`signature` — the (mtime, size) of the files a summary reads: the pages' cache key, so 50 finished runs
  are read once and a live run is read again only when one of its files changed.
* :func:`summarize` — one row of the runs table (state, model, dataset, epochs, best mAP, wall time) with the
  problems found (missing status.json, truncated results.csv) as ``problems`` instead of an exception.
* :func:`run_detail` — what a run page shows: rows, status, config, log tail, plot images, snapshot epochs.
* :func:`lr_figure`, :func:`compare_curves`, :func:`tradeoff_figure`, :func:`per_class_table`,
  :func:`best_epochs` — the Runs and Compare pages' figures and tables.

States: the job runner's (``app.jobs.JobRunner.state``) for runs of the workspace, else the run directory's
``effective_state`` (``died`` when the recorded process is gone); ``unknown`` without a readable status.json.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from app.jobs import tail as job_log_tail
from core.train import RunDir

SIGNATURE_FILES = ("status.json", "results.csv", "config.json", "job.json", "metrics.json")
PLOT_IMAGES = {"pr_curves": "PR curves (last evaluation)", "confusion_matrix": "confusion matrix (last evaluation)"}
PALETTE = ("#4c6ef5", "#f76707", "#2f9e44", "#e03131", "#9c36b5", "#1098ad", "#f59f00", "#495057", "#d6336c")


@dataclass(frozen=True)
class RunRef:
    """A run folder and how the pages name it: ``name`` for workspace runs, ``<parent>/<name>`` for others."""

    key: str  # the absolute folder path: unique, stable
    name: str
    label: str
    in_workspace: bool


@dataclass
class RunSummary:
    """One row of the runs table (see :func:`summary_row`)."""

    key: str
    label: str
    state: str
    model: str
    dataset: str
    epoch: int
    epochs: int | None
    best_map50: float | None
    best_map: float | None
    best_epoch: int | None
    last_map50: float | None
    wall_s: float | None
    started: float | None
    params: int | None = None
    latency_ms: float | None = None
    problems: list[str] = field(default_factory=list)


# -- finding runs -----------------------------------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in ("status.json", "results.csv", "config.json", "job.json"))


def find_runs(runs_dir: Path | None, extra: Iterable[str | Path] = ()) -> tuple[list[RunRef], list[str]]:
    """Run folders of the workspace (``runs_dir``) and of ``extra`` paths; returns (runs, problems).

    An ``extra`` path may be one run folder or a folder whose subfolders are runs. A path that does not exist is
    a problem (a message naming it), not an exception.
    """
    refs: list[RunRef] = []
    problems: list[str] = []
    seen: set[str] = set()

    def add(folder: Path, in_ws: bool) -> None:
        key = str(folder.resolve())
        if key in seen:
            return
        seen.add(key)
        label = folder.name if in_ws else f"{folder.parent.name}/{folder.name}"
        refs.append(RunRef(key, folder.name, label, in_ws))

    if runs_dir is not None and runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                add(d, True)
    for raw in extra:
        p = Path(raw).expanduser()
        if not p.is_dir():
            problems.append(f"{raw}: no such folder (given with --runs)")
        elif is_run_dir(p):
            add(p, False)
        else:
            subs = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".") and is_run_dir(d)]
            if not subs:
                problems.append(f"{raw}: holds no run folders (no status.json or results.csv inside)")
            for d in subs:
                add(d, False)
    return refs, problems


def signature(folder: str | Path) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime_ns, size) of the files a summary reads: changes whenever the run writes one of them."""
    out = []
    for name in SIGNATURE_FILES:
        try:
            st = (Path(folder) / name).stat()
        except OSError:
            continue
        out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)


# -- reading one run ------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path.name}: unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(data, dict):
        return None, f"{path.name}: not a JSON object"
    return data, None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def _parse(v: str) -> Any:
    """A results.csv cell as ``RunDir.read_results`` reads it: '' -> NaN, whole numbers -> int, numbers -> float."""
    if v == "":
        return math.nan
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def read_results(folder: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of results.csv, and problems: a row cut short (a truncated file) or with a non-numeric epoch is
    left out and named (``results.csv line N: ...``); the rows before it are kept.

    Parsed here rather than by ``RunDir.read_results``, which raises on a row cut short.
    """
    path = RunDir(folder).results
    if not path.is_file():
        return [], []
    try:
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        return [], [f"results.csv: unreadable ({type(exc).__name__}: {exc})"]
    good, problems = [], []
    for i, r in enumerate(raw, start=2):  # line 1 is the header
        if None in r.values() or None in r:  # DictReader: None for missing cells, key None for extra ones
            what = "cut short" if None in r.values() else "has more cells than the header"
            problems.append(f"results.csv line {i}: {what} (a truncated or hand-edited file); row left out")
            continue
        parsed = {k: _parse(v) for k, v in r.items()}
        if _num(parsed.get("epoch")) is None:
            problems.append(f"results.csv line {i}: no epoch number; row left out")
            continue
        good.append(parsed)
    return good, problems


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row of best fitness (0.1 mAP50 + 0.9 mAP50-95, as training picks best.pt), None before any evaluation."""
    scored = [
        (0.1 * (_num(r.get("mAP50")) or 0.0) + 0.9 * (_num(r.get("mAP50-95")) or 0.0), r)
        for r in rows
        if _num(r.get("mAP50")) is not None
    ]
    return max(scored, key=lambda t: t[0])[1] if scored else None


def run_state(ref: RunRef, jobs: Any | None = None) -> str:
    """The job runner's state for a workspace run (queued/starting/running/.../died), else the folder's own."""
    if jobs is not None and ref.in_workspace:
        try:
            return str(jobs.state(ref.name))
        except Exception:  # noqa: BLE001 - a broken record shows as unknown, the table still renders
            return "unknown"
    return RunDir(ref.key).effective_state() or "unknown"


def _model_name(config: dict[str, Any], job: dict[str, Any]) -> tuple[str, float, bool | None]:
    cfg = config.get("config") if isinstance(config.get("config"), dict) else config
    req = job.get("request") if isinstance(job.get("request"), dict) else {}
    model = str(cfg.get("model") or req.get("variant") or "?")
    width = _num(cfg.get("width", req.get("width", 1.0))) or 1.0
    aux = cfg.get("aux", req.get("aux"))
    return model, width, aux if isinstance(aux, bool) else None


def model_label(model: str, width: float, aux: bool | None) -> str:
    text = model if width == 1.0 else f"{model} ×{width:g}"
    return text + (" +aux" if aux else "")


def summarize(ref: RunRef) -> RunSummary:
    """Everything of the runs table that depends only on the run's files (cache it by :func:`signature`)."""
    folder = Path(ref.key)
    problems: list[str] = []
    status, p = _read_json(folder / "status.json")
    problems += [p] if p else []
    if status is None and p is None and not (folder / "job.json").is_file():
        problems.append("status.json: missing (not a run started by yolov7-studio, or it never started)")
    config, p = _read_json(folder / "config.json")
    problems += [p] if p else []
    job, p = _read_json(folder / "job.json")
    problems += [p] if p else []
    metrics, _ = _read_json(folder / "metrics.json")
    status, config, job = status or {}, config or {}, job or {}
    rows, p2 = read_results(folder)
    problems += p2
    model, width, aux = _model_name(config, job)
    cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
    req = job.get("request") if isinstance(job.get("request"), dict) else {}
    data = cfg.get("data") or req.get("dataset") or ""
    dataset = _dataset_label(str(data)) if data else "?"
    best = _best(rows)
    last_eval = next((r for r in reversed(rows) if _num(r.get("mAP50")) is not None), None)
    started = _num(status.get("started")) or _num(job.get("launched"))
    end = _num(status.get("updated"))
    if status.get("state") in ("running", "queued") and end is not None:
        end = max(end, time.time()) if RunDir(folder).is_alive(status=status) else end
    wall = end - started if started is not None and end is not None else None
    epoch = int(_num(status.get("epoch")) or (_num(rows[-1]["epoch"]) if rows else 0) or 0)
    epochs = _num(status.get("epochs")) or _num(cfg.get("epochs")) or _num(req.get("epochs"))
    speed = (metrics or {}).get("speed_ms_per_image") or {}
    return RunSummary(
        key=ref.key, label=ref.label, state=str(status.get("state") or ("queued" if job else "unknown")),
        model=model_label(model, width, aux), dataset=dataset, epoch=epoch,
        epochs=int(epochs) if epochs else None,
        best_map50=_num(best.get("mAP50")) if best else None, best_map=_num(best.get("mAP50-95")) if best else None,
        best_epoch=int(best["epoch"]) if best else None, last_map50=_num(last_eval.get("mAP50")) if last_eval else None,
        wall_s=wall, started=started, latency_ms=_num(speed.get("inference")), problems=problems,
    )  # fmt: skip


def _dataset_label(data: str) -> str:
    p = Path(data)
    if p.name in ("data.yaml", "data.yml", "dataset.yaml"):
        return p.parent.name
    return p.name or data


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s"


def summary_row(s: RunSummary, state: str | None = None) -> dict[str, Any]:
    """The runs table's row (``state``: the live state, which is not cached with the summary)."""
    return {
        "run": s.label,
        "state": state or s.state,
        "model": s.model,
        "dataset": s.dataset,
        "epochs": f"{s.epoch}/{s.epochs}" if s.epochs else str(s.epoch),
        "best mAP50": s.best_map50,
        "best mAP50-95": s.best_map,
        "best epoch": s.best_epoch,
        "wall time": format_duration(s.wall_s),
        "problems": "; ".join(s.problems),
    }


# -- one run's page ---------------------------------------------------------------------------------------------------
@dataclass
class RunDetail:
    """What the run page shows (all read from the run's files)."""

    rows: list[dict[str, Any]]
    status: dict[str, Any]
    config: dict[str, Any]
    log_tail: str
    images: dict[str, Path]
    snapshot_epochs: list[int]
    problems: list[str]


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a run's log ('' if it does not exist): the job runner's reader."""
    return job_log_tail(path, lines, max_bytes)


def run_detail(folder: str | Path, log_lines: int = 40) -> RunDetail:
    folder = Path(folder)
    rows, problems = read_results(folder)
    status, p = _read_json(folder / "status.json")
    problems += [p] if p else []
    config, p = _read_json(folder / "config.json")
    problems += [p] if p else []
    log = tail(folder / "train.log", log_lines)
    if not log.strip():
        log = tail(folder / "process.log", log_lines)
    images = {k: folder / "plots" / f"{k}.png" for k in PLOT_IMAGES if (folder / "plots" / f"{k}.png").is_file()}
    snaps = sorted(
        int(s) for s in (q.stem.rsplit("_", 1)[-1] for q in (folder / "objectness").glob("epoch_*.npz")) if s.isdigit()
    )
    return RunDetail(rows, status or {}, config or {}, log, images, snaps, problems)


def latest_values(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The last epoch's number and its mAPs (the last evaluated row), as the page's metrics show them."""
    if not rows:
        return {"epoch": None, "mAP50": None, "mAP50-95": None}
    ev = next((r for r in reversed(rows) if _num(r.get("mAP50")) is not None), {})
    return {"epoch": _num(rows[-1].get("epoch")), "mAP50": _num(ev.get("mAP50")), "mAP50-95": _num(ev.get("mAP50-95"))}


def _layout(fig: go.Figure, title: str, height: int = 340) -> go.Figure:
    fig.update_layout(
        title=title, height=height, margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2}
    )
    return fig


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, 300)


def lr_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Learning rate of each parameter group per epoch (lr0 weights with decay, lr1 BN, lr2 biases)."""
    title = "learning rate per epoch"
    keys = [k for k in ("lr0", "lr1", "lr2") if any(_num(r.get(k)) is not None for r in rows)]
    if not keys:
        return _empty(title, "no epoch finished yet")
    names = {"lr0": "weights (decay)", "lr1": "BatchNorm", "lr2": "biases"}
    fig = go.Figure()
    for i, k in enumerate(keys):
        fig.add_scatter(
            x=[r.get("epoch") for r in rows], y=[_num(r.get(k)) for r in rows], name=names[k], mode="lines",
            line={"color": PALETTE[i], "dash": ("solid", "dash", "dot")[i]},
        )  # fmt: skip
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title)


# -- several runs -------------------------------------------------------------------------------------------------
CURVES = {
    "mAP50-95": "validation mAP50-95",
    "mAP50": "validation mAP50",
    "total": "training loss (lead + aux)",
    "box": "lead box loss",
    "aux_box": "aux box loss",
    "obj": "lead objectness loss",
    "aux_obj": "aux objectness loss",
}


def compare_curves(
    runs: dict[str, list[dict[str, Any]]], key: str, best: dict[str, int | None] | None = None
) -> go.Figure:
    """One curve per run of column ``key`` against epoch; each run's best epoch (``best``) marked with a star."""
    title = CURVES.get(key, key)
    if not any(any(_num(r.get(key)) is not None for r in rows) for rows in runs.values()):
        return _empty(title, f"no run has {key!r} values yet")
    fig = go.Figure()
    for i, (label, rows) in enumerate(runs.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(r.get("epoch"), _num(r.get(key))) for r in rows if _num(r.get(key)) is not None]
        fig.add_scatter(
            x=[e for e, _ in pts], y=[v for _, v in pts], name=label, mode="lines", line={"color": colour},
            legendgroup=label,
        )  # fmt: skip
        b = (best or {}).get(label)
        hit = [v for e, v in pts if e == b]
        if b is not None and hit:
            fig.add_scatter(
                x=[b], y=hit[:1], mode="markers", marker={"symbol": "star", "size": 13, "color": colour},
                name=f"{label} best epoch", legendgroup=label, showlegend=False,
            )  # fmt: skip
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title, 380)


def tradeoff_figure(summaries: list[RunSummary]) -> go.Figure:
    """Best mAP50-95 against inference latency (ms per image, from the run's final evaluation), bubble size the
    parameter count (deploy form): the accuracy/speed/size trade-off across runs and variants."""
    title = "accuracy vs latency (bubble: parameters)"
    pts = [s for s in summaries if s.best_map is not None and s.latency_ms is not None]
    if not pts:
        return _empty(title, "needs finished runs (their final evaluation measures latency)")
    biggest = max((s.params or 0) for s in pts) or 1
    fig = go.Figure()
    models = sorted({s.model for s in pts})
    for i, model in enumerate(models):
        group = [s for s in pts if s.model == model]
        fig.add_scatter(
            x=[s.latency_ms for s in group], y=[s.best_map for s in group], mode="markers+text", name=model,
            text=[s.label for s in group], textposition="top center",
            marker={
                "size": [12 + 38 * math.sqrt((s.params or 0) / biggest) for s in group],
                "color": PALETTE[i % len(PALETTE)], "opacity": 0.7, "line": {"width": 1, "color": "#333"},
            },
            customdata=[[(s.params or 0) / 1e6, s.best_map50] for s in group],
            hovertemplate="%{text}<br>latency %{x:.1f} ms<br>mAP50-95 %{y:.3f}<br>mAP50 %{customdata[1]:.3f}"
            "<br>%{customdata[0]:.2f} M params<extra></extra>",
        )  # fmt: skip
    fig.update_xaxes(title_text="inference latency (ms / image, final evaluation, the run's device; log)", type="log")
    fig.update_yaxes(title_text="best mAP50-95")
    return _layout(fig, title, 420)


def per_class_table(runs: dict[str, list[dict[str, Any]]], metric: str = "AP50-95") -> list[dict[str, Any]]:
    """Rows ``{class, <run>: AP at the run's best epoch, ..., best run}``; classes in first-seen order."""
    best_rows = {label: _best(rows) for label, rows in runs.items()}
    classes: list[str] = []
    for row in best_rows.values():
        for k in row or {}:
            if k.startswith(f"{metric}/") and k.split("/", 1)[1] not in classes:
                classes.append(k.split("/", 1)[1])
    out = []
    for c in classes:
        values = {label: _num((row or {}).get(f"{metric}/{c}")) for label, row in best_rows.items()}
        known = {k: v for k, v in values.items() if v is not None}
        top = max(known, key=lambda k: known[k]) if known else ""
        out.append({"class": c, **values, "best run": top})
    return out


def best_epochs(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per run: the best epoch (fitness, as best.pt), its mAPs, and how many epochs ran."""
    out = []
    for label, rows in runs.items():
        b = _best(rows)
        out.append(
            {
                "run": label,
                "best epoch": int(b["epoch"]) if b else None,
                "mAP50": _num(b.get("mAP50")) if b else None,
                "mAP50-95": _num(b.get("mAP50-95")) if b else None,
                "epochs run": len(rows),
            }
        )
    return out


def deploy_params(model: str, width: float, num_classes: int) -> int | None:
    """Parameters of the fused deploy form of ``model`` at ``width`` (built on the meta device: no memory, fast)."""
    import torch

    from core.models import build_model, get_spec, reparameterize, scale_width

    try:
        spec = get_spec(model) if width == 1.0 else scale_width(get_spec(model), width)
        with torch.device("meta"):
            net = reparameterize(build_model(spec, num_classes, deploy=True))
        return int(sum(p.numel() for p in net.parameters()))
    except Exception:  # noqa: BLE001 - an unknown variant has no bubble size, the scatter still draws
        return None


def model_key(folder: str | Path) -> tuple[str, float, int] | None:
    """(variant, width, number of classes) of a run, from config.json, for :func:`deploy_params`."""
    config, _ = _read_json(Path(folder) / "config.json")
    if not config:
        return None
    cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    nc = model.get("num_classes")
    if not isinstance(nc, int):
        names = (config.get("data") or {}).get("classes") if isinstance(config.get("data"), dict) else None
        nc = len(names) if isinstance(names, list) else None
    if not cfg.get("model") or nc is None:
        return None
    return str(cfg["model"]), float(_num(cfg.get("width")) or 1.0), int(nc)
