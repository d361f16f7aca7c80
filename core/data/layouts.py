"""What a folder holds that looks like annotations: said to the user when no labels were found in it.

A new user's dataset is often in a layout the reader did not expect (VOC without ``Annotations/``, a COCO JSON
beside the images, a labelling tool's export). Rather than treating every image as background in silence, the
loader reports which layouts it tried and which annotation-like files it saw (e.g. "200 .xml files in
annotations/ look like Pascal VOC").
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from core.data.io_voc import looks_like_voc

LAYOUTS_TRIED: dict[str, str] = {
    "yolo": "YOLO (data.yaml, or images/ + labels/ with classes.txt / obj.names, or .txt labels beside the images)",
    "voc": "Pascal VOC (Annotations/ + JPEGImages/, or a folder of <annotation> .xml files beside or among the images)",
    "csv": "CSV (one row per box: filename, width, height, class, xmin, ymin, xmax, ymax)",
    "coco": "COCO (a .json with 'images' and 'annotations': annotations/*.json, beside the images, or one level down)",
}
_CLASS_LISTS = frozenset({"classes.txt", "obj.names", "classes.names", "labels.txt", "data.yaml", "dataset.yaml"})
_SKIP_DIRS = frozenset({"__MACOSX", ".git"})


def _coco_summary(path: Path) -> str | None:
    """``"N images, M annotations"`` for a COCO-like JSON, else ``None`` (files over 512 MiB are not opened)."""
    try:
        if path.stat().st_size > 512 * 2**20:
            return None
        content = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    if isinstance(content, dict) and isinstance(content.get("images"), list) and "annotations" in content:
        return f"{len(content['images'])} images, {len(content.get('annotations') or [])} annotations"
    return None


def annotation_findings(folder: Path, max_depth: int = 3, max_files: int = 200_000) -> list[str]:
    """One line per kind of annotation-like file under ``folder`` (up to ``max_depth`` levels down).

    Lines look like ``"200 .xml files in annotations/ look like Pascal VOC"``, ``"instances.json looks like COCO
    (5 images, 12 annotations)"``, ``"30 .txt files in labels/ (YOLO label files?)"``, ``"classes.txt (class
    list)"``; an empty list when nothing annotation-like is there.
    """
    xml: Counter[str] = Counter()
    voc_xml: Counter[str] = Counter()
    txt: Counter[str] = Counter()
    csv: Counter[str] = Counter()
    lines: list[str] = []
    seen = 0
    root_depth = len(folder.parts)
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        depth = len(here.parts) - root_depth
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        if depth >= max_depth:
            dirnames[:] = []
        rel = here.relative_to(folder).as_posix()
        where = "the top folder" if rel == "." else f"{rel}/"
        for name in sorted(filenames):
            seen += 1
            if seen > max_files:
                break
            suffix = Path(name).suffix.lower()
            if name.lower() in _CLASS_LISTS:
                lines.append(f"{(here / name).relative_to(folder).as_posix()} (class list / dataset description)")
            elif suffix == ".xml":
                xml[where] += 1
                if voc_xml[where] < 1 and xml[where] <= 3 and looks_like_voc(here / name):
                    voc_xml[where] += 1
            elif suffix == ".json":
                summary = _coco_summary(here / name)
                rel_name = (here / name).relative_to(folder).as_posix()
                lines.append(f"{rel_name} looks like COCO ({summary})" if summary else f"{rel_name} (JSON, not COCO)")
            elif suffix == ".txt":
                txt[where] += 1
            elif suffix == ".csv":
                csv[where] += 1
    for name in ("annotations", "labels", "annots", "xml"):
        for d in (folder / name, folder / name.capitalize()):
            if d.is_dir() and not any(p.is_file() and not p.name.startswith(".") for p in d.rglob("*")):
                lines.append(f"{d.name}/ is empty (no annotation files in it)")
                break
    for where, n in xml.items():
        kind = "look like Pascal VOC" if voc_xml[where] else "(not Pascal VOC: no <annotation> root element)"
        lines.append(f"{n} .xml files in {where} {kind}")
    for where, n in txt.items():
        lines.append(f"{n} .txt files in {where} (YOLO label files?)")
    for where, n in csv.items():
        lines.append(
            f"{n} .csv files in {where} (CSV is read when it has the columns filename, class, xmin, ymin, xmax, ymax)"
        )
    return lines


def no_labels_message(folder: Path, format: str, detected: bool) -> str:
    """The explanation for a dataset read without a single labelled box."""
    how = "detected" if detected else "given"
    tried = "; ".join(LAYOUTS_TRIED.values()) if detected else LAYOUTS_TRIED.get(format, format)
    findings = annotation_findings(folder)
    found = "; ".join(findings[:12]) + (f"; ... {len(findings) - 12} more" if len(findings) > 12 else "")
    hints = [
        f"--format {f}"
        for f, key in (("voc", "like Pascal VOC"), ("coco", "like COCO"))
        if f != format and any(key in x for x in findings)
    ]
    advice = f"Try {' or '.join(hints)}." if hints else ""
    return (
        f"no labelled box found (format {format.upper()}, {how}); every image would be a background image. "
        f"Layouts tried: {tried}. Found: {found or 'no annotation-like files (.xml, .json, .txt, .csv)'}. "
        + (
            advice
            or "If the labels are there, pass the format (--format) or arrange the files in one of these layouts."
        )
    )
