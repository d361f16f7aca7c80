"""The Data tab's work: bring a dataset into the workspace (zip upload or linked folder) and check it.

Plain functions on plain data (tested without a browser); the tab in :mod:`app.studio.data` only wires them.

* :func:`import_zip` — a COCO / YOLO / VOC zip (also the Roboflow-style YOLO export with ``../train/images``
  paths) is checked entry by entry and extracted by :func:`core.data.safe_extract` (its limits) into a staging
  folder of the workspace, then moved into a fresh ``datasets/<name>/`` (a single top folder is descended into).
  A refused archive names the entry and the problem; nothing is left behind.
* :func:`link_folder` — a dataset folder on disk under an allowed root (:meth:`app.workspace.Workspace.link_folder`).
* :func:`check` — :func:`core.data.load_dataset` + :func:`core.data.check_dataset` of a workspace dataset: the
  report as rows (file as named inside the zip or the folder, problem, what was done), the statistics figures
  (classes, box sizes against each model's anchors, best possible recall), and an augmented preview with the share
  of labels lost to augmentation.

Every refusal is a :class:`DataError` whose message names the file and the problem.
"""

from __future__ import annotations

import inspect
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.workspace import DatasetEntry, Workspace, WorkspaceError, safe_name
from core.data import DATASET_FIGURES as FIGURES
from core.data import (
    UnsafeArchiveError,
    ZipLimits,
    check_dataset,
    load_dataset,
    render_preview,
    safe_extract,
)

Progress = Callable[[float, str], None]
UPLOAD_MARKER = ".yolov7-studio-upload"  # in an uploaded dataset's folder: the zip's name and the stripped top folder
ACTIONS = {
    "dropped": "left out",
    "clipped": "clipped to the image",
    "kept": "kept",
    "ignored": "ignored",
}


class DataError(ValueError):
    """A request the Data tab refuses; the message names the file (or zip entry) and the problem."""


@dataclass
class CheckResult:
    """What the tab shows for one dataset (see :func:`check`)."""

    dataset_id: str
    format: str
    classes: list[str]
    splits: dict[str, int]
    images: int
    boxes: int
    input_images: int
    input_boxes: int
    rows: list[dict[str, Any]]
    anchors: list[dict[str, Any]]
    figures: dict[str, Any]
    preview: Path | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    notes: list[str] = field(default_factory=list)


# -- bringing data in -------------------------------------------------------------------------------------------------
def import_zip(
    ws: Workspace, upload: str | Path, *, name: str | None = None, limits: ZipLimits | None = None
) -> DatasetEntry:
    """Safely extract an uploaded zip into a new dataset folder of the workspace and return its entry.

    ``name`` (default: the zip's file name) names the folder. The extracted folder must read as a dataset (COCO,
    YOLO or VOC); otherwise it is removed again and the reason is raised.
    """
    src = Path(upload)
    shown = name or src.name
    if not src.is_file():
        raise DataError(f"{shown}: no such file")
    stage = ws.tmp_dir / f"extract_{uuid.uuid4().hex[:12]}"
    try:
        try:
            safe_extract(src, stage, limits)
        except UnsafeArchiveError as exc:
            where = f"entry {exc.entry!r}" if exc.entry is not None else "archive"
            raise DataError(f"{shown}: refused: {where}: {exc.problem}") from None
        content, prefix = _content_folder(stage)
        if not any(content.iterdir()):
            raise DataError(f"{shown}: the archive is empty")
        dest = ws.new_dataset_dir(Path(shown).stem)
        for child in content.iterdir():
            shutil.move(str(child), str(dest / child.name))
        (dest / UPLOAD_MARKER).write_text(f"{shown}\n{prefix}\n")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    try:
        load_dataset(dest)
    except Exception as exc:  # noqa: BLE001 - not a dataset: take it out again and say why
        shutil.rmtree(dest, ignore_errors=True)
        raise DataError(f"{shown}: not a dataset: {_shown(str(exc), dest, prefix)}") from None
    return _entry(ws, dest)


def _content_folder(stage: Path) -> tuple[Path, str]:
    """The folder holding the dataset (single top folders descended into) and the zip path prefix stripped."""
    folder, parts = stage, []
    while True:
        children = [c for c in folder.iterdir() if not c.name.startswith(".") and c.name != "__MACOSX"]
        if len(children) == 1 and children[0].is_dir():
            folder = children[0]
            parts.append(folder.name)
        else:
            return folder, "/".join(parts)


def _entry(ws: Workspace, folder: Path) -> DatasetEntry:
    for entry in ws.list_datasets():
        if entry.source == "upload" and (entry.path == folder or entry.path.parent == folder):
            return entry
    raise DataError(f"{folder.name}: extracted but not listed by the workspace")  # pragma: no cover


def link_folder(ws: Workspace, path: str, name: str | None = None) -> DatasetEntry:
    """Register a dataset folder on disk (under one of the workspace's allowed roots); it must read as a dataset."""
    text = str(path or "").strip()
    if not text:
        raise DataError("name a dataset folder (or its data.yaml / COCO .json)")
    try:
        entry = ws.link_folder(text, name or None)
    except WorkspaceError as exc:
        raise DataError(str(exc)) from None
    try:
        load_dataset(entry.path)
    except Exception as exc:  # noqa: BLE001 - say why it is not a dataset
        raise DataError(f"{text}: not a dataset: {exc}") from None
    return entry


# -- checking ---------------------------------------------------------------------------------------------------------
def _with_progress(fn: Callable[..., Any], progress: Progress | None, start: float, end: float) -> dict[str, Any]:
    """``progress=`` for ``fn`` (mapped into ``[start, end]``) when ``fn`` takes a callback, else nothing."""
    if progress is None or "progress" not in inspect.signature(fn).parameters:
        return {}

    def sub(fraction: float, message: str = "") -> None:
        progress(start + (end - start) * float(fraction), message)

    return {"progress": sub}


def _display_root(ws: Workspace, entry: DatasetEntry) -> tuple[Path, str]:
    """The folder file names are shown relative to, and the prefix they get (the zip's stripped top folder)."""
    root = entry.path if entry.path.is_dir() else entry.path.parent
    marker = root / UPLOAD_MARKER
    prefix = ""
    if marker.is_file():
        lines = marker.read_text().splitlines()
        prefix = lines[1].strip() if len(lines) > 1 else ""
    return root, prefix


def _shown(text: str, root: Path, prefix: str) -> str:
    """``text`` with paths under ``root`` written as inside the zip (or the folder): ``prefix/rel``."""
    base = str(root.resolve())
    lead = f"{prefix}/" if prefix else ""
    return text.replace(base + "/", lead).replace(base, prefix or ".")


def report_rows(issues: Any, root: Path, prefix: str = "") -> list[dict[str, Any]]:
    """The check's issues as table rows: file (as named in the zip/folder), problem, what was done, count."""
    rows = []
    for issue in issues:
        rows.append(
            {
                "file": _shown(str(issue.file), root, prefix) if issue.file else "(dataset)",
                "problem": _shown(str(issue.message), root, prefix),
                "kind": issue.kind,
                "what was done": f"{ACTIONS.get(issue.action, issue.action)} ({issue.scope})",
                "count": int(issue.count),
            }
        )
    return rows


def anchor_rows(stats: Any) -> list[dict[str, Any]]:
    """Best possible recall per model group (official autoanchor metric) and where the boxes fit best."""
    out = []
    for fit in stats.anchor_fits:
        total = max(sum(fit.best_level), 1)
        out.append(
            {
                "models": ", ".join(fit.models),
                "train size": fit.train_size,
                "BPR": round(float(fit.bpr), 4),
                "anchors per box": round(float(fit.anchors_per_box), 2),
                "best level": " · ".join(f"P{3 + i} {100 * n / total:.0f}%" for i, n in enumerate(fit.best_level)),
            }
        )
    return out


def check(
    ws: Workspace,
    dataset: str | None = "demo",
    *,
    progress: Progress | None = None,
    preview: bool = True,
    preview_n: int = 9,
    preview_size: int = 256,
    img_size: int | None = None,
) -> CheckResult:
    """Read and check a workspace dataset: report rows, statistics figures, anchor fit and an augmented preview.

    ``progress(fraction, message)`` follows reading, checking and the preview. ``img_size``: the training size for
    the anchor statistics (default: each model's official size).
    """
    try:
        entry = ws.dataset(dataset)
    except WorkspaceError as exc:
        raise DataError(str(exc)) from None
    root, prefix = _display_root(ws, entry)
    report_progress = progress or (lambda f, m: None)
    report_progress(0.0, f"reading {entry.id}")
    try:
        ds = load_dataset(entry.path, **_with_progress(load_dataset, progress, 0.0, 0.35))
    except UnsafeArchiveError as exc:
        raise DataError(f"dataset {entry.id}: refused: {exc.entry!r}: {exc.problem}") from None
    except Exception as exc:  # noqa: BLE001 - unreadable data is a message
        raise DataError(f"dataset {entry.id}: cannot be read: {_shown(str(exc), root, prefix)}") from None
    report_progress(0.35, "checking images and labels")
    report = check_dataset(ds, img_size=img_size, **_with_progress(check_dataset, progress, 0.35, 0.85))
    stats = report.stats
    figures = {key: make(stats) for key, make in FIGURES.items()}
    clean = report.dataset
    result = CheckResult(
        dataset_id=entry.id,
        format=clean.format,
        classes=list(clean.class_names),
        splits=dict(clean.split_counts()),
        images=report.used_images,
        boxes=report.used_boxes,
        input_images=report.input_images,
        input_boxes=report.input_boxes,
        rows=report_rows(report.issues, root, prefix),
        anchors=anchor_rows(stats),
        figures=figures,
    )
    if preview and clean.images:
        report_progress(0.85, "augmented preview")
        train = clean.split("train") or clean.images
        out = ws.tmp_dir / f"preview_{safe_name(entry.id)}_{uuid.uuid4().hex[:8]}.png"
        try:
            path, counts = render_preview(list(train), list(clean.class_names), out, n=preview_n, img_size=preview_size)
            result.preview = path
            result.labels = {**counts.to_dict(), "lost_share": float(counts.lost_share)}
        except Exception as exc:  # noqa: BLE001 - a preview failure must not hide the report
            result.notes.append(f"augmented preview failed: {type(exc).__name__}: {exc}")
    report_progress(1.0, "done")
    result.summary = _summary(result, report)
    return result


def import_and_check(
    ws: Workspace, upload: str | Path, *, name: str | None = None, progress: Progress | None = None, **kwargs: Any
) -> CheckResult:
    """:func:`import_zip` then :func:`check` (what the tab's upload and ``/check_data`` with a zip do)."""
    if progress is not None:
        progress(0.0, f"extracting {name or Path(upload).name}")
    entry = import_zip(ws, upload, name=name)
    return check(ws, entry.id, progress=progress, **kwargs)


def _summary(r: CheckResult, report: Any) -> str:
    splits = ", ".join(f"{k} {v}" for k, v in r.splits.items())
    lines = [
        f"**{r.dataset_id}** ({r.format}) · {len(r.classes)} classes ({', '.join(r.classes)}) · "
        f"**{r.images} images, {r.boxes} boxes used** ({splits})",
        f"Read {r.input_images} images and {r.input_boxes} boxes; left out {report.left_out_images} images and "
        f"{report.left_out_boxes} boxes, clipped {report.clipped_boxes} boxes; {len(r.rows)} report rows below.",
    ]
    if r.anchors:
        fits = " · ".join(f"{a['models'].split(',')[0]} {a['BPR']:.3f}" for a in r.anchors)
        lines.append(f"Best possible recall (boxes an anchor can match, at each model's training size): {fits}")
    if r.labels:
        lab = r.labels
        lines.append(
            f"Augmented preview: {lab['input']} labels went in, {lab['kept']} came out; "
            f"**{100 * lab['lost_share']:.1f} % lost** ({lab['cropped']} cropped away by mosaic/perspective, "
            f"{lab['filtered']} dropped by the box filter)."
        )
    lines += [f"_{n}_" for n in r.notes]
    return "\n\n".join(lines)
