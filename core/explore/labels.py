"""Ground truth of ONE image for the explorer: a YOLO ``.txt`` label file or a Pascal VOC ``.xml`` annotation.

Unlike the dataset readers (which drop bad rows and report them), a single-image label file is all-or-nothing:
any malformed row, unknown class or size mismatch raises :class:`LabelError` with the file, the line/object and
the reason, because silently drawing a partial assignment would mislead.

Formats
* YOLO: one ``class xc yc w h`` row per box, normalized to the image size (a polygon file, rows of more than 8
  values, is read as the polygons' extents, as the official loader does). Class ids index the model's classes.
* VOC: ``<object><name>`` + ``<bndbox>`` with pixel ``xmin ymin xmax ymax`` as written (no 1-based shift, as
  :mod:`core.data.io_voc`); names must be class names of the model.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.data.io_voc import _parse_xml
from core.data.io_yolo import parse_label_file

__all__ = ["LabelError", "read_labels", "voc_class_names"]


class LabelError(ValueError):
    """A label file that cannot be used for the explorer; the message names the file and the problem."""


def read_labels(path: str | Path, width: int, height: int,
                class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Boxes ``[N, 4]`` (original-pixel xyxy, float64) and class ids ``[N]`` (int64) of an image of ``width`` x
    ``height`` from a YOLO ``.txt`` or VOC ``.xml`` file; ``class_names`` are the model's classes (in order)."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such label file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _read_yolo(path, width, height, len(class_names))
    if suffix == ".xml":
        return _read_voc(path, width, height, class_names)
    raise LabelError(f"{path}: unsupported label file (expected a YOLO .txt or a Pascal VOC .xml)")


def voc_class_names(path: str | Path) -> list[str]:
    """Class names used in a VOC ``.xml`` file, sorted (to build a fresh model for it)."""
    try:
        info, _ = _parse_xml(Path(path))
    except (ET.ParseError, ValueError, OSError) as exc:
        raise LabelError(f"{path}: cannot parse ({exc})") from None
    return sorted({name for name, _ in info["objects"]})


def _read_yolo(path: Path, width: int, height: int, nc: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        boxes, classes, _, issues = parse_label_file(path, width, height, nc)
    except (OSError, UnicodeError) as exc:
        raise LabelError(f"{path}: cannot read ({exc})") from None
    problems = [i for i in issues if i.action == "dropped"]
    if problems:
        first = problems[0]
        kind = "unknown class" if first.kind == "unknown_class" else "malformed row"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LabelError(f"{path}: {kind}: {first.message}{more}; YOLO rows are 'class xc yc w h' normalized to "
                         f"the image, class ids 0..{nc - 1}")  # fmt: skip
    norm = boxes / np.array([width, height, width, height], dtype=np.float64) if len(boxes) else boxes
    if len(boxes) and (norm.min() < -0.01 or norm.max() > 1.01):
        raise LabelError(f"{path}: coordinates outside 0..1: YOLO labels must be normalized to the image size")
    return boxes, classes


def _read_voc(path: Path, width: int, height: int, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    try:
        info, issues = _parse_xml(path)
    except (ET.ParseError, ValueError, OSError) as exc:
        raise LabelError(f"{path}: not a Pascal VOC annotation ({exc})") from None
    bad = [i for i in issues if i.action == "dropped"]
    if bad:
        raise LabelError(f"{path}: {bad[0].message}")
    size = info.get("size")
    if size and size[0] > 0 and size[1] > 0 and tuple(size) != (width, height):
        raise LabelError(f"{path}: annotation is for a {size[0]}x{size[1]} image, the image is {width}x{height}")
    index = {n: i for i, n in enumerate(class_names)}
    boxes, classes = [], []
    for k, (name, coords) in enumerate(info["objects"]):
        if name not in index:
            raise LabelError(f"{path}: object {k}: unknown class '{name}' (model classes: {', '.join(class_names)})")
        boxes.append(coords)
        classes.append(index[name])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int64)
