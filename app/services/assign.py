"""The Assignments tab's work: one image through the model and the assigner, dataset statistics, convergence.

Plain functions on plain data (tested without a browser); the tab in :mod:`app.studio.assign` only wires them.

* :func:`explore` — a dataset image (dataset id + split + index or name) or an uploaded image with an optional YOLO
  ``.txt`` / VOC ``.xml`` label file, through a checkpoint of the workspace: the :class:`core.explore.ImageExploration`,
  its interactive figure, and the per-box table (:func:`box_rows`), with the boxes that got no positive flagged.
* :func:`dataset_stats` — :func:`core.explore.assignment_stats` on a split and its figures.
* :func:`snapshot_runs` / :func:`convergence` — a run's objectness snapshots (``<run>/objectness/epoch_XXX.npz``)
  and the figure of one epoch.

Every refusal is an :class:`AssignError` whose message names the file or id and the problem.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import core.explore as explore_api
from app.modelcache import ModelCache, checkpoint_img_size, file_key, load_checkpoint_model
from app.workspace import Workspace, WorkspaceError
from core.explore import (
    STATS_FIGURES,
    AssignmentStats,
    ImageExploration,
    LabelError,
    assignment_stats,
    convergence_figure,
    exploration_figure,
    explore_image,
    load_snapshots,
    read_labels,
)
from core.inference import ImageReadError, read_image

NO_POSITIVE = "⚠ no positive"
DEFAULT_IMG_SIZE = 640
# explore_image and assignment_stats run on a per-call eval view of the shared model when core.explore exports
# ``eval_view``; an older core switched the model's train/eval mode, so then the calls take this lock
_MODE_LOCK = threading.Lock()
_THREAD_SAFE = hasattr(explore_api, "eval_view")


class AssignError(ValueError):
    """A request the Assignments tab refuses; the message names the file or id and the problem."""


@dataclass
class ModelInfo:
    """A checkpoint of the workspace, loaded (shared through the model cache: never modify ``model``)."""

    id: str
    path: Path
    model: Any
    img_size: int
    has_aux: bool
    class_names: list[str]


@dataclass
class ImageSource:
    """The image to explore: a file and its ground truth (original-pixel xyxy boxes, class ids)."""

    path: Path
    name: str
    boxes: np.ndarray
    classes: np.ndarray
    note: str = ""


@dataclass
class ExploreResult:
    """What the tab shows for one image: the figure, the per-box rows, the boxes without positives, a summary."""

    exploration: ImageExploration
    figure: Any
    rows: list[dict[str, Any]]
    no_positive: list[int]
    summary: str
    notes: list[str] = field(default_factory=list)


# -- model and dataset ------------------------------------------------------------------------------------------------
def load_model(ws: Workspace, cache: ModelCache, checkpoint: str | None) -> ModelInfo:
    """The checkpoint with this id (default: the demo), loaded once through ``cache``; its training image size."""
    try:
        entry = ws.checkpoint(checkpoint)
    except WorkspaceError as exc:
        raise AssignError(str(exc)) from None
    try:
        loaded = load_checkpoint_model(cache, entry.path)
    except Exception as exc:  # noqa: BLE001 - a foreign checkpoint is a refusal, never a crash
        raise AssignError(f"{entry.path.name}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    model = loaded.model
    if getattr(model, "deploy", False) or not hasattr(model.head, "anchors"):
        raise AssignError(f"{entry.path.name}: a deploy (fused) model; the explorer needs a training checkpoint")
    img = checkpoint_img_size(loaded.checkpoint if isinstance(loaded.checkpoint, dict) else None, DEFAULT_IMG_SIZE)
    stride = int(max(model.head.strides))
    img = max(stride, img // stride * stride)
    names = list(getattr(model, "names", [str(i) for i in range(int(model.head.nc))]))
    return ModelInfo(entry.id, entry.path, model, img, bool(getattr(model, "aux", False)), names)


def load_dataset_cached(ws: Workspace, cache: ModelCache, dataset: str | None) -> Any:
    """``core.data.load_dataset`` of a workspace dataset id (default: the demo), cached by the file's identity."""
    from core.data import load_dataset

    try:
        entry = ws.dataset(dataset)
    except WorkspaceError as exc:
        raise AssignError(str(exc)) from None

    def build() -> Any:
        try:
            return load_dataset(entry.path)
        except Exception as exc:  # noqa: BLE001 - bad data is a message
            raise AssignError(f"dataset {entry.id}: cannot be read ({exc})") from None

    return cache.get(("dataset", *file_key(entry.path)), build)


def split_names(ws: Workspace, cache: ModelCache, dataset: str | None) -> list[str]:
    return list(load_dataset_cached(ws, cache, dataset).split_names)


def image_names(ws: Workspace, cache: ModelCache, dataset: str | None, split: str | None) -> list[str]:
    """The keys of a split's images (for a picker)."""
    ds = load_dataset_cached(ws, cache, dataset)
    return [r.key for r in ds.split(_split(ds, split))]


def _split(ds: Any, split: str | None) -> str | None:
    if split in (None, "", "all"):
        return None
    if split not in ds.split_names:
        raise AssignError(f"split {split!r} not in the dataset (splits: {', '.join(ds.split_names)})")
    return split


def dataset_image(
    ws: Workspace, cache: ModelCache, dataset: str | None, split: str | None, item: str | int | None
) -> ImageSource:
    """An image of a dataset split by index (``"3"``) or name (its key or file name; a unique substring works)."""
    ds = load_dataset_cached(ws, cache, dataset)
    records = ds.split(_split(ds, split))
    if not records:
        raise AssignError(f"dataset {dataset or 'demo'}: split {split!r} has no images")
    text = str(item if item is not None else "0").strip() or "0"
    rec = None
    if text.lstrip("-").isdigit():
        i = int(text)
        if not -len(records) <= i < len(records):
            raise AssignError(
                f"image index {i} out of range: split {split!r} has {len(records)} images (0..{len(records) - 1})"
            )
        rec = records[i]
    else:
        exact = [r for r in records if text in (r.key, Path(r.path).name, Path(r.path).stem)]
        found = exact or [r for r in records if text.lower() in r.key.lower()]
        if not found:
            raise AssignError(f"no image named {text!r} in split {split!r} of dataset {dataset or 'demo'}")
        if len(found) > 1 and not exact:
            names = ", ".join(r.key for r in found[:5])
            raise AssignError(f"{text!r} matches {len(found)} images ({names}{', ...' if len(found) > 5 else ''})")
        rec = found[0]
    return ImageSource(
        Path(rec.path),
        rec.key,
        np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4),
        np.asarray(rec.classes, dtype=np.int64).reshape(-1),
    )


def uploaded_image(image: str | Path, labels: str | Path | None, class_names: list[str]) -> ImageSource:
    """An uploaded image and its optional YOLO ``.txt`` / VOC ``.xml`` label file (classes: the model's)."""
    path = Path(image)
    try:
        rgb = read_image(path)
    except ImageReadError as exc:
        raise AssignError(_named(str(exc), path)) from None
    except Exception as exc:  # noqa: BLE001 - whatever the decoder says, it is a message
        raise AssignError(f"{path.name}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    h, w = rgb.shape[:2]
    if labels is None or str(labels) == "":
        return ImageSource(
            path,
            path.name,
            np.zeros((0, 4)),
            np.zeros(0, dtype=np.int64),
            "no label file: objectness maps only, no assignment",
        )
    lab = Path(labels)
    try:
        boxes, classes = read_labels(lab, w, h, class_names)
    except LabelError as exc:
        raise AssignError(_named(str(exc), lab)) from None
    except Exception as exc:  # noqa: BLE001
        raise AssignError(f"{lab.name}: cannot be read as labels ({type(exc).__name__}: {exc})") from None
    return ImageSource(path, path.name, boxes, classes)


def _mode_guard() -> Any:
    return contextlib.nullcontext() if _THREAD_SAFE else _MODE_LOCK


def _named(message: str, path: Path) -> str:
    """The message with the (temporary upload) path shown as the file's name."""
    return message.replace(str(path), path.name)


# -- one image --------------------------------------------------------------------------------------------------------
def box_rows(exp: ImageExploration) -> list[dict[str, Any]]:
    """Per ground-truth box: class, size, fine and coarse positives per level, dynamic k, best IoU, lowest cost.

    Counts come from :meth:`core.explore.ImageExploration.box_summaries`; ``best IoU`` / ``min cost`` are the
    highest IoU and the lowest assignment cost of the box against the lead predictions at its fine candidate cells.
    ``no positive`` names the label sets in which the box got no positive cell (it is never trained on there).
    """
    levels = [lv.name for lv in exp.levels]
    views = exp.view.boxes if exp.view is not None else []
    rows = []
    for s in exp.box_summaries():
        g = s["index"]
        x1, y1, x2, y2 = s["xyxy_input"]
        row: dict[str, Any] = {
            "box": g,
            "class": s["class_name"],
            "size": s["size"],
            "w×h (input px)": f"{x2 - x1:.0f}×{y2 - y1:.0f}",
        }
        missing = []
        for kind in ("fine", "coarse"):
            part = s.get(kind)
            row[f"{kind} k"] = part["dynamic_k"] if part else None
            for name, n in zip(levels, part["positives_per_level"] if part else [None] * len(levels)):
                row[f"{kind} {name}"] = n
            row[f"{kind} total"] = part["positives"] if part else None
            if part and part["none"]:
                missing.append(kind)
        cells = [c for lv in views[g].fine.levels for c in lv.candidates] if g < len(views) else []
        row["best IoU"] = round(max(c.iou for c in cells), 3) if cells else None
        row["min cost"] = round(min(c.cost for c in cells), 3) if cells else None
        row["no positive"] = f"{NO_POSITIVE} ({' + '.join(missing)})" if missing else ""
        rows.append(row)
    return rows


def table_frame(rows: list[dict[str, Any]]) -> Any:
    """``rows`` as a pandas DataFrame styled so the boxes without a positive stand out (light red rows)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return df

    def colour(row: Any) -> list[str]:
        bad = bool(row.get("no positive"))
        return ["background-color: #ffd6d6; font-weight: 600" if bad else "" for _ in row]

    return df.style.apply(colour, axis=1).format(precision=3, na_rep="–")


def explore(
    ws: Workspace,
    cache: ModelCache,
    *,
    image: str | Path | None = None,
    labels: str | Path | None = None,
    dataset: str | None = "demo",
    split: str | None = "val",
    item: str | int | None = "0",
    checkpoint: str | None = "demo",
    img_size: int | None = None,
    width: int = 1300,
) -> ExploreResult:
    """Explore one image: an uploaded ``image`` (+ ``labels``) when given, else image ``item`` of a dataset split."""
    info = load_model(ws, cache, checkpoint)
    if image:
        src = uploaded_image(image, labels, info.class_names)
    else:
        src = dataset_image(ws, cache, dataset, split, item)
    size = int(img_size) if img_size else info.img_size
    notes = [src.note] if src.note else []
    if not info.has_aux:
        notes.append(
            f"checkpoint {info.id} has no auxiliary head: the aux maps are absent (the coarse set is what "
            "an aux head would be trained on)"
        )
    try:
        with _mode_guard():
            exp = explore_image(info.model, src.path, src.boxes, src.classes, img_size=size)
    except ImageReadError as exc:
        raise AssignError(_named(str(exc), src.path)) from None
    except ValueError as exc:
        raise AssignError(f"{src.name}: {exc}") from None
    exp.source = src.name
    notes += [n for n in exp.notes if n not in notes]
    figure = exploration_figure(exp, width=width)
    rows = box_rows(exp)
    bad = [r["box"] for r in rows if r["no positive"]]
    return ExploreResult(exp, figure, rows, bad, _summary(exp, info, src, bad, notes), notes)


def _summary(exp: ImageExploration, info: ModelInfo, src: ImageSource, bad: list[int], notes: list[str]) -> str:
    head = f"**{src.name}** · {exp.num_boxes} boxes · model `{info.id}` ({exp.model_name}) · input {exp.img_size} px"
    lines = [head]
    if exp.num_boxes:
        if bad:
            lines.append(
                f"**{len(bad)} of {exp.num_boxes} boxes got no positive** in at least one label set "
                f"(boxes {', '.join(map(str, bad))}, highlighted in red below): that head is never "
                "trained on them as objects."
            )
        else:
            lines.append("Every box got fine (lead) and coarse (aux) positives.")
    lines += [f"_{n}_" for n in notes]
    return "\n\n".join(lines)


# -- a dataset split --------------------------------------------------------------------------------------------------
def dataset_stats(
    ws: Workspace,
    cache: ModelCache,
    *,
    dataset: str | None = "demo",
    split: str | None = "val",
    checkpoint: str | None = "demo",
    img_size: int | None = None,
    max_images: int | None = 200,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[AssignmentStats, dict[str, Any]]:
    """:func:`core.explore.assignment_stats` of a split and its figures; ``progress(fraction, message)``."""
    info = load_model(ws, cache, checkpoint)
    ds = load_dataset_cached(ws, cache, dataset)
    name = _split(ds, split)
    size = int(img_size) if img_size else info.img_size
    kwargs: dict[str, Any] = {"img_size": size, "max_images": int(max_images) if max_images else None}
    if progress is not None:
        kwargs["progress"] = progress
    try:
        with _mode_guard():
            stats = assignment_stats(info.model, ds, name if name is not None else "all", **kwargs)
    except ValueError as exc:
        raise AssignError(f"dataset {dataset or 'demo'}, split {split!r}: {exc}") from None
    return stats, {key: make(stats) for key, make in STATS_FIGURES.items()}


def stats_summary(stats: AssignmentStats) -> str:
    o = stats.overall
    parts = [f"**{stats.images} images, {stats.boxes} boxes** (split `{stats.split}`, input {stats.img_size} px)"]
    if o.fine_mean is not None:
        parts.append(
            f"fine (lead): {o.fine_mean:.2f} positives per box, {100 * (o.fine_none_share or 0):.1f} % "
            "of boxes without one"
        )
    if o.coarse_mean is not None:
        parts.append(f"coarse (aux): {o.coarse_mean:.2f} per box, {100 * (o.coarse_none_share or 0):.1f} % without")
    return " · ".join(parts) + "".join(f"\n\n_{n}_" for n in stats.notes)


# -- training convergence -------------------------------------------------------------------------------------------
def snapshot_runs(ws: Workspace) -> list[str]:
    """Runs of the workspace trained with objectness snapshots (``<run>/objectness/epoch_XXX.npz``)."""
    return [r.name for r in ws.list_runs() if any((r / "objectness").glob("epoch_*.npz"))]


def snapshot_epochs(ws: Workspace, run: str) -> list[int]:
    folder = _snapshot_dir(ws, run)
    return sorted(int(p.stem.split("_")[-1]) for p in folder.glob("epoch_*.npz") if p.stem.split("_")[-1].isdigit())


def _snapshot_dir(ws: Workspace, run: str) -> Path:
    name = str(run or "").removeprefix("run:")
    try:
        folder = ws.run_dir(name) / "objectness"
    except WorkspaceError as exc:
        raise AssignError(str(exc)) from None
    if not folder.is_dir() or not any(folder.glob("epoch_*.npz")):
        raise AssignError(f"run {name!r} has no objectness snapshots (train with --objectness-every N)")
    return folder


def convergence(ws: Workspace, run: str, epoch: int | None = None) -> tuple[Any, int, list[int]]:
    """The lead/aux objectness maps of the run's fixed image after ``epoch`` (the nearest snapshot; default: last).

    Returns (figure, the epoch shown, every snapshot epoch). Gradio's plot does not play plotly frames, so the tab
    moves over epochs with its own slider and this draws one epoch at a time.
    """
    folder = _snapshot_dir(ws, run)
    try:
        snaps = load_snapshots(folder)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file is a message
        raise AssignError(f"run {run}: cannot read the objectness snapshots ({exc})") from None
    epochs = [s.epoch for s in snaps]
    target = epochs[-1] if epoch is None else int(epoch)
    snap = min(snaps, key=lambda s: (abs(s.epoch - target), s.epoch))
    fig = convergence_figure([snap])
    fig.layout.sliders, fig.layout.updatemenus, fig.frames = (), (), ()
    fig.update_layout(title_text=f"Objectness while training · run {run} · after epoch {snap.epoch}")
    return fig, snap.epoch, epochs
