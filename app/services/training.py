"""Plain helpers of the Fine-tune tab: live figures from a run's ``results.csv`` rows, and the run's downloads.

Figures take the rows ``app.jobs.JobRunner.status`` returns (one dict per epoch: lead losses ``box obj cls``,
auxiliary losses ``aux_box aux_obj aux_cls``, ``mAP50``, ``mAP50-95``, ``AP50/<class>``, ``AP50-95/<class>``) and
return plotly figures; nothing here touches a browser.

Downloads (:func:`export_run`): the deploy checkpoint (re-parameterized by :func:`core.inference.convert_for_deploy`,
written only when its self-check passes, with the check's text beside it) and the ONNX file
(:func:`core.export.export_onnx`, checked in ONNX Runtime by :func:`core.export.verify_onnx`), both under
``<run>/export/`` and made once per checkpoint version.

The form (:func:`request_from_form`): the ``TrainRequest`` fields from the Fine-tune tab / Launch page, including
the label-assignment options (:data:`ASSIGN_HELP`, :data:`WIRING_HELP`); :func:`start_suggestion` is the line that
suggests a start checkpoint before a from-scratch run on a small dataset.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.modelcache import ModelCache, file_key
from app.workspace import Workspace
from core.loss import ASSIGN_STRATEGIES, DEFAULT_ASSIGN
from core.models import AUX_WIRINGS
from core.train import SMALL_DATASET_IMAGES

LEAD = ("box", "obj", "cls")
TITLES = {"box": "box (CIoU)", "obj": "objectness", "cls": "classification"}
COLOURS = {"box": "#4c6ef5", "obj": "#e03131", "cls": "#2f9e44"}
FORMS = ("deploy", "onnx")


def _col(rows: list[dict[str, Any]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for r in rows:
        v = r.get(key)
        try:
            f = float(v) if v not in ("", None) else math.nan
        except (TypeError, ValueError):
            f = math.nan
        out.append(None if math.isnan(f) else f)
    return out


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=300, margin={"l": 40, "r": 20, "t": 50, "b": 40})
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def losses_figure(rows: list[dict[str, Any]], live: dict[str, float] | None = None) -> go.Figure:
    """Lead (solid) and auxiliary (dashed) box/objectness/classification losses per epoch.

    ``live``: the running means of the epoch in progress (status.json ``losses``), drawn as open markers one
    epoch after the last finished one, so the curves move during the first epoch too.
    """
    title = "training losses: lead head solid, auxiliary head dashed"
    if not rows and not live:
        return _empty(title, "no epoch finished yet")
    fig = make_subplots(rows=1, cols=3, subplot_titles=[TITLES[k] for k in LEAD])
    epochs = _col(rows, "epoch")
    next_epoch = (max((e for e in epochs if e is not None), default=0.0)) + 1
    for j, key in enumerate(LEAD):
        for prefix, dash, label in (("", "solid", "lead"), ("aux_", "dash", "aux")):
            ys = _col(rows, prefix + key)
            now = (live or {}).get(prefix + key)
            if not any(y for y in ys) and not now:
                continue  # no auxiliary head: its losses are all 0
            line = {"color": COLOURS[key], "dash": dash}
            fig.add_scatter(x=epochs, y=ys, name=f"{label} {key}", mode="lines+markers", line=line, row=1, col=j + 1)
            if now:
                fig.add_scatter(
                    x=[next_epoch], y=[now], name=f"{label} {key} (epoch in progress)", mode="markers",
                    marker={"color": COLOURS[key], "symbol": "circle-open", "size": 10}, row=1, col=j + 1,
                    showlegend=False,
                )  # fmt: skip
    if not fig.data:
        return _empty(title, "no epoch finished yet")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(
        title=title, height=380, margin={"l": 40, "r": 20, "t": 70, "b": 40},
        legend={"orientation": "h", "y": -0.25, "x": 0},
    )  # fmt: skip
    return fig


def map_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """mAP50 and mAP50-95 (pycocotools, EMA model) plus precision and recall per evaluated epoch."""
    title = "validation mAP per epoch (pycocotools)"
    if not any(v is not None for v in _col(rows, "mAP50")):
        return _empty(title, "no evaluation yet")
    fig = go.Figure()
    epochs = _col(rows, "epoch")
    for key, colour, width in (
        ("mAP50", "#4c6ef5", 3),
        ("mAP50-95", "#f76707", 3),
        ("precision", "#2f9e44", 1),
        ("recall", "#9c36b5", 1),
    ):
        fig.add_scatter(
            x=epochs, y=_col(rows, key), name=key, mode="lines+markers", connectgaps=True,
            line={"color": colour, "width": width},
        )  # fmt: skip
    fig.update_layout(
        title=title, xaxis_title="epoch", yaxis={"range": [0, 1]}, height=340,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
    )  # fmt: skip
    return fig


def per_class_ap(rows: list[dict[str, Any]], metrics: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{class: {"AP50": x, "AP50-95": y}}`` of the latest evaluation (status metrics, else the last row with AP)."""
    source = metrics if metrics and any(k.startswith("AP50/") for k in metrics) else None
    if source is None:
        for r in reversed(rows):
            if any(k.startswith("AP50/") and _col([r], k)[0] is not None for k in r):
                source = r
                break
    out: dict[str, dict[str, Any]] = {}
    for key in source or {}:
        if key.startswith("AP50/"):
            name = key.split("/", 1)[1]
            out[name] = {"AP50": _col([source], key)[0], "AP50-95": _col([source], f"AP50-95/{name}")[0]}  # type: ignore[list-item]
    return out


def per_class_figure(rows: list[dict[str, Any]], metrics: dict[str, Any] | None = None) -> go.Figure:
    """Bars of AP50 and AP50-95 per class of the latest evaluation (classes without validation boxes: none)."""
    title = "per-class AP (latest evaluation)"
    ap = per_class_ap(rows, metrics)
    if not ap:
        return _empty(title, "no evaluation yet")
    names = list(ap)
    fig = go.Figure()
    fig.add_bar(x=names, y=[ap[n]["AP50"] for n in names], name="AP50", marker_color="#4c6ef5")
    fig.add_bar(x=names, y=[ap[n]["AP50-95"] for n in names], name="AP50-95", marker_color="#f76707")
    fig.update_layout(
        title=title, barmode="group", yaxis={"range": [0, 1]}, height=340, margin={"l": 40, "r": 20, "t": 50, "b": 40}
    )
    return fig


def progress_text(status: dict[str, Any]) -> str:
    """One Markdown line: state, epoch/step, images/s, ETA, queue position, message."""
    state = status.get("state", "unknown")
    parts = [f"**{status.get('name', '')}**: **{state}**"]
    if state == "queued":
        parts.append(f"position {status.get('queue_position')} in the queue")
    if status.get("epochs"):
        shown = min(int(status.get("epoch") or 0) + (1 if state == "running" else 0), int(status["epochs"]))
        parts.append(f"epoch {shown}/{status['epochs']}")
    if state == "running" and status.get("steps"):
        parts.append(f"step {status.get('step')}/{status['steps']}")
    if status.get("images_per_s"):
        parts.append(f"{float(status['images_per_s']):.1f} images/s")
    if status.get("eta"):
        parts.append(f"ETA {status['eta']} (training steps)")
    metrics = status.get("metrics") or {}
    if metrics.get("mAP50") is not None:
        parts.append(f"mAP50 {metrics['mAP50']:.3f}, mAP50-95 {metrics.get('mAP50-95') or 0:.3f}")
    line = " · ".join(parts)
    if status.get("message") and state != "running":  # while running it only repeats epoch and step
        line += f"  \n{status['message']}"
    return line


# -- downloads ---------------------------------------------------------------------------------------------------
def export_paths(run_root: Path) -> dict[str, Path]:
    """Where :func:`export_run` puts a run's downloads."""
    d = Path(run_root) / "export"
    name = Path(run_root).name
    return {
        "deploy": d / f"{name}_deploy.pt",
        "deploy_check": d / f"{name}_deploy_check.txt",
        "onnx": d / f"{name}.onnx",
        "onnx_check": d / f"{name}_onnx_check.txt",
    }


def _fresh(out: Path, source: Path, meta: Path) -> bool:
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    st = source.stat()
    return out.is_file() and info.get("source") == [str(source), st.st_size, st.st_mtime_ns]


def export_run(run_root: Path, source: Path, form: str, img: int = 320) -> dict[str, Any]:
    """Make (or reuse) one download of a run: ``form`` ``deploy`` or ``onnx``.

    Returns ``{"form", "path", "check" (the self-check text), "passed", "cached"}``; ``path`` is None when the
    deploy self-check failed (the deploy checkpoint is only written when it reproduces the original).
    """
    from core.checkpoint.io import load_model, save_checkpoint
    from core.inference import convert_for_deploy

    if form not in FORMS:
        raise ValueError(f"unknown download {form!r}; choose one of {', '.join(FORMS)}")
    paths = export_paths(run_root)
    out, check_file = paths[form], paths[f"{form}_check"]
    meta = out.with_name(out.name + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if _fresh(out, source, meta):
        text = check_file.read_text() if check_file.is_file() else ""
        return {"form": form, "path": str(out), "check": text, "passed": True, "cached": True}
    loaded = load_model(source)
    model = loaded.model.float().eval()
    stride = int(max(model.head.strides))
    size = max(stride, int(math.ceil(img / stride)) * stride)
    if form == "deploy":
        conversion = convert_for_deploy(model, img_size=size)
        check = conversion.check
        assert check is not None
        text = f"source: {source.name} ({loaded.description})\n{check.to_text()}"
        check_file.write_text(text + "\n")
        if not check.passed:
            return {"form": form, "path": None, "check": text, "passed": False, "cached": False}
        extra = {"reparam_check": check.to_dict(), "source_checkpoint": str(source), "source_description": text}
        save_checkpoint(out, conversion.model, extra=extra)
        passed = True
    else:
        from core.export import export_onnx, verify_onnx

        tmp = out.with_name(f".{out.name}.tmp")
        export_onnx(model, tmp, img_size=size)
        onnx_check = verify_onnx(tmp, model)
        text = (
            f"source: {source.name} ({loaded.description})\ninput 'images' [1,3,{size},{size}] RGB in [0,1]; "
            f"output 'output' [1,N,5+nc] (xywh pixels, objectness, class probabilities)\n{onnx_check.to_text()}"
        )
        check_file.write_text(text + "\n")
        tmp.replace(out)
        passed = bool(onnx_check.passed)
    st = source.stat()
    meta.write_text(json.dumps({"source": [str(source), st.st_size, st.st_mtime_ns]}))
    return {"form": form, "path": str(out), "check": text, "passed": passed, "cached": False}


# -- the tab's form ---------------------------------------------------------------------------------------------
SCRATCH = "scratch"
BOUNDED = "coarse-to-fine-bounded"
ASSIGN_HELP: dict[str, str] = {
    "independent": "the auxiliary head is labelled from its own predictions (plain deep supervision)",
    "lead-guided": "both heads get the lead head's fine labels",
    "coarse-to-fine": "the official YOLOv7 assigner: fine labels for the lead, coarser (more) positives for the "
    "auxiliary head, both from the lead's predictions",
    BOUNDED: "coarse-to-fine with the coarse labels' objectness capped by the distance from the box centre; "
    "strength = the bound (0: no cap)",
}
WIRING_HELP: dict[str, str] = {
    "top-down": "the auxiliary head reads the top-down pyramid",
    "partial": "the auxiliary head reads the middle of the ELAN block feeding each lead level (the paper's partial "
    "auxiliary head; P5 models: yolov7-tiny, yolov7, yolov7x)",
}
assert set(ASSIGN_HELP) == set(ASSIGN_STRATEGIES) and set(WIRING_HELP) == set(AUX_WIRINGS)
OFFICIAL = {DEFAULT_ASSIGN: "official default", AUX_WIRINGS[0]: "official"}


def choice_label(value: str) -> str:
    """A radio label: the value, with "(official ...)" for the official choices."""
    return f"{value} ({OFFICIAL[value]})" if value in OFFICIAL else value


def request_from_form(
    dataset: str | None,
    checkpoint: str | None,
    from_scratch: bool,
    variant: str | None,
    aux: bool,
    epochs: float,
    img: float,
    batch: float,
    recipe: str | None,
    name: str | None,
    assign: str | None = DEFAULT_ASSIGN,
    assign_bound: float | None = None,
    aux_wiring: str | None = AUX_WIRINGS[0],
) -> dict[str, Any]:
    """The ``TrainRequest`` fields for the Fine-tune form / ``/start_training`` inputs (numbers may come as floats).

    ``checkpoint`` ``"scratch"`` or empty, or ``from_scratch``: train ``variant`` from scratch. Without the
    auxiliary head the assignment options are left at their defaults (the form keeps them but greys them out);
    ``assign_bound`` counts only for ``coarse-to-fine-bounded`` (empty: ``core.loss.DEFAULT_BOUND``).
    """
    ckpt = (checkpoint or "").strip()
    scratch = bool(from_scratch) or ckpt in ("", SCRATCH)

    def whole(value: Any, what: str) -> int:
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ValueError(f"{what} must be a whole number, got {value!r}")
        return int(f)

    strategy = (assign or DEFAULT_ASSIGN).strip()
    wiring = (aux_wiring or AUX_WIRINGS[0]).strip()
    bound: float | None = None
    if strategy == BOUNDED and assign_bound not in (None, ""):
        try:
            bound = float(assign_bound)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"the bound must be a number >= 0, got {assign_bound!r}") from None
    out: dict[str, Any] = {
        "dataset": (dataset or "demo").strip(),
        "checkpoint": None if scratch else ckpt,
        "variant": (variant or "yolov7-tiny").strip(),
        "aux": bool(aux),
        "epochs": whole(epochs, "epochs"),
        "img": whole(img, "image size"),
        "batch": whole(batch, "batch"),
        "recipe": (recipe or "small-data").strip(),
        "name": (name or "").strip() or None,
    }
    if aux:  # only what differs from the defaults: the request reads like one from before these options
        if strategy != DEFAULT_ASSIGN:
            out["assign"] = strategy
        if bound is not None:
            out["assign_bound"] = bound
        if wiring != AUX_WIRINGS[0]:
            out["aux_wiring"] = wiring
    return out


def train_image_count(ws: Workspace, cache: ModelCache, dataset: str | None) -> int | None:
    """The number of training images of a workspace dataset (read once, shared through the model cache); None
    when the dataset cannot be read (the Data tab says why)."""
    from core.data import load_dataset

    try:
        entry = ws.dataset(dataset)
        ds = cache.get(("dataset", *file_key(entry.path)), lambda: load_dataset(entry.path))
        return len(ds.split("train"))
    except Exception:  # noqa: BLE001 - an unreadable dataset only means no suggestion
        return None


def start_suggestion(n_train: int | None, from_scratch: bool) -> str:
    """A warning line before a from-scratch run on a small dataset ("" when it does not apply)."""
    if not from_scratch or n_train is None or n_train >= SMALL_DATASET_IMAGES:
        return ""
    return (
        "**Suggestion:** start from a checkpoint: the demo checkpoint or an uploaded official yolov7-tiny.pt (either "
        f"transfers to your classes). From scratch, {n_train} training images reach only low accuracy in few epochs "
        "(about 200 images: test mAP50 0.07 after 12 epochs)."
    )


def suggestion_for_form(
    ws: Workspace, cache: ModelCache, dataset: str | None, checkpoint: str | None, from_scratch: bool
) -> str:
    """:func:`start_suggestion` for the form's choices; the dataset is read only for a from-scratch run."""
    scratch = bool(from_scratch) or (checkpoint or "").strip() in ("", SCRATCH)
    if not scratch:
        return ""
    return start_suggestion(train_image_count(ws, cache, dataset), True)


def queue_markdown(jobs: list[dict[str, Any]]) -> str:
    """The running job and the queue with positions, as Markdown."""
    active = [j for j in jobs if j["state"] in ("starting", "running")]
    queued = sorted((j for j in jobs if j["state"] == "queued"), key=lambda j: j["queue_position"])
    lines = [f"**training now:** {', '.join(j['name'] for j in active) or 'nothing'}"]
    if queued:
        lines.append("**queue:** " + ", ".join(f"{j['queue_position']}. {j['name']}" for j in queued))
    return "  \n".join(lines)
