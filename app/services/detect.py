"""Detection for the studio's Detect tab and ``/detect`` endpoint: plain data in, plain data out.

A request names a checkpoint by its workspace id (``demo``, ``run:<name>``, ``upload:<file>``), a form and the NMS
settings; the predictor for (checkpoint file, form, image size) is built once and shared through the studio's
:class:`app.modelcache.ModelCache` by every request thread. Every form is a :class:`core.inference.Predictor` (same
letterbox and official NMS), so the forms differ only in the network and where it runs:

* ``training``: the checkpoint's network as trained, in PyTorch (the auxiliary head is not run);
* ``deploy``: the re-parameterized deploy form on ``backend="auto"``: PyTorch on CUDA, else the fastest installed
  CPU runtime (ONNX Runtime, then OpenVINO), else PyTorch, with the reason for every runtime skipped;
* ``onnx`` / ``openvino``: the deploy form in ONNX Runtime / OpenVINO, explicitly (``openvino`` is offered only
  where OpenVINO is installed).

The runtimes run the deploy form exported to ONNX once per weights and size, cached under ``<workspace>/cache/onnx``
and checked against PyTorch when built (:mod:`core.inference.backends`). The summary, the JSON record's
``backend`` and the Compare table say which backend ran (:func:`backend_name`), read from the predictor.
The network input size is the checkpoint's training size when it stores one, else 640.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.modelcache import ModelCache, file_key, load_checkpoint_model
from app.modelcache import checkpoint_img_size as _stored_img_size
from app.workspace import CheckpointEntry, Workspace
from core.inference import (
    BackendError,
    Detections,
    ImageReadError,
    InputImage,
    Predictor,
    draw_detections,
    read_image,
)

FORMS: dict[str, str] = {
    "training": "training form (PyTorch)",
    "deploy": "deploy form, fastest backend here (auto)",
    "onnx": "deploy form in ONNX Runtime",
}
FORM_BACKENDS: dict[str, str] = {"training": "torch", "deploy": "auto", "onnx": "onnxruntime"}
if importlib.util.find_spec("openvino") is not None:  # looked up, not imported: the studio loads it only when used
    FORMS["openvino"] = "deploy form in OpenVINO"
    FORM_BACKENDS["openvino"] = "openvino"
DEFAULT_IMG_SIZE = 640
DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET = 0.25, 0.45, 300
TABLE_HEADERS = ["image", "#", "class", "score", "x1", "y1", "x2", "y2"]
KEEP_JSON_FILES = 64  # detection JSON downloads kept in <workspace>/tmp/detect

_requested: weakref.WeakKeyDictionary[Predictor, str] = weakref.WeakKeyDictionary()  # backend asked for, per predictor
_requested_lock = threading.Lock()


class DetectError(ValueError):
    """A request the Detect service cannot serve; the message names the file or setting and the problem."""


@dataclass
class DetectOutput:
    """Everything one ``/detect`` request produced."""

    annotated: list[Image.Image]  # one per image, detections drawn
    detections: list[Detections]
    names: list[str]  # display name of every image
    rows: list[list[Any]]  # the detections table (TABLE_HEADERS)
    record: dict[str, Any]  # the JSON document (settings, timing, detections per image)
    latency_ms: float  # wall time of the predictor call(s), all images
    summary: str  # one line: model, form/backend, size, detections, latency
    json_path: Path | None = None
    timing: dict[str, float] = field(default_factory=dict)


# -- checkpoints -------------------------------------------------------------------------------------------------
def checkpoint_img_size(checkpoint: dict[str, Any] | None) -> int:
    """The training image size a checkpoint stores (``train.img`` or ``train.config.img``), else 640."""
    return _stored_img_size(checkpoint, DEFAULT_IMG_SIZE)


def resolve_checkpoint(ws: Workspace, cache: ModelCache, ident: str | None) -> tuple[CheckpointEntry, Any, int]:
    """(workspace entry, :class:`core.checkpoint.io.LoadedModel` (shared, do not modify), image size)."""
    from app.workspace import WorkspaceError

    try:
        entry = ws.checkpoint(ident)
    except WorkspaceError as exc:
        raise DetectError(str(exc)) from None
    try:
        loaded = load_checkpoint_model(cache, entry.path)
    except Exception as exc:  # a file that changed on disk after it was listed: say so, never crash
        raise DetectError(f"{entry.path.name}: cannot be loaded ({exc})") from None
    return entry, loaded, checkpoint_img_size(loaded.checkpoint)


def checkpoint_classes(ws: Workspace, cache: ModelCache, ident: str | None) -> list[str]:
    """Class names of a checkpoint (for the class filter)."""
    _, loaded, _ = resolve_checkpoint(ws, cache, ident)
    return list(loaded.model.names)


def add_checkpoint(ws: Workspace, upload: str | Path, name: str | None = None) -> CheckpointEntry:
    """Add an uploaded ``.pt`` through the workspace's safe loader; a refusal is a :class:`DetectError`."""
    from app.workspace import WorkspaceError

    shown = name or Path(upload).name
    if not str(shown).lower().endswith((".pt", ".pth")):
        raise DetectError(f"{shown}: not a checkpoint (expected a .pt file)")
    try:
        return ws.add_checkpoint(upload, name=shown)
    except WorkspaceError as exc:
        raise DetectError(str(exc)) from None


# -- predictors --------------------------------------------------------------------------------------------------
def cache_dir(ws: Workspace) -> Path:
    """The workspace's cache folder: the exported graphs live in its ``onnx/`` (core's export cache)."""
    return ws.root / "cache"


def make_predictor(model: Any, form: str, img_size: int, cache_folder: str | Path | None) -> Predictor:
    """A :class:`Predictor` of ``model`` in ``form`` (:data:`FORMS`) at ``img_size``: the training form in PyTorch,
    the deploy form on :data:`FORM_BACKENDS`' backend (exported graphs cached in ``cache_folder``).

    Raises :class:`core.inference.BackendError` when an explicitly requested runtime cannot run (``auto`` falls
    back instead and says why in ``predictor.backend_notes``).
    """
    backend = FORM_BACKENDS[form]
    predictor = Predictor(model, img_size=img_size, deploy=form != "training", backend=backend, cache_dir=cache_folder)
    with _requested_lock:
        _requested[predictor] = backend
    return predictor


def get_predictor(ws: Workspace, cache: ModelCache, ident: str | None, form: str = "deploy") -> Predictor:
    """The shared predictor of checkpoint ``ident`` in ``form`` at the checkpoint's image size (built once)."""
    if form not in FORMS:
        raise DetectError(f"unknown form {form!r}: use one of {', '.join(FORMS)}")
    entry, loaded, img_size = resolve_checkpoint(ws, cache, ident)

    def build() -> Predictor:
        try:
            return make_predictor(loaded.model, form, img_size, cache_dir(ws))
        except BackendError as exc:
            raise DetectError(f"{entry.path.name}: the {form} form cannot run here: {exc}") from None

    return cache.get(("predictor", form, img_size, *file_key(entry.path)), build)


def backend_name(predictor: Predictor) -> str:
    """What ran the network, read from the predictor: ``onnxruntime (CPU, auto)``, ``openvino (CPU)``,
    ``torch (cpu fp32)``, ``torch (cuda:0 fp16, auto)``; the first word is ``predictor.backend``."""
    auto = ", auto" if _requested.get(predictor) == "auto" else ""
    if predictor.backend == "torch":
        return f"torch ({predictor.device} {predictor.precision}{auto})"
    return f"{predictor.backend} (CPU{auto})"


def auto_note(predictor: Predictor) -> str:
    """``, chosen by auto`` and what it skipped (with why) for a predictor built on ``auto``, else ``""``."""
    if _requested.get(predictor) != "auto":
        return ""
    skipped = " (skipped " + "; ".join(predictor.backend_notes) + ")" if predictor.backend_notes else ""
    return ", chosen by auto" + skipped


# -- requests ------------------------------------------------------------------------------------------------------
def class_filter(requested: Any, names: list[str]) -> list[int] | None:
    """Class indices from names or indices (a list, or a comma-separated string); empty -> ``None`` (all)."""
    if requested is None:
        return None
    items = [s.strip() for s in requested.split(",")] if isinstance(requested, str) else list(requested)
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if text in names:
            out.append(names.index(text))
        elif text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
            out.append(int(text))
        else:
            raise DetectError(f"class filter: unknown class {text!r}; this model's classes: {', '.join(names)}")
    return sorted(set(out)) or None


def load_image(item: Any, k: int = 0) -> InputImage:
    """One input (a path, a PIL image or an RGB array) as an :class:`InputImage` named by its file name."""
    if isinstance(item, InputImage):
        return item
    if isinstance(item, dict) and "path" in item:  # a gradio FileData-like dict
        item = item["path"]
    if isinstance(item, (str, Path)):
        path = Path(item)
        try:
            return InputImage(read_image(path), path.name, path)
        except ImageReadError as exc:
            raise DetectError(str(exc).replace(str(path), path.name, 1)) from None
    if isinstance(item, Image.Image):
        return InputImage(np.ascontiguousarray(np.asarray(item.convert("RGB"), dtype=np.uint8)), f"image {k + 1}")
    if isinstance(item, np.ndarray):
        from core.inference import load_inputs

        try:
            [im] = load_inputs(item if item.ndim != 4 else item[0])
        except ImageReadError as exc:
            raise DetectError(str(exc)) from None
        return InputImage(im.array, f"image {k + 1}")
    raise DetectError(f"input {k + 1}: not an image (got {type(item).__name__})")


def _check_settings(conf: float, iou: float, max_det: int) -> tuple[float, float, int]:
    try:
        conf, iou, max_det = float(conf), float(iou), int(max_det)
    except (TypeError, ValueError):
        raise DetectError(
            f"conf, IoU and max detections must be numbers (got {conf!r}, {iou!r}, {max_det!r})"
        ) from None
    if not 0.0 <= conf <= 1.0:
        raise DetectError(f"confidence threshold {conf} is outside [0, 1]")
    if not 0.0 <= iou <= 1.0:
        raise DetectError(f"IoU threshold {iou} is outside [0, 1]")
    if not 1 <= max_det <= 10000:
        raise DetectError(f"max detections {max_det} is outside [1, 10000]")
    return conf, iou, max_det


def detect(
    ws: Workspace,
    cache: ModelCache,
    images: Any,
    *,
    checkpoint: str | None = "demo",
    form: str = "deploy",
    conf: float = DEFAULT_CONF,
    iou: float = DEFAULT_IOU,
    max_det: int = DEFAULT_MAX_DET,
    classes: Any = None,
    save_json: bool = True,
) -> DetectOutput:
    """Detect objects in ``images`` (one or a list of paths / PIL images / RGB arrays) with a workspace checkpoint.

    Raises :class:`DetectError` with a message naming the file or setting for every bad input.
    """
    conf, iou, max_det = _check_settings(conf, iou, max_det)
    items = images if isinstance(images, (list, tuple)) else [images]
    items = [it for it in items if it is not None]
    if not items:
        raise DetectError("no image: upload an image or pick an example")
    inputs = [load_image(it, k) for k, it in enumerate(items)]
    form = (form or "deploy").strip().lower()
    t_load = time.perf_counter()
    predictor = get_predictor(ws, cache, checkpoint, form)
    load_s = time.perf_counter() - t_load
    entry, loaded, _ = resolve_checkpoint(ws, cache, checkpoint)
    wanted = class_filter(classes, predictor.names)
    t0 = time.perf_counter()
    result = predictor(inputs, conf=conf, iou=iou, max_det=max_det, classes=wanted)
    latency_ms = 1000 * (time.perf_counter() - t0)
    timing = dict(getattr(result, "timing", {}) or {})  # per call when the predictor returns Predictions
    dets = list(result)
    names = [im.name for im in inputs]
    rows: list[list[Any]] = []
    for name, det in zip(names, dets):
        for i, (box, score, label) in enumerate(zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist())):
            rows.append([name, i + 1, det.class_names[label], round(score, 4), *(round(v, 1) for v in box)])
    backend = backend_name(predictor)
    images_json = []
    for name, det in zip(names, dets):
        doc = det.to_json()
        doc["source"] = name
        images_json.append(doc)
    record = {
        "checkpoint": entry.id,
        "checkpoint_file": entry.path.name,
        "model": loaded.description,
        "form": form,
        "backend": backend,
        "backend_notes": list(predictor.backend_notes),
        "img_size": predictor.img_size,
        "settings": {"conf": conf, "iou": iou, "max_det": max_det, "classes": wanted},
        "class_names": list(predictor.names),
        "latency_ms": round(latency_ms, 2),
        "timing_ms": {k: round(v, 2) for k, v in timing.items() if k.endswith("_ms")},
        "images": images_json,
    }
    n = sum(len(d) for d in dets)
    per = f", {latency_ms / len(dets):.1f} ms per image" if len(dets) > 1 else ""
    network = "training form" if form == "training" else "deploy form"
    summary = (
        f"**{latency_ms:.1f} ms**{per} · {n} detection{'s' if n != 1 else ''} · {network} on "
        f"**{predictor.backend_label}**{auto_note(predictor)} · "
        f"{entry.id} ({loaded.description}) at {predictor.img_size} px"
    )
    if load_s > 0.5:
        summary += f" · model prepared in {load_s:.1f} s (first use; cached now)"
    out = DetectOutput(
        annotated=[draw_detections(im.array, det) for im, det in zip(inputs, dets)],
        detections=dets,
        names=names,
        rows=rows,
        record=record,
        latency_ms=latency_ms,
        summary=summary,
        timing=timing,
    )
    if save_json:
        out.json_path = write_json(ws, record)
    return out


def write_json(ws: Workspace, record: dict[str, Any]) -> Path:
    """Write a detection record under ``<workspace>/tmp/detect`` (the newest files are kept) for download."""
    folder = ws.tmp_dir / "detect"
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.glob("detections_*.json"), key=lambda p: p.stat().st_mtime)
    for stale in old[: max(0, len(old) - KEEP_JSON_FILES)]:
        stale.unlink(missing_ok=True)
    path = folder / f"detections_{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(record, indent=1))
    return path


def example_images(ws: Workspace, n: int = 4, split: str = "test") -> list[Path]:
    """The first ``n`` images of the demo dataset's ``split`` (the Detect and Compare tabs' examples)."""
    from core.data import load_dataset

    try:
        dataset = load_dataset(ws.dataset("demo").path)
        records = dataset.split(split) or dataset.split(dataset.split_names[0])
    except Exception:  # examples are a convenience: no demo data means no examples, never a broken page
        return []
    return [Path(r.path) for r in records[:n]]
