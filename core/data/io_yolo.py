"""YOLO format: ``images/`` + ``labels/`` (+ ``data.yaml``); read and write.

Label rows are ``class xc yc w h`` normalized to [0, 1]. As in the official loader, if any row of a file has more
than 8 values, every row of that file is a polygon ``class x1 y1 x2 y2 ...`` (normalized) and its box is the
polygon's extent; the polygons are kept as ``ImageRecord.segments``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml

from core.data.files import (
    exif_issue,
    is_image_file,
    normalize_split,
    output_stems,
    probe_image,
    relative_key,
    walk_files,
)
from core.data.progress import Progress, ProgressFn
from core.data.types import DetectionDataset, ImageRecord, Issue, SplitInfo

_YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")
_CLASS_FILES = ("classes.txt", "obj.names", "classes.names")


def find_data_yaml(path: Path) -> Path | None:
    """The dataset yaml: ``path`` itself, ``data.yaml``/``dataset.yaml``, or the only yaml with ``names`` in it."""
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    for name in _YAML_NAMES:
        if (path / name).is_file():
            return path / name
    candidates = []
    for f in sorted(path.glob("*.y*ml")):
        try:
            content = yaml.safe_load(f.read_text(errors="replace"))
        except (yaml.YAMLError, OSError):
            continue
        if isinstance(content, dict) and "names" in content:
            candidates.append(f)
    return candidates[0] if len(candidates) == 1 else None


def label_path_for(image: Path) -> Path:
    """Official rule: replace the last ``/images/`` folder with ``/labels/`` and the suffix with ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _names_from(value: object) -> list[str] | None:
    if isinstance(value, dict):
        return [str(value[k]) for k in sorted(value, key=lambda k: int(k))]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return None


def _resolve(entry: str, bases: list[Path]) -> Path | None:
    for base in bases:
        p = (base / entry).resolve()
        if p.exists():
            return p
    stripped = entry
    while stripped.startswith("../"):  # Roboflow exports write ../train/images relative to a folder that isn't there
        stripped = stripped[3:]
        for base in bases:
            p = (base / stripped).resolve()
            if p.exists():
                return p
    return None


def _images_of(entry: Path, issues: list[Issue]) -> list[Path]:
    if entry.is_dir():
        out = []
        for f in walk_files(entry):
            if is_image_file(f):
                out.append(f)
            elif f.suffix.lower() not in (".txt", ".cache"):  # darknet keeps label .txt files beside the images
                issues.append(Issue(str(f), "non_image_file", "not an image file (by suffix)", "ignored", "file"))
        return out
    if entry.suffix.lower() == ".txt":
        out = []
        for line in entry.read_text(errors="replace").splitlines():
            line = line.strip()
            if not line:
                continue
            p = Path(line) if Path(line).is_absolute() else (entry.parent / line).resolve()
            if not p.is_file() and line.startswith(("data/", "./data/")):  # darknet lists are relative to data/
                p = (entry.parent / line.split("data/", 1)[1]).resolve()
            if not p.is_file():
                issues.append(
                    Issue(str(entry), "missing_image", f"listed image '{line}' not found", "dropped", "image")
                )
            else:
                out.append(p)
        return out
    return [entry] if is_image_file(entry) else []


def _split_sources(path: Path, issues: list[Issue]) -> tuple[Path, dict[str, list[Path]], list[str] | None]:
    """(root, split -> image files, class names or None) from a yaml or from the folder layout."""
    data_yaml = find_data_yaml(path)
    if data_yaml is not None:
        cfg = yaml.safe_load(data_yaml.read_text(errors="replace")) or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"{data_yaml}: not a mapping")
        root = data_yaml.parent
        if cfg.get("path"):
            root = _resolve(str(cfg["path"]), [data_yaml.parent]) or root
        bases = [root, data_yaml.parent, data_yaml.parent.parent]
        splits: dict[str, list[Path]] = {}
        for key in ("train", "val", "test"):
            entries = cfg.get(key)
            if not entries:
                continue
            for entry in [entries] if isinstance(entries, str) else list(entries):
                resolved = _resolve(str(entry), bases)
                if resolved is None:
                    issues.append(
                        Issue(str(data_yaml), "missing_split", f"{key}: '{entry}' not found", "ignored", "file")
                    )
                    continue
                splits.setdefault(key, []).extend(_images_of(resolved, issues))
        return root, splits, _names_from(cfg.get("names"))
    root = path if path.is_dir() else path.parent
    names = None
    for cand in [root / f for f in _CLASS_FILES] + [root / "labels" / f for f in _CLASS_FILES]:
        if cand.is_file():
            names = [n.strip() for n in cand.read_text(errors="replace").splitlines() if n.strip()]
            break
    images_root = root / "images"
    splits = {}
    if images_root.is_dir():
        subdirs: dict[str, Path] = {}
        for d in sorted(images_root.iterdir()):
            split_name = normalize_split(d.name) if d.is_dir() else None
            if split_name:
                subdirs[split_name] = d
        if subdirs:
            for split, folder in subdirs.items():
                splits[split] = _images_of(folder, issues)
        else:
            splits[""] = _images_of(images_root, issues)
    elif (root / "obj.data").is_file() or (root / "obj.names").is_file():  # darknet / CVAT "YOLO 1.1" export
        splits = _darknet_splits(root, issues)
    else:  # Roboflow style: root/{train,valid,test}/images
        for d in sorted(root.iterdir()):
            found = normalize_split(d.name)
            if found and (d / "images").is_dir():
                splits.setdefault(found, []).extend(_images_of(d / "images", issues))
    if not splits:
        raise FileNotFoundError(f"{path}: no data.yaml and no images/ folder (not a YOLO dataset)")
    return root, splits, names


def _darknet_splits(root: Path, issues: list[Issue]) -> dict[str, list[Path]]:
    """Splits of a darknet export (``obj.data`` with ``train = data/train.txt`` ..., labels beside the images);
    without usable lists, every image under ``root`` with no split."""
    splits: dict[str, list[Path]] = {}
    obj_data = root / "obj.data"
    entries: dict[str, str] = {}
    if obj_data.is_file():
        for line in obj_data.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            entries[key.strip().lower()] = value.strip()
    for key in ("train", "valid", "test"):
        value = entries.get(key, "")
        if not value:
            continue
        stripped = value.split("data/", 1)[1] if value.startswith(("data/", "./data/")) else value
        resolved = _resolve(value, [root]) or _resolve(stripped, [root])
        if resolved is None:
            issues.append(Issue(str(obj_data), "missing_split", f"{key}: '{value}' not found", "ignored", "file"))
            continue
        split = normalize_split(key) or key
        splits.setdefault(split, []).extend(_images_of(resolved, issues))
    if not splits:
        splits[""] = [f for f in walk_files(root) if is_image_file(f)]
    return splits


def parse_label_file(
    label: Path, width: int, height: int, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...] | None, list[Issue]]:
    """Parse one label file into pixel ``xyxy`` boxes ``[N, 4]``, class ids ``[N]`` and polygons (or ``None``).

    Rows that cannot be used are dropped and reported; coordinates are not clipped here (the checks do that).
    """
    issues: list[Issue] = []
    rows = [line.split() for line in label.read_text(errors="replace").splitlines() if line.strip()]
    polygon_file = any(len(r) > 8 for r in rows)
    boxes, classes, segments = [], [], []
    scale = np.array([width, height], dtype=np.float64)
    for n, row in enumerate(rows, start=1):
        where = f"line {n}"
        try:
            values = [float(v) for v in row]
        except ValueError:
            issues.append(
                Issue(str(label), "malformed_row", f"{where}: non-numeric value in '{' '.join(row)}'", "dropped")
            )
            continue
        if not np.all(np.isfinite(values)):
            issues.append(Issue(str(label), "malformed_row", f"{where}: NaN or infinite value", "dropped"))
            continue
        cls = values[0]
        if cls != int(cls) or cls < 0 or (num_classes is not None and cls >= num_classes):
            issues.append(Issue(str(label), "unknown_class", f"{where}: class {row[0]} (nc={num_classes})", "dropped"))
            continue
        coords = np.asarray(values[1:], dtype=np.float64)
        if polygon_file:
            if len(coords) < 4 or len(coords) % 2:
                issues.append(
                    Issue(str(label), "malformed_row", f"{where}: polygon with odd/too few values", "dropped")
                )
                continue
            if len(coords) < 6:
                issues.append(
                    Issue(
                        str(label),
                        "box_row_in_polygon_file",
                        f"{where}: 4 values in a polygon file; read as a 2-point polygon, as the official loader does",
                        "kept",
                    )
                )
            poly = coords.reshape(-1, 2) * scale
            segments.append(poly)
            boxes.append([*poly.min(0), *poly.max(0)])
        else:
            if len(coords) != 4:
                issues.append(Issue(str(label), "malformed_row", f"{where}: {len(row)} values, expected 5", "dropped"))
                continue
            xc, yc, w, h = coords
            boxes.append([(xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height])
        classes.append(int(cls))
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return box_array, np.asarray(classes, dtype=np.int64), tuple(segments) if polygon_file else None, issues


def read_yolo(path: Path, class_names: list[str] | None = None, progress: ProgressFn | None = None) -> DetectionDataset:
    """Read a YOLO dataset from a folder or a ``data.yaml``.

    Images without a label file are kept as background (the official behaviour) and reported; label files
    without an image are reported. Class names come from ``class_names``, the yaml, ``classes.txt``/``obj.names``,
    or ids. ``progress``: optional callback ``(fraction, message)`` while image headers and labels are read.
    """
    issues: list[Issue] = []
    report = Progress(progress)
    root, splits, names = _split_sources(path, issues)
    total = sum(len(v) for v in splits.values())
    done = 0
    if class_names is not None:
        names = list(class_names)
    num_classes = len(names) if names is not None else None
    records: list[ImageRecord] = []
    seen: dict[Path, str] = {}
    used_labels: set[Path] = set()
    label_dirs: set[Path] = set()
    for split, images in splits.items():
        for image in sorted(images):
            done += 1
            report.update(done, total, "reading labels")
            image = image.resolve()
            if image in seen:
                issues.append(
                    Issue(str(image), "duplicate_listing", f"listed in {seen[image]} and {split}", "kept once", "image")
                )
                continue
            seen[image] = split
            label = label_path_for(image)
            label_dirs.add(label.parent)
            probe = probe_image(image)
            if isinstance(probe, str):
                issues.append(Issue(str(image), "unreadable_image", probe, "dropped", "image", boxes=_rows(label)))
                used_labels.add(label)
                continue
            if probe.orientation != 1:
                issues.append(exif_issue(image, probe.orientation))
            segments = None
            if label.is_file():
                used_labels.add(label)
                try:
                    boxes, classes, segments, row_issues = parse_label_file(
                        label, probe.width, probe.height, num_classes
                    )
                except OSError as exc:
                    issues.append(Issue(str(label), "corrupt_label", f"cannot read: {exc}", "dropped", "image"))
                    continue
                issues.extend(row_issues)
            else:
                issues.append(
                    Issue(str(image), "image_without_labels", f"no {label.name}: used as background", "kept", "image")
                )
                boxes, classes = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
            records.append(
                ImageRecord(
                    path=image,
                    width=probe.width,
                    height=probe.height,
                    boxes=boxes,
                    classes=classes,
                    split=split,
                    key=relative_key(image, root.resolve()),
                    segments=segments,
                    label_file=label if label.is_file() else None,
                )
            )
    for folder in sorted(label_dirs):
        if folder.is_dir():
            for txt in sorted(folder.rglob("*.txt")):
                if txt.resolve() not in used_labels and txt not in used_labels and txt.name not in _CLASS_FILES:
                    message = "no image for this label file"
                    issues.append(Issue(str(txt), "label_without_image", message, "dropped", "image", boxes=_rows(txt)))
    if names is None:
        top = max((int(r.classes.max()) for r in records if r.num_boxes), default=-1)
        names = [str(i) for i in range(top + 1)]
    has_splits = any(s for s in splits)
    info = SplitInfo("dataset") if has_splits else SplitInfo("none")
    report(1.0, f"read {len(records)} images")
    return DetectionDataset(root, "yolo", tuple(names), tuple(records), tuple(issues), info, source=path)


def write_yolo(dataset: DetectionDataset, out: Path, copy_images: bool = True) -> Path:
    """Write ``dataset`` as YOLO under ``out``: ``images/<split>/``, ``labels/<split>/`` and ``data.yaml``.

    Boxes are written as normalized ``class xc yc w h`` with 6 decimals; images with polygon segments are written
    as polygon rows (clipped to the image). Empty images get an empty label file. Returns the ``data.yaml`` path.
    """
    out.mkdir(parents=True, exist_ok=True)
    for rec, stem in zip(dataset.images, output_stems([r.key for r in dataset.images])):
        split = rec.split or "train"
        image_out = out / "images" / split / (stem + rec.path.suffix.lower())
        label_out = out / "labels" / split / f"{stem}.txt"
        image_out.parent.mkdir(parents=True, exist_ok=True)
        label_out.parent.mkdir(parents=True, exist_ok=True)
        if copy_images:
            shutil.copy2(rec.path, image_out)
        label_out.write_text(format_label_rows(rec))
    splits = [s for s in dataset.split_names if s]
    cfg: dict[str, object] = {"path": "."}
    for split in splits:
        cfg[split] = f"images/{split}"
    cfg["nc"] = dataset.num_classes
    cfg["names"] = list(dataset.class_names)
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return data_yaml


def format_label_rows(rec: ImageRecord) -> str:
    """The label file text of one record (normalized rows, polygons when the record has segments)."""
    w, h = float(rec.width), float(rec.height)
    lines = []
    if rec.segments is not None:
        for seg, cls in zip(rec.segments, rec.classes):
            pts = np.clip(seg / [w, h], 0.0, 1.0).reshape(-1)
            lines.append(f"{int(cls)} " + " ".join(f"{v:.6f}" for v in pts))
    else:
        for (x1, y1, x2, y2), cls in zip(rec.boxes, rec.classes):
            xc, yc, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            lines.append(f"{int(cls)} {xc:.6f} {yc:.6f} {bw:.6f} {bh:.6f}")
    return "".join(line + "\n" for line in lines)


def _rows(label: Path) -> int:
    """Label rows (boxes) in a label file that goes unused with its image; 0 when it cannot be read."""
    try:
        return sum(1 for line in label.read_text(errors="replace").splitlines() if line.strip())
    except OSError:
        return 0
