"""Per-image CSV exports (one row per box): ``filename, width, height, class, xmin, ymin, xmax, ymax``; read only.

This is the most common CSV layout (labelImg/Roboflow "TensorFlow CSV" exports, Kaggle datasets): boxes in pixel
``xyxy``, one row per box, an image without boxes listed with empty box columns or not at all. The CSV may sit
beside the images, above them, or one per split folder (``train/_annotations.csv``); images are found by file name.
A CSV without these columns is refused with a message naming the columns expected.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from core.data.files import exif_issue, is_image_file, normalize_split, probe_image, walk_files
from core.data.progress import Progress, ProgressFn
from core.data.types import DetectionDataset, ImageRecord, Issue, SplitInfo

EXPECTED_COLUMNS: tuple[str, ...] = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
_REQUIRED = ("filename", "class", "xmin", "ymin", "xmax", "ymax")  # width/height: the real size is used anyway
_ALIASES: dict[str, tuple[str, ...]] = {
    "filename": ("filename", "file", "file_name", "image", "image_name", "image_id", "img", "path"),
    "class": ("class", "label", "class_name", "name", "category"),
    "width": ("width", "image_width", "img_width"),
    "height": ("height", "image_height", "img_height"),
    "xmin": ("xmin", "x_min", "x1", "left"),
    "ymin": ("ymin", "y_min", "y1", "top"),
    "xmax": ("xmax", "x_max", "x2", "right"),
    "ymax": ("ymax", "y_max", "y2", "bottom"),
}


def csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            return [c.strip().lower() for c in next(csv.reader(f), [])]
    except OSError:
        return []


def column_map(header: list[str]) -> dict[str, int]:
    """Our column name -> index in ``header`` (case-insensitive, usual spellings); only the columns found."""
    out: dict[str, int] = {}
    for ours, spellings in _ALIASES.items():
        for spelling in spellings:
            if spelling in header:
                out[ours] = header.index(spelling)
                break
    return out


def expected_message(path: Path, header: list[str]) -> str:
    """Why ``path`` is not read: its columns, and the columns expected."""
    missing = [c for c in _REQUIRED if c not in column_map(header)]
    return (
        f"{path}: a CSV with columns {', '.join(header) or '(none)'} is not a per-image box export: missing "
        f"{', '.join(missing)}. Expected one row per box with the columns {', '.join(EXPECTED_COLUMNS)} "
        "(boxes in pixels; width/height optional); convert other CSV layouts to COCO, YOLO or VOC"
    )


def find_csv_files(path: Path, max_depth: int = 2) -> tuple[list[Path], list[Path]]:
    """(readable box CSVs, other CSVs) at or up to ``max_depth`` levels below ``path``."""
    good: list[Path] = []
    other: list[Path] = []
    if path.is_file():
        candidates = [path]
    else:
        root_depth = len(path.parts)
        candidates = [
            f for f in walk_files(path) if f.suffix.lower() == ".csv" and len(f.parts) - root_depth <= max_depth + 1
        ]
    for f in candidates:
        cols = column_map(csv_header(f))
        (good if all(c in cols for c in _REQUIRED) else other).append(f)
    return good, other


def _split_of(csv_file: Path, root: Path) -> str:
    """A split from the CSV's folder (``train/_annotations.csv``) or name (``train_labels.csv``), else ``""``."""
    if csv_file.parent != root:
        folder = normalize_split(csv_file.parent.name)
        if folder:
            return folder
    return normalize_split(csv_file.stem) or ""


def read_csv(path: Path, class_names: list[str] | None = None, progress: ProgressFn | None = None) -> DetectionDataset:
    """Read per-image CSV exports under ``path`` (a folder or one ``.csv``) into the common representation.

    Raises:
        ValueError: no CSV with the expected columns (the message names the columns found and expected).
    """
    path = Path(path)
    root = path.parent if path.is_file() else path
    good, other = find_csv_files(path)
    if not good:
        if other:
            raise ValueError(expected_message(other[0], csv_header(other[0])))
        raise ValueError(f"{path}: no .csv file found (expected columns {', '.join(EXPECTED_COLUMNS)})")
    report = Progress(progress)
    issues = [
        Issue(str(f), "non_annotation_file", expected_message(f, csv_header(f)), "ignored", "file") for f in other
    ]
    images = [f for f in walk_files(root) if is_image_file(f)]
    by_name: dict[str, list[Path]] = {}
    for f in images:
        by_name.setdefault(f.name.lower(), []).append(f)
    rows: dict[Path, dict] = {}  # image -> {"split", "csv", "boxes": [(name, coords)], "bad": n, "size"}
    for csv_file in good:
        split = _split_of(csv_file, root)
        with open(csv_file, newline="", encoding="utf-8-sig", errors="replace") as stream:
            reader = csv.reader(stream)
            cols = column_map([c.strip().lower() for c in next(reader, [])])
            for line_no, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                cell = {k: (row[i].strip() if i < len(row) else "") for k, i in cols.items()}
                name = Path(cell["filename"].replace("\\", "/")).name
                near = [p for p in by_name.get(name.lower(), []) if p.parent == csv_file.parent]
                found = near or by_name.get(name.lower(), [])
                if not found:
                    msg = f"line {line_no}: image {name!r} not found"
                    issues.append(Issue(str(csv_file), "label_without_image", msg, "dropped", "box"))
                    continue
                entry = rows.setdefault(found[0], {"split": split, "csv": csv_file, "boxes": [], "bad": 0})
                if cell.get("width") and cell.get("height"):
                    entry["size"] = (cell["width"], cell["height"])
                box_cells = [cell[k] for k in ("xmin", "ymin", "xmax", "ymax")]
                if not cell["class"] and not any(box_cells):
                    continue  # an image listed without boxes
                try:
                    coords = [float(v) for v in box_cells]
                    if not np.all(np.isfinite(coords)) or not cell["class"]:
                        raise ValueError
                except ValueError:
                    bad = [k for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box_cells) if not _is_number(v)]
                    what = ", ".join(
                        f"{k} {v!r}" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box_cells) if k in bad
                    )
                    msg = f"line {line_no} ({name}): " + (f"not a number: {what}" if bad else "empty class")
                    issues.append(Issue(str(csv_file), "malformed_row", msg, "dropped"))
                    entry["bad"] += 1
                    continue
                entry["boxes"].append((cell["class"], coords))
    names_found = sorted({n for e in rows.values() for n, _ in e["boxes"]})
    names = list(class_names) if class_names is not None else names_found
    name_to_id = {n: i for i, n in enumerate(names)}
    listed_folders = {f.parent for f in good}
    records: list[ImageRecord] = []
    for k, image in enumerate(images, start=1):
        report.update(k, len(images), "reading image headers")
        listed = rows.get(image)
        if listed is not None:
            entry = listed
        else:
            if image.parent not in listed_folders and root not in listed_folders:
                continue  # not in a folder a CSV describes
            msg = "not listed in any CSV: used as background"
            issues.append(Issue(str(image), "image_without_labels", msg, "kept", "image"))
            entry = {"split": _split_of(image, root), "csv": None, "boxes": [], "bad": 0}
        if entry["bad"]:
            good_boxes = len(entry["boxes"])
            msg = (
                f"{entry['bad']} row(s) of {image.name} could not be read (see malformed_row): the image is left out "
                "rather than used with objects taught as background"
            )
            issues.append(
                Issue(str(entry["csv"]), "labels_unreadable", msg, "dropped (image left out)", "image", 1, good_boxes)
            )
            continue
        probe = probe_image(image)
        if isinstance(probe, str):
            issues.append(Issue(str(image), "unreadable_image", probe, "dropped", "image", boxes=len(entry["boxes"])))
            continue
        if probe.orientation != 1:
            issues.append(exif_issue(image, probe.orientation))
        boxes, classes = [], []
        for name, coords in entry["boxes"]:
            if name not in name_to_id:
                issues.append(Issue(str(entry["csv"]), "unknown_class", f"class '{name}' not in {names}", "dropped"))
                continue
            boxes.append(coords)
            classes.append(name_to_id[name])
        key = image.relative_to(root).with_suffix("").as_posix()
        records.append(
            ImageRecord(
                path=image.resolve(),
                width=probe.width,
                height=probe.height,
                boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                classes=np.asarray(classes, dtype=np.int64),
                split=entry["split"],
                key=key,
                label_file=entry["csv"],
            )
        )
    report(1.0, f"read {len(records)} images")
    split_info = SplitInfo("dataset") if any(r.split for r in records) else SplitInfo("none")
    return DetectionDataset(root, "csv", tuple(names), tuple(records), tuple(issues), split_info, source=path)


def _is_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False
