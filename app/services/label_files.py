"""One image's labels in a dataset's own format (YOLO ``.txt``, Pascal VOC ``.xml``, COCO ``.json``): read, write
atomically, and edit the class list. Used by :mod:`app.services.annotations`.

The image index (paths, sizes, splits, which file holds the labels) comes from ``core.data.load_dataset`` and is
cached per dataset path; the labels themselves are always read fresh from disk, so a save never works on stale
boxes. ``content`` is the raw label data of one image as plain JSON (file text, or the image's COCO annotation
dicts); ``token_of(content)`` is the version token the editor hands back on save.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.data import label_path_for

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


class AnnotationError(ValueError):
    """A request the label editor refuses; the message names the image or file and the problem."""


def token_of(content: Any) -> str:
    """Version token of one image's label content (sha256 of its canonical JSON, 16 hex digits)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


yolo_label_path = label_path_for  # the official images/ -> labels/ rule, as the YOLO reader applies it


def write_data_yaml(path: Path, names: list[str], splits: tuple[str, ...]) -> None:
    cfg: dict[str, Any] = {"path": "."}
    cfg.update({s: f"images/{s}" for s in splits})
    cfg.update({"nc": len(names), "names": list(names)})
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))


@dataclass
class LabelSource:
    """A dataset opened for label editing (see the module docstring)."""

    path: Path  # what the workspace lists (data.yaml, folder or json)
    root: Path
    format: str
    images: tuple[Any, ...]  # core.data.ImageRecord (labels as read at index time: use read_boxes instead)
    index_names: tuple[str, ...]
    _by_key: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rec in self.images:
            self._by_key.setdefault(rec.key, rec)

    # -- images ------------------------------------------------------------------------------------------------
    def record(self, key: str) -> Any:
        rec = self._by_key.get(key)
        if rec is None:
            raise AnnotationError(f"no image {key!r} in this dataset")
        return rec

    def dataset(self) -> Any:
        """The dataset with every image's labels as they are now (for writing a training subset)."""
        from core.data import DetectionDataset

        names = self.class_names()
        recs = []
        for rec in self.images:
            boxes, classes = self.read_boxes(rec.key, names)
            recs.append(rec.with_labels(boxes, classes))
        return DetectionDataset(self.root, self.format, tuple(names), tuple(recs))

    def label_path(self, key: str) -> Path:
        rec = self.record(key)
        if self.format == "yolo":
            return yolo_label_path(rec.path)
        if self.format == "voc":
            if rec.label_file is not None:
                return Path(rec.label_file)
            ann = self.root / "Annotations"
            return (ann if ann.is_dir() else rec.path.parent) / f"{rec.path.stem}.xml"
        return Path(rec.label_file)

    def has_labels(self, key: str) -> bool:
        return self.format == "coco" or self.label_path(key).is_file()

    # -- one image's content ---------------------------------------------------------------------------------------
    def _coco(self, key: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
        path = self.label_path(key)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AnnotationError(f"{path}: cannot read the COCO annotations ({exc})") from None
        for im in data.get("images") or []:
            if isinstance(im, dict) and Path(str(im.get("file_name", ""))).with_suffix("").as_posix() == key:
                return path, data, im
        raise AnnotationError(f"{path}: no image entry for {key!r} (the file changed since the dataset was opened)")

    def read_content(self, key: str) -> Any:
        if self.format == "coco":
            _, data, im = self._coco(key)
            anns = [a for a in data.get("annotations") or [] if isinstance(a, dict) and a.get("image_id") == im["id"]]
            return {"annotations": sorted(anns, key=lambda a: str(a.get("id")))}
        path = self.label_path(key)
        try:
            return {"exists": True, "text": path.read_text(encoding="utf-8", errors="replace")}
        except FileNotFoundError:
            return {"exists": False, "text": ""}
        except OSError as exc:
            raise AnnotationError(f"{path}: cannot read ({exc})") from None

    def write_content(self, key: str, content: Any) -> None:
        """Put back one image's raw content (an undo)."""
        if self.format == "coco":
            path, data, im = self._coco(key)
            others = [
                a for a in data.get("annotations") or [] if not (isinstance(a, dict) and a.get("image_id") == im["id"])
            ]
            data["annotations"] = others + list(content["annotations"])
            atomic_write_text(path, json.dumps(data))
            return
        path = self.label_path(key)
        if content.get("exists"):
            atomic_write_text(path, content["text"])
        else:
            path.unlink(missing_ok=True)

    def read_boxes(self, key: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 4]`` pixel xyxy and ``[N]`` class ids (indices of ``names``) as the label file says now."""
        rec = self.record(key)
        if self.format == "coco":
            _, data, im = self._coco(key)
            cat_names = {c.get("id"): str(c.get("name")) for c in data.get("categories") or [] if isinstance(c, dict)}
            boxes, classes = [], []
            for a in self.read_content(key)["annotations"]:
                if a.get("iscrowd", 0):
                    continue
                name = cat_names.get(a.get("category_id"))
                try:
                    x, y, w, h = (float(v) for v in a["bbox"])
                except (KeyError, TypeError, ValueError):
                    raise AnnotationError(
                        f"{self.label_path(key)}: annotation {a.get('id')} has no valid bbox"
                    ) from None
                if name not in names:
                    raise AnnotationError(f"{self.label_path(key)}: annotation {a.get('id')}: unknown category")
                boxes.append([x, y, x + w, y + h])
                classes.append(names.index(name))
            return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int64)
        path = self.label_path(key)
        if not path.is_file():
            return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
        from core.explore import LabelError, read_labels

        try:
            return read_labels(path, rec.width, rec.height, names)
        except LabelError as exc:
            raise AnnotationError(str(exc)) from None

    def write_boxes(self, key: str, boxes: np.ndarray, classes: np.ndarray, names: list[str]) -> None:
        """Write one image's boxes in the dataset's format (atomically)."""
        rec = self.record(key)
        if self.format == "yolo":
            w, h = float(rec.width), float(rec.height)
            rows = []
            for (x1, y1, x2, y2), c in zip(boxes.tolist(), classes.tolist()):
                rows.append(
                    f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
                )
            atomic_write_text(self.label_path(key), "".join(rows))
        elif self.format == "voc":
            self._write_voc(key, rec, boxes, classes, names)
        else:
            self._write_coco(key, boxes, classes, names)

    def _write_voc(self, key: str, rec: Any, boxes: np.ndarray, classes: np.ndarray, names: list[str]) -> None:
        path = self.label_path(key)
        if path.is_file():
            try:
                ann = ET.parse(path).getroot()
            except ET.ParseError as exc:
                raise AnnotationError(f"{path}: not readable XML ({exc}); fix or remove it first") from None
            for obj in ann.findall("object"):
                ann.remove(obj)
        else:
            ann = ET.Element("annotation")
            ET.SubElement(ann, "folder").text = path.parent.name
            ET.SubElement(ann, "filename").text = rec.path.name
            size = ET.SubElement(ann, "size")
            for tag, v in (("width", rec.width), ("height", rec.height), ("depth", 3)):
                ET.SubElement(size, tag).text = str(v)
            ET.SubElement(ann, "segmented").text = "0"
        for box, c in zip(boxes.tolist(), classes.tolist()):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = names[c]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            bnd = ET.SubElement(obj, "bndbox")
            for tag, v in zip(_BOX_TAGS, box):
                r = round(float(v), 2)
                ET.SubElement(bnd, tag).text = str(int(r)) if r == int(r) else f"{r:.2f}"
        ET.indent(ann, space="\t")
        atomic_write_text(path, ET.tostring(ann, encoding="unicode") + "\n")

    def _write_coco(self, key: str, boxes: np.ndarray, classes: np.ndarray, names: list[str]) -> None:
        path, data, im = self._coco(key)
        cat_id = {str(c.get("name")): c.get("id") for c in data.get("categories") or [] if isinstance(c, dict)}
        anns = data.get("annotations") or []
        mine = [a for a in anns if isinstance(a, dict) and a.get("image_id") == im["id"]]
        others = [a for a in anns if not (isinstance(a, dict) and a.get("image_id") == im["id"])]
        kept = [a for a in mine if a.get("iscrowd", 0)]
        old = [a for a in mine if not a.get("iscrowd", 0)]
        next_id = 1 + max(
            (int(a["id"]) for a in anns if isinstance(a, dict) and isinstance(a.get("id"), int)), default=0
        )
        for (x1, y1, x2, y2), c in zip(boxes.tolist(), classes.tolist()):
            bbox = [x1, y1, x2 - x1, y2 - y1]
            same = next(
                (a for a in old if a.get("category_id") == cat_id[names[c]]
                 and np.allclose(a.get("bbox", []), bbox, atol=1e-6)), None,
            )  # fmt: skip
            if same is not None:  # unchanged boxes keep their id, segmentation and other fields
                old.remove(same)
                kept.append(same)
                continue
            new = {"id": next_id, "image_id": im["id"], "category_id": cat_id[names[c]], "iscrowd": 0}
            kept.append({**new, "bbox": [round(v, 3) for v in bbox], "area": round(bbox[2] * bbox[3], 3)})
            next_id += 1
        data["annotations"] = others + kept
        atomic_write_text(path, json.dumps(data))

    # -- the class list ------------------------------------------------------------------------------------------------
    def _yaml(self) -> Path | None:
        if self.path.is_file() and self.path.suffix.lower() in (".yaml", ".yml"):
            return self.path
        for name in _YAML_NAMES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def _coco_files(self) -> list[Path]:
        return sorted({Path(r.label_file) for r in self.images if r.label_file is not None})

    def class_names(self) -> list[str]:
        if self.format == "yolo":
            y = self._yaml()
            if y is not None:
                cfg = yaml.safe_load(y.read_text()) or {}
                names = cfg.get("names")
                if isinstance(names, dict):
                    return [str(names[k]) for k in sorted(names, key=int)]
                if isinstance(names, list):
                    return [str(n) for n in names]
            return list(self.index_names)
        if self.format == "voc":
            f = self.root / "classes.txt"
            if f.is_file():
                return [line.strip() for line in f.read_text().splitlines() if line.strip()]
            return list(self.index_names)
        names: list[str] = []
        for path in self._coco_files():
            data = json.loads(path.read_text())
            for cat in sorted(data.get("categories") or [], key=lambda c: c.get("id", 0)):
                if str(cat.get("name")) not in names:
                    names.append(str(cat.get("name")))
        return names

    def _set_names(self, names: list[str]) -> None:
        if self.format == "yolo":
            y = self._yaml()
            if y is None:
                raise AnnotationError(f"{self.root}: no data.yaml to keep the class list in")
            cfg = yaml.safe_load(y.read_text()) or {}
            cfg["names"] = list(names)
            cfg["nc"] = len(names)
            atomic_write_text(y, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        elif self.format == "voc":
            atomic_write_text(self.root / "classes.txt", "".join(f"{n}\n" for n in names))

    def add_class(self, name: str) -> None:
        names = self.class_names()
        if self.format == "coco":
            for path in self._coco_files():
                data = json.loads(path.read_text())
                cats = data.setdefault("categories", [])
                if not any(str(c.get("name")) == name for c in cats):
                    cats.append({"id": 1 + max((int(c.get("id", 0)) for c in cats), default=0), "name": name,
                                 "supercategory": ""})  # fmt: skip
                    atomic_write_text(path, json.dumps(data))
        else:
            self._set_names(names + [name])

    def rename_class(self, old: str, new: str) -> None:
        names = self.class_names()
        if self.format == "coco":
            for path in self._coco_files():
                data = json.loads(path.read_text())
                for c in data.get("categories") or []:
                    if str(c.get("name")) == old:
                        c["name"] = new
                atomic_write_text(path, json.dumps(data))
            return
        if self.format == "voc":  # VOC stores names in every file
            for rec in self.images:
                p = self.label_path(rec.key)
                if not p.is_file():
                    continue
                tree = ET.parse(p)
                changed = False
                for obj in tree.getroot().findall("object"):
                    n = obj.find("name")
                    if n is not None and (n.text or "").strip() == old:
                        n.text, changed = new, True
                if changed:
                    atomic_write_text(p, ET.tostring(tree.getroot(), encoding="unicode") + "\n")
        self._set_names([new if n == old else n for n in names])


_cache: dict[str, LabelSource] = {}
_cache_lock = threading.Lock()


def _signature(path: Path) -> tuple[Any, ...]:
    """Changes when images are added or removed (folder mtimes), not when labels are edited."""
    root = path if path.is_dir() else path.parent
    dirs = [root] + [d for d in root.glob("*") if d.is_dir()] + [d for d in root.glob("images/*") if d.is_dir()]
    return tuple(sorted((str(d), d.stat().st_mtime_ns) for d in dirs if not d.name.startswith(".")))


def open_source(path: Path) -> LabelSource:
    """The (cached) label source of a dataset file or folder; errors name the path."""
    from core.data import load_dataset

    path = Path(path)
    sig = (str(path), _signature(path) if path.exists() else ())
    with _cache_lock:
        src = _cache.get(str(path))
        if src is not None and getattr(src, "_sig", None) == sig:
            return src
    try:
        ds = load_dataset(path)
    except Exception as exc:
        raise AnnotationError(f"{path}: cannot be read as a dataset ({exc})") from None
    if ds.format not in ("yolo", "voc", "coco"):
        raise AnnotationError(f"{path}: format {ds.format!r} cannot be edited (YOLO, VOC or COCO only)")
    root = Path(ds.root)
    if root.is_file():
        root = root.parent
    src = LabelSource(path, root, ds.format, ds.images, ds.class_names)
    src._sig = sig  # type: ignore[attr-defined]
    with _cache_lock:
        _cache[str(path)] = src
    return src


def forget(path: Path) -> None:
    """Drop cached sources under ``path`` (after images were added)."""
    with _cache_lock:
        for k in [k for k in _cache if k.startswith(str(path))]:
            del _cache[k]
