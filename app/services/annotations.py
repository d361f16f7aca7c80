"""Label editing for the studio's Annotate tab: load and save one image's boxes in the dataset's own format.

Plain functions (no Gradio). Boxes travel as dicts ``{"xmin", "ymin", "xmax", "ymax", "label"}`` in original image
pixels (``label`` = class *name*, so new classes can be typed in); predictions add ``"score"``.

Safety:
* saves go back in the dataset's format (YOLO ``.txt``, VOC ``.xml``, COCO ``.json``), written to a temp file and
  ``os.replace``d;
* every save and undo is a snapshot under ``<dataset>/.yolov7-studio/history/<image>/<n>.json`` (the first save also
  keeps the original), each with its parent, so an undo is a move to the parent and nothing is ever deleted;
* each load returns a ``token`` (hash of the image's label content); a save or undo with a stale token is refused
  with :class:`ConflictError` (another tab changed the labels since this one opened them).

Model pre-labels live apart from the labels (``.yolov7-studio/prelabels/``) until a user saves them; per-image state
(``labelled`` / ``pre-labelled`` / ``untouched``) and the boxes changed since the last fine-tune are kept in
``.yolov7-studio/state/annotate.json``. The writer lives in :mod:`app.services.label_files`.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from app.modelcache import ModelCache
from app.services import label_files as lf
from app.services.label_files import AnnotationError
from app.workspace import Workspace, WorkspaceError, safe_name

STUDIO_DIR = ".yolov7-studio"
STATES = ("labelled", "pre-labelled", "untouched")
PREDICTION_COLOR = (160, 160, 160)  # untouched model boxes are grey in the annotator until saved
VAL_FRACTION = 0.2  # fixed validation split of a dataset made from unlabelled images

__all__ = [
    "AnnotationError",
    "ConflictError",
    "add_class",
    "counts",
    "create_dataset",
    "list_images",
    "load_annotation",
    "prelabel",
    "prelabel_rest",
    "rename_class",
    "save_annotation",
    "start_finetune",
    "undo",
]


class ConflictError(AnnotationError):
    """A save based on labels that changed since they were loaded."""


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(root: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(root), threading.Lock())


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def _key_dir(key: str) -> str:
    """A flat, safe folder name for an image key (keys hold slashes)."""
    return f"{safe_name(key.replace('/', '__'), 'image')}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


# -- datasets -----------------------------------------------------------------------------------------------------
def open_dataset(ws: Workspace, ident: str | None) -> lf.LabelSource:
    """The label source of a workspace dataset (format, root, images); errors name the dataset."""
    try:
        entry = ws.dataset(ident)
    except WorkspaceError as exc:
        raise AnnotationError(str(exc)) from None
    return lf.open_source(entry.path)


def _studio(src: lf.LabelSource) -> Path:
    return src.root / STUDIO_DIR


def _state_file(src: lf.LabelSource) -> Path:
    return _studio(src) / "state" / "annotate.json"


def _load_state(src: lf.LabelSource) -> dict[str, Any]:
    state = _read_json(_state_file(src), {})
    state.setdefault("images", {})
    state.setdefault("changed_since_run", 0)
    state.setdefault("runs", [])
    return state


def _save_state(src: lf.LabelSource, state: dict[str, Any]) -> None:
    lf.atomic_write_text(_state_file(src), json.dumps(state, indent=1))


def _prelabel_file(src: lf.LabelSource, key: str) -> Path:
    return _studio(src) / "prelabels" / f"{_key_dir(key)}.json"


def image_state(src: lf.LabelSource, state: dict[str, Any], key: str) -> str:
    recorded = state["images"].get(key, {}).get("state")
    if recorded in STATES:
        return recorded
    if src.has_labels(key):
        return "labelled"
    return "pre-labelled" if _prelabel_file(src, key).is_file() else "untouched"


def list_images(ws: Workspace, dataset: str | None, state_filter: str = "all") -> list[dict[str, Any]]:
    """Images of a dataset with their state: ``[{key, split, state, file}]`` (``state_filter``: a state or all)."""
    src = open_dataset(ws, dataset)
    state = _load_state(src)
    rows = []
    for rec in src.images:
        st = image_state(src, state, rec.key)
        if state_filter in (None, "", "all") or st == state_filter:
            rows.append({"key": rec.key, "split": rec.split, "state": st, "file": rec.path.name})
    return rows


def counts(ws: Workspace, dataset: str | None) -> dict[str, Any]:
    """Labelled / pre-labelled / untouched image counts, boxes changed since the last fine-tune, and the runs."""
    src = open_dataset(ws, dataset)
    state = _load_state(src)
    per = {s: 0 for s in STATES}
    for rec in src.images:
        per[image_state(src, state, rec.key)] += 1
    return {**per, "images": len(src.images), "changed_since_run": int(state["changed_since_run"]),
            "runs": list(state["runs"])}  # fmt: skip


# -- one image ------------------------------------------------------------------------------------------------------
def _history_dir(src: lf.LabelSource, key: str) -> Path:
    return _studio(src) / "history" / _key_dir(key)


def _history(src: lf.LabelSource, key: str) -> tuple[list[Path], dict[str, Any]]:
    d = _history_dir(src, key)
    snaps = sorted(d.glob("[0-9]*.json"), key=lambda p: int(p.stem)) if d.is_dir() else []
    return snaps, _read_json(d / "head.json", {})


def _snapshot(src: lf.LabelSource, key: str, content: Any, parent: int | None, source: str) -> int:
    snaps, _ = _history(src, key)
    n = int(snaps[-1].stem) + 1 if snaps else 0
    d = _history_dir(src, key)
    record = {"n": n, "parent": parent, "time": time.time(), "source": source, "key": key, "format": src.format,
              "token": lf.token_of(content), "content": content}  # fmt: skip
    lf.atomic_write_text(d / f"{n}.json", json.dumps(record))
    lf.atomic_write_text(d / "head.json", json.dumps({"head": n}))
    return n


def _check_token(src: lf.LabelSource, key: str, token: str | None) -> Any:
    content = src.read_content(key)
    current = lf.token_of(content)
    if token is not None and token != current:
        raise ConflictError(
            f"{key}: the labels were changed in another tab since you opened them; reload the image "
            "(nothing was saved, your edit is still in the editor)"
        )
    return content


def _box_dicts(boxes: np.ndarray, classes: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    out = []
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), classes.tolist()):
        label = names[c] if 0 <= c < len(names) else str(c)
        out.append({"xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2, "label": label})
    return out


def load_annotation(ws: Workspace, dataset: str | None, key: str) -> dict[str, Any]:
    """One image's labels, pending model boxes, token and history (plain data; see the module docstring)."""
    src = open_dataset(ws, dataset)
    rec = src.record(key)
    names = src.class_names()
    boxes, classes = src.read_boxes(key, names)
    snaps, head = _history(src, key)
    pre = _read_json(_prelabel_file(src, key), {})
    state = _load_state(src)
    return {
        "dataset": dataset or "demo",
        "key": key,
        "image": str(rec.path),
        "width": rec.width,
        "height": rec.height,
        "split": rec.split,
        "format": src.format,
        "label_file": str(src.label_path(key)),
        "classes": names,
        "boxes": _box_dicts(boxes, classes, names),
        "predictions": list(pre.get("boxes") or []),
        "prediction_checkpoint": pre.get("checkpoint"),
        "token": lf.token_of(src.read_content(key)),
        "state": image_state(src, state, key),
        "version": head.get("head"),
        "versions": len(snaps),
        "can_undo": _parent_of(src, key) is not None,
    }


def _parent_of(src: lf.LabelSource, key: str) -> int | None:
    snaps, head = _history(src, key)
    if not snaps or head.get("head") is None:
        return None
    rec = _read_json(_history_dir(src, key) / f"{head['head']}.json", {})
    return rec.get("parent")


def _parse_boxes(boxes: Iterable[Any], width: int, height: int, key: str) -> list[tuple[list[float], str]]:
    out = []
    for k, b in enumerate(boxes or []):
        try:
            if isinstance(b, dict):
                coords = [float(b[t]) for t in ("xmin", "ymin", "xmax", "ymax")]
                label = str(b.get("label") or "").strip()
            else:
                coords, label = [float(v) for v in b[:4]], str(b[4]).strip()
        except (KeyError, TypeError, ValueError, IndexError):
            raise AnnotationError(f"{key}: box {k} is not {{xmin, ymin, xmax, ymax, label}}: {b!r:.120}") from None
        if not np.all(np.isfinite(coords)):
            raise AnnotationError(f"{key}: box {k} has a non-finite coordinate")
        if not label:
            raise AnnotationError(f"{key}: box {k} has no class; pick one before saving")
        x1, x2 = sorted((min(max(coords[0], 0.0), width), min(max(coords[2], 0.0), width)))
        y1, y2 = sorted((min(max(coords[1], 0.0), height), min(max(coords[3], 0.0), height)))
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise AnnotationError(f"{key}: box {k} ({label}) is smaller than 1 pixel inside the image")
        out.append(([x1, y1, x2, y2], label))
    return out


def _changed_boxes(old: list[dict[str, Any]], new: list[tuple[list[float], str]]) -> int:
    """Boxes added, removed, moved (IoU < 0.95) or relabelled between two versions."""
    unmatched = list(range(len(old)))
    changed = 0
    for coords, label in new:
        hit = None
        for i in unmatched:
            o = old[i]
            if o["label"] == label and _iou(coords, [o["xmin"], o["ymin"], o["xmax"], o["ymax"]]) >= 0.95:
                hit = i
                break
        if hit is None:
            changed += 1
        else:
            unmatched.remove(hit)
    return changed + len(unmatched)


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def save_annotation(
    ws: Workspace, dataset: str | None, key: str, boxes: Iterable[Any], token: str | None
) -> dict[str, Any]:
    """Write the image's boxes in the dataset's format (new class names are added); returns the fresh load.

    ``token``: what :func:`load_annotation` returned; a different current token raises :class:`ConflictError`
    (``None`` skips the check, for scripts that own the dataset).
    """
    src = open_dataset(ws, dataset)
    rec = src.record(key)
    parsed = _parse_boxes(boxes, rec.width, rec.height, key)
    with _lock(src.root):
        before = _check_token(src, key, token)
        names = src.class_names()
        old_boxes, old_classes = src.read_boxes(key, names)
        new_names = [label for _, label in parsed if label not in names]
        for name in dict.fromkeys(new_names):
            src.add_class(name)
            names.append(name)
        snaps, head = _history(src, key)
        parent = head.get("head")
        if not snaps:
            parent = _snapshot(src, key, before, None, "original")
        coords = np.asarray([c for c, _ in parsed], dtype=np.float64).reshape(-1, 4)
        cls = np.asarray([names.index(label) for _, label in parsed], dtype=np.int64)
        src.write_boxes(key, coords, cls, names)
        _snapshot(src, key, src.read_content(key), parent, "save")
        _prelabel_file(src, key).unlink(missing_ok=True)  # the user decided about every model box
        state = _load_state(src)
        changed = _changed_boxes(_box_dicts(old_boxes, old_classes, names), parsed)
        entry = state["images"].setdefault(key, {})
        entry["state"] = "labelled"
        entry["changed"] = int(entry.get("changed", 0)) + changed
        state["changed_since_run"] = int(state["changed_since_run"]) + changed
        _save_state(src, state)
    return load_annotation(ws, dataset, key)


def undo(ws: Workspace, dataset: str | None, key: str, token: str | None) -> dict[str, Any]:
    """Restore the previous version of the image's labels (the current one stays in the history)."""
    src = open_dataset(ws, dataset)
    src.record(key)
    with _lock(src.root):
        _check_token(src, key, token)
        parent = _parent_of(src, key)
        if parent is None:
            raise AnnotationError(f"{key}: nothing to undo (no earlier version saved in the studio)")
        snap = _read_json(_history_dir(src, key) / f"{parent}.json", None)
        if snap is None:
            raise AnnotationError(f"{key}: version {parent} of the history is unreadable")
        src.write_content(key, snap["content"])
        grandparent = snap.get("parent")
        _snapshot(src, key, src.read_content(key), grandparent, f"undo to {parent}")
    return load_annotation(ws, dataset, key)


# -- classes ----------------------------------------------------------------------------------------------------------
def add_class(ws: Workspace, dataset: str | None, name: str) -> list[str]:
    """Append a class to the dataset's class list; returns the list."""
    name = (name or "").strip()
    if not name:
        raise AnnotationError("a class needs a name")
    src = open_dataset(ws, dataset)
    with _lock(src.root):
        if name in src.class_names():
            raise AnnotationError(f"class {name!r} already exists")
        src.add_class(name)
    return src.class_names()


def rename_class(ws: Workspace, dataset: str | None, old: str, new: str) -> list[str]:
    """Rename a class everywhere it is stored (data.yaml names / every VOC xml / COCO categories)."""
    new = (new or "").strip()
    src = open_dataset(ws, dataset)
    with _lock(src.root):
        names = src.class_names()
        if old not in names:
            raise AnnotationError(f"no class {old!r}; classes: {', '.join(names)}")
        if not new or new in names:
            raise AnnotationError(f"cannot rename {old!r} to {new!r}: empty or already a class")
        src.rename_class(old, new)
    return src.class_names()


# -- a dataset from unlabelled images -------------------------------------------------------------------------------
def create_dataset(
    ws: Workspace, files: Iterable[str | Path], name: str = "", classes: Iterable[str] = ()
) -> dict[str, Any]:
    """Make a YOLO-layout dataset from uploaded images and/or zips of images (no labels yet).

    A fixed seeded 80/20 train/val split is made (the val split is what every fine-tune run is measured on).
    Returns ``{"id", "images", "skipped"}``; unreadable files are skipped and named.
    """
    from core.data import UnsafeArchiveError, safe_extract

    files = [Path(f) for f in files or []]
    if not files:
        raise AnnotationError("upload images or a zip of images")
    out = ws.new_dataset_dir(name or (files[0].stem if len(files) == 1 else "images"))
    staging = Path(tempfile.mkdtemp(prefix="annotate.", dir=ws.tmp_dir))
    images: list[Path] = []
    skipped: list[str] = []
    try:
        for f in files:
            if f.suffix.lower() == ".zip":
                try:
                    target = safe_extract(f, staging / safe_name(f.stem))
                except (UnsafeArchiveError, OSError, ValueError) as exc:
                    raise AnnotationError(f"{f.name}: {exc}") from None
                images += sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in lf.IMAGE_SUFFIXES)
            elif f.suffix.lower() in lf.IMAGE_SUFFIXES:
                images.append(f)
            else:
                skipped.append(f"{f.name}: not an image or a zip")
        kept: list[tuple[Path, str]] = []
        used: set[str] = set()
        for img in images:
            if not _readable(img):
                skipped.append(f"{img.name}: not a readable image")
                continue
            stem = safe_name(img.stem, "image")
            base, i = stem, 1
            while stem in used:
                i += 1
                stem = f"{base}_{i}"
            used.add(stem)
            kept.append((img, stem + img.suffix.lower()))
        if not kept:
            shutil.rmtree(out, ignore_errors=True)
            raise AnnotationError(
                "no readable images in the upload" + (f" ({'; '.join(skipped[:5])})" if skipped else "")
            )
        order = list(range(len(kept)))
        random.Random(0).shuffle(order)
        n_val = max(1, round(VAL_FRACTION * len(kept))) if len(kept) > 1 else 0
        val = set(order[:n_val])
        for k, (img, fname) in enumerate(kept):
            split = "val" if k in val else "train"
            dest = out / "images" / split / fname
            dest.parent.mkdir(parents=True, exist_ok=True)
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(img, dest)
        lf.write_data_yaml(out / "data.yaml", [c.strip() for c in classes if c and c.strip()], ("train", "val"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    lf.forget(out)
    return {"id": f"upload:{out.name}", "images": len(kept), "skipped": skipped}


def _readable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:
        return False


# -- model-assisted labelling ----------------------------------------------------------------------------------------
def _predictor(ws: Workspace, cache: ModelCache, checkpoint: str | None) -> Any:
    from app.services.detect import DetectError, get_predictor

    try:
        return get_predictor(ws, cache, checkpoint, "deploy")
    except DetectError as exc:
        raise AnnotationError(str(exc)) from None


def predict_boxes(predictor: Any, image: Path, conf: float) -> list[dict[str, Any]]:
    """The predictor's boxes for one image as annotator dicts (label = the model's class name, plus score)."""
    det = predictor([str(image)], conf=float(conf))[0]
    out = []
    for (x1, y1, x2, y2), s, name in zip(det.boxes.tolist(), det.scores.tolist(), det.names):
        out.append({"xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2, "label": name, "score": round(float(s), 4)})
    return out


def prelabel(
    ws: Workspace, cache: ModelCache, dataset: str | None, key: str, checkpoint: str | None, conf: float = 0.25
) -> dict[str, Any]:
    """Pre-fill one image with a checkpoint's boxes (kept apart from the labels until saved); returns the load."""
    if not 0.0 < float(conf) < 1.0:
        raise AnnotationError(f"confidence threshold must be in (0, 1), got {conf}")
    src = open_dataset(ws, dataset)
    rec = src.record(key)
    predictor = _predictor(ws, cache, checkpoint)
    boxes = predict_boxes(predictor, rec.path, conf)
    _store_prelabels(src, key, boxes, checkpoint, conf)
    return load_annotation(ws, dataset, key)


def _store_prelabels(src: lf.LabelSource, key: str, boxes: list[dict[str, Any]], checkpoint: Any, conf: float) -> None:
    record = {"checkpoint": checkpoint or "demo", "conf": float(conf), "time": time.time(), "boxes": boxes}
    lf.atomic_write_text(_prelabel_file(src, key), json.dumps(record))
    with _lock(src.root):
        state = _load_state(src)
        if image_state(src, state, key) != "labelled":
            state["images"].setdefault(key, {})["state"] = "pre-labelled"
            _save_state(src, state)


def prelabel_rest(
    ws: Workspace,
    cache: ModelCache,
    dataset: str | None,
    checkpoint: str | None,
    conf: float = 0.25,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Pre-label every image that is not labelled (pre-labels of earlier models are replaced)."""
    src = open_dataset(ws, dataset)
    predictor = _predictor(ws, cache, checkpoint)
    state = _load_state(src)
    todo = [r for r in src.images if image_state(src, state, r.key) != "labelled"]
    for k, rec in enumerate(todo):
        if progress:
            progress(k / max(1, len(todo)), f"pre-labelling {rec.path.name}")
        _store_prelabels(src, rec.key, predict_boxes(predictor, rec.path, conf), checkpoint, conf)
    return {"prelabelled": len(todo), "checkpoint": checkpoint or "demo"}


# -- the loop: fine-tune on what is labelled -------------------------------------------------------------------------
def labelled_subset(ws: Workspace, dataset: str | None) -> dict[str, Any]:
    """Write the labelled images of a dataset as a new YOLO dataset in the workspace (what a run trains on)."""
    from core.data import write_dataset

    src = open_dataset(ws, dataset)
    state = _load_state(src)
    ds = src.dataset()
    keep = tuple(r for r in ds.images if image_state(src, state, r.key) == "labelled")
    if not keep:
        raise AnnotationError("no labelled images yet: label (and save) some images first")
    splits = {r.split for r in keep}
    if "val" not in splits and len(keep) > 1:  # a run needs a validation split: a fixed seeded fifth
        order = list(range(len(keep)))
        random.Random(0).shuffle(order)
        val = set(order[: max(1, round(VAL_FRACTION * len(keep)))])
        keep = tuple(r if k not in val else _with_split(r, "val") for k, r in enumerate(keep))
    out = ws.new_dataset_dir(f"{src.root.name}-labelled")
    out.rmdir()
    write_dataset(ds.with_images(keep), "yolo", out)
    return {"id": f"upload:{out.name}", "images": len(keep), "boxes": int(sum(r.num_boxes for r in keep))}


def _with_split(rec: Any, split: str) -> Any:
    from dataclasses import replace

    return replace(rec, split=split)


def start_finetune(ws: Workspace, jobs: Any, dataset: str | None, checkpoint: str | None, **options: Any) -> dict:
    """Start a run through the job runner on the labelled images, from ``checkpoint``; resets the change count."""
    if jobs is None:
        raise AnnotationError("the studio has no job runner")
    subset = labelled_subset(ws, dataset)
    request = {"dataset": subset["id"], "checkpoint": checkpoint or "demo", **options}
    status = jobs.start(request)
    src = open_dataset(ws, dataset)
    with _lock(src.root):
        state = _load_state(src)
        run = {"name": status.get("name"), "time": time.time(), "dataset": subset["id"], "images": subset["images"]}
        state["runs"].append({**run, "boxes_changed": int(state["changed_since_run"])})
        state["changed_since_run"] = 0
        _save_state(src, state)
    return {**status, "subset": subset}


def run_metrics(jobs: Any, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run started from the Annotate tab: state and its latest validation metrics."""
    rows = []
    for r in runs:
        row = {"run": r.get("name"), "images": r.get("images"), "boxes changed": r.get("boxes_changed")}
        try:
            st = jobs.status(r.get("name")) if jobs is not None else {}
        except Exception:
            st = {"state": "unknown"}
        row["state"] = st.get("state")
        for k, v in (st.get("metrics") or {}).items():
            if "map" in str(k).lower():
                row[k] = v
        rows.append(row)
    return rows
