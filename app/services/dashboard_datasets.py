"""The dashboard's Datasets page: check any workspace dataset or a path on disk, and draw a filtered sample grid.

The check itself is the studio's (:func:`app.services.data.check`: report rows, statistics figures, anchor fit,
augmented preview with the labels lost); this module adds a dataset given by path (no workspace id) and the grid
of images with their ground-truth boxes, filterable by class, split and problem type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from app.services import data as data_service
from app.services.data import CheckResult, DataError
from app.workspace import DatasetEntry, Workspace, WorkspaceError

PALETTE = ((76, 110, 245), (247, 103, 7), (47, 158, 68), (224, 49, 49), (156, 54, 181), (16, 152, 173), (245, 159, 0))


@dataclass(frozen=True)
class _PathSource:
    """What :func:`app.services.data.check` needs of a workspace, for one dataset given by path."""

    entry: DatasetEntry
    tmp_dir: Path

    def dataset(self, ident: str | None) -> DatasetEntry:
        return self.entry


def entry_for_path(path: str | Path) -> DatasetEntry:
    """A dataset entry for a folder / data.yaml / COCO json on disk; :class:`DataError` if there is nothing there."""
    p = Path(str(path)).expanduser()
    if not str(path).strip():
        raise DataError("no dataset path given")
    if not p.exists():
        raise DataError(f"{path}: no such file or folder")
    p = p.resolve()
    if p.is_dir():
        for name in ("data.yaml", "data.yml", "dataset.yaml"):
            if (p / name).is_file():
                p = p / name
                break
    return DatasetEntry(f"path:{p}", str(p), p, "folder")


def check(ws: Workspace, dataset: str, **kwargs: Any) -> CheckResult:
    """:func:`app.services.data.check` of a workspace id, or of a path on disk (``dataset`` = ``path:<path>``)."""
    if dataset.startswith("path:"):
        entry = entry_for_path(dataset.removeprefix("path:"))
        return data_service.check(_PathSource(entry, ws.tmp_dir), entry.id, **kwargs)  # type: ignore[arg-type]
    return data_service.check(ws, dataset, **kwargs)


def load(ws: Workspace, dataset: str) -> Any:
    """The cleaned dataset (``check_dataset(...).dataset``) for the sample grid."""
    from core.data import check_dataset, load_dataset

    if dataset.startswith("path:"):
        path = entry_for_path(dataset.removeprefix("path:")).path
    else:
        try:
            path = ws.dataset(dataset).path
        except WorkspaceError as exc:
            raise DataError(str(exc)) from None
    try:
        return check_dataset(load_dataset(path)).dataset
    except Exception as exc:  # noqa: BLE001 - unreadable data is a message
        raise DataError(f"{dataset}: cannot be read: {exc}") from None


def problem_files(rows: list[dict[str, Any]], kind: str | None) -> set[str]:
    """File names (no folder) of the report rows of this problem kind (None: every row)."""
    return {Path(str(r["file"])).name for r in rows if kind in (None, r.get("kind")) and r.get("file") != "(dataset)"}


def filter_images(
    records: list[Any],
    class_names: list[str],
    *,
    classes: list[str] | None = None,
    split: str | None = None,
    files: set[str] | None = None,
) -> list[Any]:
    """Images of ``split`` (None: all) holding a box of one of ``classes`` (None: any), and, with ``files``, whose
    image or label file is named there (the problem filter)."""
    wanted = {class_names.index(c) for c in classes or [] if c in class_names}
    out = []
    for rec in records:
        if split and rec.split != split:
            continue
        if wanted and not wanted.intersection(int(c) for c in rec.classes):
            continue
        if files is not None:
            own = {rec.path.name} | ({Path(rec.label_file).name} if rec.label_file else set())
            if not own & files:
                continue
        out.append(rec)
    return out


def draw_sample(rec: Any, class_names: list[str], size: int = 256) -> Image.Image:
    """The image with its ground-truth boxes and class names, scaled to fit ``size`` px."""
    try:
        with Image.open(rec.path) as im:
            img = im.convert("RGB")
    except Exception:  # noqa: BLE001 - an unreadable image shows as a grey tile naming it
        img = Image.new("RGB", (size, size), (200, 200, 200))
        ImageDraw.Draw(img).text((6, 6), f"unreadable:\n{rec.path.name}", fill=(0, 0, 0))
        return img
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    draw = ImageDraw.Draw(img)
    for box, c in zip(rec.boxes.tolist(), rec.classes.tolist(), strict=True):
        colour = PALETTE[int(c) % len(PALETTE)]
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        name = class_names[int(c)] if 0 <= int(c) < len(class_names) else str(c)
        draw.text((x1 + 2, max(0, y1 - 11)), name, fill=colour)
    return img
