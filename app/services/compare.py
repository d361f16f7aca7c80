"""Model comparison for the studio's Compare tab and ``/compare`` endpoint: plain data in, plain data out.

Every (checkpoint, form) pair is evaluated on one dataset split with :func:`core.eval.evaluate` (pycocotools
mAP50 and mAP50-95, overall and per class), profiled (parameters; GFLOPs at its image size, the paper's counting,
:mod:`core.models.profile`), timed on this machine (median of a few predictor calls on the same image, through
the same shared predictors as ``/detect``) and run on that image for a side-by-side picture. Evaluations and
profiles are cached in memory and under ``<workspace>/cache/compare`` per (checkpoint file, form, dataset file,
split, image size), so asking again is instant and survives a restart.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from app.modelcache import ModelCache, file_key
from app.services import detect as det_svc
from app.workspace import Workspace, WorkspaceError
from core.inference import draw_detections

COMPARE_FORMS: dict[str, str] = {"training": "training form", "deploy": "deploy form (re-parameterized)"}
EVAL_BATCH_SIZE = 8
DEFAULT_LATENCY_RUNS = 5
SUMMARY_HEADERS = [
    "model", "form", "backend", "params (M)", "GFLOPs", "img", "mAP50", "mAP50-95", "latency ms", "detections",
]  # fmt: skip

Progress = Callable[[float, str], None]
_memo: dict[str, dict[str, Any]] = {}
_memo_lock = threading.Lock()


class CompareError(ValueError):
    """A comparison request that cannot be served; the message says which input and why."""


@dataclass
class CompareOutput:
    """Everything one ``/compare`` request produced."""

    models: list[dict[str, Any]]  # one record per (checkpoint, form): metrics, profile, latency
    summary_rows: list[list[Any]]  # SUMMARY_HEADERS
    class_headers: list[str]
    class_rows: list[list[Any]]  # per class: AP50-95 and AP50 of every model
    figure: Any  # plotly figure: per-class AP per model
    images: list[tuple[Image.Image, str]]  # predictions of each model on the same image, with captions
    record: dict[str, Any]
    summary: str
    notes: list[str] = field(default_factory=list)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text and text not in out:
            out.append(text)
    return out


def load_dataset_cached(ws: Workspace, cache: ModelCache, ident: str | None) -> tuple[Any, Any]:
    """(workspace entry, ``core.data`` dataset) of a dataset id, read once and shared through the cache."""
    from core.data import load_dataset

    try:
        entry = ws.dataset(ident)
    except WorkspaceError as exc:
        raise CompareError(str(exc)) from None

    def build() -> Any:
        try:
            return load_dataset(entry.path)
        except Exception as exc:  # bad data is a message, never a crash
            raise CompareError(f"dataset {entry.id}: cannot be read ({exc})") from None

    return entry, cache.get(("dataset", *file_key(entry.path)), build)


def split_choices(ws: Workspace, cache: ModelCache, ident: str | None) -> list[str]:
    """Split names of a dataset, the test split first when there is one (what a comparison should use)."""
    _, dataset = load_dataset_cached(ws, cache, ident)
    names = list(dataset.split_names)
    return sorted(names, key=lambda s: (s != "test", s != "val", names.index(s)))


# -- the cached pieces -----------------------------------------------------------------------------------------
def _cache_file(ws: Workspace, key: tuple[Any, ...]) -> Path:
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:20]
    return ws.root / "cache" / "compare" / f"{digest}.json"


def _cached(ws: Workspace, key: tuple[Any, ...], compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """(result, whether it came from the cache) for a JSON-able result of ``compute``."""
    path = _cache_file(ws, key)
    with _memo_lock:
        if path.name in _memo:
            return _memo[path.name], True
    try:
        value = json.loads(path.read_text())
        if value.get("key") == repr(key):
            with _memo_lock:
                _memo[path.name] = value
            return value, True
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        pass
    value = compute()
    value["key"] = repr(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".compare.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)
    with _memo_lock:
        _memo[path.name] = value
    return value, False


def _form_model(loaded: Any, form: str) -> Any:
    """A private copy of the checkpoint's network in ``form`` (the cached model is shared and never changed)."""
    from core.models import reparameterize

    model = reparameterize(loaded.model) if form == "deploy" else copy.deepcopy(loaded.model)
    return model.float().cpu().eval()


def evaluate_model(
    ws: Workspace,
    cache: ModelCache,
    checkpoint: str,
    form: str,
    dataset: str | None,
    split: str,
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    show_progress: bool = False,
) -> tuple[dict[str, Any], bool]:
    """pycocotools metrics of a checkpoint in ``form`` on a split, with parameters and GFLOPs; cached.

    Returns (record, from_cache). The record holds ``map50``, ``map``, ``per_class_ap50``, ``per_class_ap``
    (class name -> AP), ``stats`` (the 12 COCO numbers), ``params``, ``gflops``, ``img_size``, ``num_images``,
    ``num_boxes``, ``eval_s``. ``show_progress``: a tqdm bar over the batches (the studio shows it).
    """
    from core.eval import evaluate
    from core.models import count_gflops, count_params

    if form not in COMPARE_FORMS:
        raise CompareError(f"unknown form {form!r}: use one of {', '.join(COMPARE_FORMS)}")
    try:
        entry, loaded, img_size = det_svc.resolve_checkpoint(ws, cache, checkpoint)
    except det_svc.DetectError as exc:
        raise CompareError(str(exc)) from None
    ds_entry, data = load_dataset_cached(ws, cache, dataset)
    if split not in data.split_names:
        raise CompareError(
            f"dataset {ds_entry.id} has no split {split!r}; its splits: {', '.join(data.split_names) or 'none'}"
        )
    model_names, data_names = list(loaded.model.names), list(data.class_names)
    if len(model_names) != len(data_names):
        raise CompareError(
            f"{entry.id}: the model has {len(model_names)} classes ({', '.join(model_names)}), dataset "
            f"{ds_entry.id} has {len(data_names)} ({', '.join(data_names)}); compare on a dataset with its classes"
        )
    key = ("eval", *file_key(entry.path), form, *file_key(ds_entry.path), split, img_size, batch_size)

    def compute() -> dict[str, Any]:
        model = _form_model(loaded, form)
        params = count_params(model)
        gflops = count_gflops(model, img_size, aux=False)
        t0 = time.perf_counter()
        result = evaluate(
            model, data, split, img_size=img_size, batch_size=batch_size, fuse=False, progress=show_progress
        )
        coco = result.coco
        return {
            "checkpoint": entry.id,
            "form": form,
            "dataset": ds_entry.id,
            "split": split,
            "img_size": img_size,
            "params": int(params),
            "gflops": float(gflops),
            "map50": float(coco.map50),
            "map": float(coco.map),
            "per_class_ap50": {k: float(v) for k, v in coco.per_class_ap50.items()},
            "per_class_ap": {k: float(v) for k, v in coco.per_class_ap.items()},
            "stats": {k: float(v) for k, v in coco.stats.items()},
            "class_names": list(result.class_names),
            "num_images": int(result.num_images),
            "num_boxes": int(result.num_boxes),
            "eval_s": round(time.perf_counter() - t0, 2),
        }

    return _cached(ws, key, compute)


def measure_latency(
    predictor: Any, image: Any, runs: int = DEFAULT_LATENCY_RUNS, **nms: Any
) -> tuple[list[float], Any]:
    """Wall milliseconds of ``runs`` predictor calls on one image after a warm-up call; (times, last result)."""
    result = predictor(image, **nms)  # warm-up (first-call allocations, oneDNN kernel selection)
    times = []
    for _ in range(max(1, int(runs))):
        t0 = time.perf_counter()
        result = predictor(image, **nms)
        times.append(1000 * (time.perf_counter() - t0))
    return times, result


# -- the request -----------------------------------------------------------------------------------------------
def compare(
    ws: Workspace,
    cache: ModelCache,
    checkpoints: Sequence[str] | str,
    *,
    forms: Sequence[str] | str = ("deploy",),
    dataset: str | None = "demo",
    split: str | None = "test",
    image: Any = None,
    image_index: int = 0,
    runs: int = DEFAULT_LATENCY_RUNS,
    conf: float = det_svc.DEFAULT_CONF,
    iou: float = det_svc.DEFAULT_IOU,
    progress: Progress | None = None,
) -> CompareOutput:
    """Compare every checkpoint in every form on ``dataset``/``split`` (see the module docstring).

    ``image``: the picture for latency and the side-by-side predictions (a path, PIL image or RGB array);
    default: image ``image_index`` of the split.
    """
    ckpts, form_list = _as_list(checkpoints), _as_list(forms) or ["deploy"]
    if not ckpts:
        raise CompareError("no model: pick at least one checkpoint (two or more to compare)")
    for form in form_list:
        if form not in COMPARE_FORMS:
            raise CompareError(f"unknown form {form!r}: use one of {', '.join(COMPARE_FORMS)}")
    pairs = [(c, f) for c in ckpts for f in form_list]
    ds_entry, data = load_dataset_cached(ws, cache, dataset)
    split = (split or "").strip() or split_choices(ws, cache, dataset)[0]
    if split not in data.split_names:
        raise CompareError(f"dataset {ds_entry.id} has no split {split!r}; its splits: {', '.join(data.split_names)}")
    records = data.split(split)
    if image is None:
        if not records:
            raise CompareError(f"dataset {ds_entry.id}: split {split!r} has no images")
        index = min(max(0, int(image_index)), len(records) - 1)
        picture = det_svc.load_image(str(records[index].path))
    else:
        picture = det_svc.load_image(image)
    report = progress or (lambda _f, _m: None)
    steps = 3 * len(pairs)
    models: list[dict[str, Any]] = []
    images: list[tuple[Image.Image, str]] = []
    notes: list[str] = []
    for k, (ckpt, form) in enumerate(pairs):
        label = f"{ckpt} ({form})"
        report(3 * k / steps, f"{label}: evaluating on {ds_entry.id}/{split} ({len(records)} images)")
        metrics, hit = evaluate_model(ws, cache, ckpt, form, ds_entry.id, split, show_progress=progress is not None)
        if metrics["class_names"] != list(data.class_names):
            notes.append(f"{label}: evaluated with the dataset's class order {metrics['class_names']}")
        report((3 * k + 1) / steps, f"{label}: timing {runs} runs on {picture.name}")
        try:
            predictor = det_svc.get_predictor(ws, cache, ckpt, form)
        except det_svc.DetectError as exc:
            raise CompareError(str(exc)) from None
        times, result = measure_latency(predictor, [picture], runs, conf=conf, iou=iou)
        dets = result[0]
        latency = statistics.median(times)
        report((3 * k + 2) / steps, f"{label}: drawing")
        models.append(
            {
                "label": label,
                **{k2: v for k2, v in metrics.items() if k2 != "key"},
                "cached": hit,
                "latency_ms": round(latency, 2),
                "latency_runs_ms": [round(t, 2) for t in times],
                "backend": det_svc.backend_name(predictor),
                "detections": detections_json(dets, picture.name),
            }
        )
        caption = f"{label}: {len(dets)} detections, {latency:.1f} ms, mAP50-95 {metrics['map']:.3f}"
        images.append((draw_detections(picture.array, dets), caption))
    report(1.0, "done")
    summary_rows = [
        [
            m["checkpoint"],
            m["form"],
            m["backend"],
            round(m["params"] / 1e6, 3),
            float(f"{m['gflops']:.3g}"),
            m["img_size"],
            round(m["map50"], 4),
            round(m["map"], 4),
            m["latency_ms"],
            len(m["detections"]["detections"]),
        ]
        for m in models
    ]
    class_names = list(data.class_names)
    class_headers = ["class"] + [f"{m['label']} AP50-95" for m in models] + [f"{m['label']} AP50" for m in models]
    class_rows = [
        [name]
        + [round(m["per_class_ap"].get(name, float("nan")), 4) for m in models]
        + [round(m["per_class_ap50"].get(name, float("nan")), 4) for m in models]
        for name in class_names
    ]
    best = max(models, key=lambda m: m["map"])
    summary = (
        f"{len(models)} model{'s' if len(models) != 1 else ''} on **{ds_entry.id} / {split}** "
        f"({models[0]['num_images']} images, {models[0]['num_boxes']} boxes; pycocotools). Best mAP50-95: "
        f"**{best['label']}** {best['map']:.3f}. Latency: median of {runs} runs on {picture.name} "
        f"({picture.shape[1]}x{picture.shape[0]}) on this machine."
    )
    record = {
        "dataset": ds_entry.id,
        "split": split,
        "image": picture.name,
        "latency_runs": int(runs),
        "settings": {"conf": conf, "iou": iou},
        "models": models,
    }
    return CompareOutput(
        models, summary_rows, class_headers, class_rows, ap_figure(models, class_names), images, record, summary, notes
    )


def detections_json(dets: Any, name: str) -> dict[str, Any]:
    """A detection list as the same JSON as ``/detect`` (one image)."""
    doc = dets.to_json()
    doc["source"] = name
    return doc


def ap_figure(models: list[dict[str, Any]], class_names: list[str]) -> Any:
    """Grouped bars: AP50-95 (top) and AP50 (bottom) per class and overall, one colour per model."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=("AP50-95", "AP50"))
    xs = ["all (mAP)", *class_names]
    palette = ["#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#06b6d4", "#a855f7", "#84cc16", "#64748b"]
    for i, m in enumerate(models):
        color = palette[i % len(palette)]
        for row, (overall, per) in enumerate((("map", "per_class_ap"), ("map50", "per_class_ap50")), start=1):
            ys = [m[overall], *(m[per].get(c, float("nan")) for c in class_names)]
            fig.add_trace(
                go.Bar(
                    x=xs,
                    y=ys,
                    name=m["label"],
                    marker_color=color,
                    legendgroup=m["label"],
                    showlegend=row == 1,
                    hovertemplate="%{x}: %{y:.3f}<extra>" + m["label"] + "</extra>",
                ),
                row=row,
                col=1,
            )
    fig.update_layout(
        barmode="group",
        height=520,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.12},
        template="plotly_white",
    )
    top = max([0.0, *(t for tr in fig.data for t in tr.y if t == t)])  # NaN-safe
    # the full [0, 1] scale once a model has learned something; a zoomed one for (nearly) untrained models
    fig.update_yaxes(range=[0, 1] if top > 0.25 else [0, max(top * 1.15, 1e-3)], title_text="AP")
    return fig
