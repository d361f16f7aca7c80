"""COCO JSON detection annotations: read, write, and build the ground truth pycocotools evaluates against.

COCO ``bbox`` is ``[x, y, w, h]`` in pixels (top-left corner); we convert to pixel ``xyxy``. Our class ids are
contiguous (0 .. nc-1, in category-id order); written files and ``to_coco_dict`` use ``category_id = class_id + 1``
and ``image_id = position in the split + 1`` (pycocotools treats id 0 as "unmatched", so ids start at 1).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from core.data.files import exif_issue, is_image_file, normalize_split, output_stems, probe_image, walk_files
from core.data.progress import Progress, ProgressFn
from core.data.types import DetectionDataset, ImageRecord, Issue, SplitInfo


def coco_image_id(index: int) -> int:
    """COCO image id of the ``index``-th image (0-based) of a split, as used by ``to_coco_dict``."""
    return index + 1


def coco_category_id(class_id: int) -> int:
    """COCO category id of our 0-based class id, as used by ``to_coco_dict`` and ``write_coco``."""
    return class_id + 1


def _load_json(f: Path) -> dict | None:
    try:
        content = json.loads(f.read_text(errors="replace"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return None
    if isinstance(content, dict) and isinstance(content.get("images"), list) and "annotations" in content:
        return content
    return None


def find_coco_files(path: Path) -> list[Path]:
    """COCO annotation files at ``path`` (a .json, or a folder: ``annotations/*.json``, ``*.json``, ``*/*.json``)."""
    if path.is_file():
        return [path] if path.suffix.lower() == ".json" and _load_json(path) is not None else []
    candidates = sorted(path.glob("annotations/*.json")) + sorted(path.glob("*.json")) + sorted(path.glob("*/*.json"))
    seen: list[Path] = []
    for f in candidates:
        if f not in seen and _load_json(f) is not None:
            seen.append(f)
    return seen


def _split_of(json_file: Path) -> str:
    return normalize_split(json_file.stem) or normalize_split(json_file.parent.name) or ""


def _largest_polygon(segmentation: Any) -> np.ndarray | None:
    if not isinstance(segmentation, list) or not segmentation:
        return None
    polys = [np.asarray(p, dtype=np.float64) for p in segmentation if isinstance(p, list) and len(p) >= 6]
    polys = [p.reshape(-1, 2) for p in polys if len(p) % 2 == 0 and np.all(np.isfinite(p))]
    return max(polys, key=len) if polys else None


def _parse_annotation(
    ann: dict, cat_map: dict[Any, int | None], json_file: Path, issues: list[Issue]
) -> tuple[list[float], int, float | None] | None:
    """(pixel xyxy box, class id, stated area or None) of one annotation, or ``None`` (reported) when unusable."""
    bbox = ann.get("bbox") or []
    cls = cat_map.get(ann.get("category_id"))
    if cls is None:
        msg = f"annotation {ann.get('id')}: category_id {ann.get('category_id')} not in the classes"
        issues.append(Issue(str(json_file), "unknown_class", msg, "dropped"))
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
        if not np.all(np.isfinite([x, y, w, h])):
            raise ValueError
    except (TypeError, ValueError):
        issues.append(
            Issue(str(json_file), "malformed_box", f"annotation {ann.get('id')}: bad bbox {bbox!r:.60}", "dropped")
        )
        return None
    area = ann.get("area")
    stated = float(area) if isinstance(area, (int, float)) and np.isfinite(area) and area >= 0 else None
    return [x, y, x + w, y + h], cls, stated


class _ImageFinder:
    """Resolves ``file_name`` entries against the usual COCO layouts, with a basename index as last resort."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, Path] | None = None

    def find(self, file_name: str, json_file: Path, split: str) -> Path | None:
        bases = [json_file.parent, json_file.parent.parent, json_file.parent.parent / "images", self.root]
        bases += [self.root / "images", self.root / "images" / split, self.root / split, self.root / f"{split}2017"]
        bases += [json_file.parent.parent / "images" / split]
        for base in bases:
            p = base / file_name
            if p.is_file():
                return p
        if self._index is None:
            self._index = {}
            for f in walk_files(self.root):
                if is_image_file(f):
                    self._index.setdefault(f.name, f)
        return self._index.get(Path(file_name).name)


def read_coco(path: Path, class_names: list[str] | None = None, progress: ProgressFn | None = None) -> DetectionDataset:
    """Read one or several COCO JSON files (their split comes from the file or folder name).

    Crowd annotations (``iscrowd=1``) go to ``ImageRecord.crowd_boxes``: never trained on (as the official pipeline),
    given to the COCO evaluation as pycocotools' ignore regions. Each annotation's stated ``area`` is kept
    (``ImageRecord.areas``) for the evaluation's size buckets. Polygon segmentations are kept (the largest polygon of
    each object) when every object of an image has one. ``progress``: optional callback ``(fraction, message)``.
    """
    files = find_coco_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no COCO annotation JSON (with 'images' and 'annotations') found")
    root = path if path.is_dir() else path.parent
    issues: list[Issue] = []
    finder = _ImageFinder(root)
    # Categories: by name across files, ordered by the first file's category ids.
    names: list[str] = list(class_names) if class_names is not None else []
    contents = [(f, _load_json(f) or {}) for f in files]
    if class_names is None:
        for _, content in contents:
            for cat in sorted(content.get("categories") or [], key=lambda c: c.get("id", 0)):
                if str(cat.get("name")) not in names:
                    names.append(str(cat.get("name")))
    name_to_id = {n: i for i, n in enumerate(names)}
    records: list[ImageRecord] = []
    used_paths: set[Path] = set()
    report = Progress(progress)
    total = sum(len(content["images"]) for _, content in contents if content)
    done = 0
    for json_file, content in contents:
        split = _split_of(json_file)
        cat_map = {c.get("id"): name_to_id.get(str(c.get("name"))) for c in content.get("categories") or []}
        anns_by_image: dict[Any, list[dict]] = {}
        crowd = 0
        image_ids = {im.get("id") for im in content["images"] if isinstance(im, dict)}
        for ann in content.get("annotations") or []:
            if not isinstance(ann, dict):
                continue
            if ann.get("image_id") not in image_ids:
                issues.append(
                    Issue(
                        str(json_file),
                        "label_without_image",
                        f"annotation {ann.get('id')}: unknown image_id",
                        "dropped",
                    )
                )
                continue
            anns_by_image.setdefault(ann.get("image_id"), []).append(ann)
        seen_ids: set[Any] = set()
        for im in content["images"]:
            done += 1
            report.update(done, total, "reading images")
            if not isinstance(im, dict) or "file_name" not in im:
                issues.append(
                    Issue(str(json_file), "malformed_image_entry", f"image entry {im!r:.80}", "dropped", "image")
                )
                continue
            if im.get("id") in seen_ids:
                issues.append(
                    Issue(str(json_file), "duplicate_image_id", f"image id {im.get('id')}", "dropped", "image")
                )
                continue
            seen_ids.add(im.get("id"))
            image = finder.find(str(im["file_name"]), json_file, split)
            if image is None:
                issues.append(
                    Issue(
                        str(json_file),
                        "label_without_image",
                        f"image file '{im['file_name']}' not found",
                        "dropped",
                        "image",
                        boxes=len(anns_by_image.get(im.get("id"), [])),
                    )
                )
                continue
            probe = probe_image(image)
            if isinstance(probe, str):
                n_anns = len(anns_by_image.get(im.get("id"), []))
                issues.append(Issue(str(image), "unreadable_image", probe, "dropped", "image", boxes=n_anns))
                continue
            used_paths.add(image.resolve())
            declared = (int(im.get("width") or 0), int(im.get("height") or 0))
            if declared != (0, 0) and declared != (probe.width, probe.height):
                issues.append(
                    Issue(
                        str(image),
                        "size_mismatch",
                        f"JSON says {declared[0]}x{declared[1]}, image is {probe.width}x{probe.height}",
                        "kept (boxes checked against the real size)",
                        "image",
                    )
                )
            if probe.orientation != 1:
                issues.append(exif_issue(image, probe.orientation))
            boxes, classes, segs, areas, stated = [], [], [], [], False
            crowd_boxes, crowd_classes, crowd_areas = [], [], []
            for ann in anns_by_image.get(im.get("id"), []):
                parsed = _parse_annotation(ann, cat_map, json_file, issues)
                if parsed is None:
                    continue
                box, cls, area = parsed
                if ann.get("iscrowd", 0):
                    crowd += 1
                    crowd_boxes.append(box)
                    crowd_classes.append(cls)
                    crowd_areas.append(area if area is not None else (box[2] - box[0]) * (box[3] - box[1]))
                    continue
                stated = stated or area is not None
                boxes.append(box)
                classes.append(cls)
                areas.append(area if area is not None else (box[2] - box[0]) * (box[3] - box[1]))
                segs.append(_largest_polygon(ann.get("segmentation")))
            polygons = [s for s in segs if s is not None]
            segments = tuple(polygons) if segs and len(polygons) == len(segs) else None
            records.append(
                ImageRecord(
                    path=image.resolve(),
                    width=probe.width,
                    height=probe.height,
                    boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                    classes=np.asarray(classes, dtype=np.int64),
                    split=split,
                    key=Path(str(im["file_name"])).with_suffix("").as_posix(),
                    segments=segments,
                    label_file=json_file,
                    areas=np.asarray(areas, dtype=np.float64) if stated else None,
                    crowd_boxes=np.asarray(crowd_boxes, dtype=np.float64).reshape(-1, 4),
                    crowd_classes=np.asarray(crowd_classes, dtype=np.int64),
                    crowd_areas=np.asarray(crowd_areas, dtype=np.float64),
                )
            )
        if crowd:
            msg = "iscrowd=1 regions: not trained on (as the official pipeline), given to the COCO evaluation"
            issues.append(Issue(str(json_file), "crowd_annotation", msg, "kept for evaluation only", "box", crowd))
    for folder in sorted({r.path.parent for r in records}):
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.name.startswith(".") or f.suffix.lower() == ".json":
                continue
            if not is_image_file(f):
                issues.append(Issue(str(f), "non_image_file", "not an image file (by suffix)", "ignored", "file"))
            elif f.resolve() not in used_paths:
                msg = "not listed in any annotation file"
                issues.append(Issue(str(f), "image_without_labels", msg, "ignored", "image"))
    info = SplitInfo("dataset") if any(r.split for r in records) else SplitInfo("none")
    report(1.0, f"read {len(records)} images")
    return DetectionDataset(root, "coco", tuple(names), tuple(records), tuple(issues), info, source=path)


def to_coco_dict(dataset: DetectionDataset, split: str | None = None) -> dict[str, Any]:
    """COCO ground-truth dict of one split (``None``/``"all"``: every image), ready for ``pycocotools.coco.COCO``.

    ``image_id = position in dataset.split(split) + 1`` (see ``coco_image_id``), ``category_id = class_id + 1``,
    ``bbox`` is ``[x, y, w, h]`` in original image pixels; ``area`` is the annotation's stated area (COCO input) or
    ``w * h``; the crowd regions follow each image's boxes with ``iscrowd = 1``.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, rec in enumerate(dataset.split(split)):
        image_id = coco_image_id(index)
        images.append({"id": image_id, "file_name": rec.path.name, "width": rec.width, "height": rec.height})
        labels = [(b, c, a, 0) for b, c, a in zip(rec.boxes, rec.classes, rec.box_areas())]
        labels += [(b, c, a, 1) for b, c, a in zip(rec.crowd_boxes, rec.crowd_classes, rec.crowd_areas)]
        for box, cls, area, iscrowd in labels:
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": coco_category_id(int(cls)),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(area),
                "iscrowd": iscrowd,
            }
            annotations.append(ann)
    categories = [
        {"id": coco_category_id(i), "name": n, "supercategory": ""} for i, n in enumerate(dataset.class_names)
    ]
    return {
        "info": {"description": "yolov7-studio"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def to_coco_api(dataset: DetectionDataset, split: str | None = None) -> Any:
    """A ``pycocotools.coco.COCO`` object for one split (index built, no file written)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = to_coco_dict(dataset, split)
    coco.createIndex()
    return coco


def write_coco(dataset: DetectionDataset, out: Path, copy_images: bool = True) -> Path:
    """Write ``dataset`` as COCO: ``out/annotations/instances_<split>.json`` and ``out/images/<split>/``.

    Polygons are written as ``segmentation`` when the record has them. Returns ``out``.
    """
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    stems = {id(r): s for r, s in zip(dataset.images, output_stems([r.key for r in dataset.images]))}
    for split in dataset.split_names:
        name = split or "train"
        data = to_coco_dict(dataset, split)
        records = dataset.split(split)
        for entry, rec in zip(data["images"], records):
            entry["file_name"] = stems[id(rec)] + rec.path.suffix.lower()
            if copy_images:
                target = out / "images" / name / entry["file_name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(rec.path, target)
        by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for index, rec in enumerate(records):
            if rec.segments is not None:
                for ann, seg in zip(by_image.get(coco_image_id(index), []), rec.segments):
                    ann["segmentation"] = [[round(float(v), 2) for v in seg.reshape(-1)]]
        (out / "annotations" / f"instances_{name}.json").write_text(json.dumps(data))
    return out
