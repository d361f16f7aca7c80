"""Pascal VOC: ``Annotations/*.xml`` + ``JPEGImages/`` + ``ImageSets/Main/{train,val,test}.txt``; read and write.

VOC ``bndbox`` values are taken as pixel ``xyxy`` as written (no 1-based shift), so that a VOC -> other -> VOC round
trip is exact and boxes touching the right/bottom border (``xmax == width``) stay inside the image.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from core.data.files import is_image_file, output_stems, probe_image, walk_files
from core.data.types import DetectionDataset, ImageRecord, Issue, SplitInfo

_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def find_voc_root(path: Path, max_depth: int = 3) -> Path | None:
    """The folder holding ``Annotations/`` (searched up to ``max_depth`` levels down, e.g. ``VOCdevkit/VOC2007``)."""
    frontier = [path]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for folder in frontier:
            if (folder / "Annotations").is_dir():
                return folder
            nxt.extend(sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
        frontier = nxt
    return None


def _read_split_lists(root: Path) -> dict[str, str]:
    """Image id -> split from ``ImageSets/Main``; trainval stands for train when there is no train/val list."""
    main = root / "ImageSets" / "Main"
    lists: dict[str, list[str]] = {}
    for name in ("train", "val", "test", "trainval"):
        f = main / f"{name}.txt"
        if f.is_file():
            ids = [line.split()[0] for line in f.read_text(errors="replace").splitlines() if line.strip()]
            lists[name] = ids
    if "trainval" in lists and not ("train" in lists or "val" in lists):
        lists["train"] = lists["trainval"]
    lists.pop("trainval", None)
    assignment: dict[str, str] = {}
    for split in ("test", "val", "train"):  # a later (train) entry never overrides val/test
        for image_id in lists.get(split, []):
            assignment.setdefault(image_id, split)
    return assignment


def _parse_xml(xml_file: Path) -> tuple[dict, list[Issue]]:
    """Parse one annotation file; raises ``ET.ParseError``/``ValueError`` for a file that cannot be used at all."""
    issues: list[Issue] = []
    tree = ET.parse(xml_file)
    root = tree.getroot()
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, expected <annotation>")
    info: dict = {"filename": (root.findtext("filename") or "").strip(), "size": None, "objects": []}
    size = root.find("size")
    if size is not None:
        try:
            info["size"] = (int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0)))
        except ValueError:
            issues.append(Issue(str(xml_file), "malformed_annotation", "<size> is not numeric", "ignored", "file"))
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        if not name or bnd is None:
            issues.append(Issue(str(xml_file), "malformed_box", f"object {k} has no <name> or <bndbox>", "dropped"))
            continue
        try:
            coords = [float(bnd.findtext(t) or "nan") for t in _BOX_TAGS]
        except ValueError:
            coords = [float("nan")]
        if len(coords) != 4 or not np.all(np.isfinite(coords)):
            issues.append(Issue(str(xml_file), "malformed_box", f"object {k} ({name}): bad <bndbox> values", "dropped"))
            continue
        info["objects"].append((name, coords))
    return info, issues


def read_voc(path: Path, class_names: list[str] | None = None) -> DetectionDataset:
    """Read a Pascal VOC folder.

    Args:
        path: the VOC folder (or a parent such as ``VOCdevkit``).
        class_names: fixed class order; objects with other names are dropped as unknown classes. Default: the order
            of ``classes.txt`` (or ``labels.txt``) in the VOC folder if present, else the sorted names found.
    """
    root = find_voc_root(path)
    if root is None:
        raise FileNotFoundError(f"{path}: no Annotations/ folder found (not a Pascal VOC dataset)")
    issues: list[Issue] = []
    image_dir = next((root / d for d in ("JPEGImages", "images", "Images") if (root / d).is_dir()), root / "JPEGImages")
    images_by_stem: dict[str, Path] = {}
    for f in walk_files(image_dir) if image_dir.is_dir() else []:
        if is_image_file(f):
            images_by_stem.setdefault(f.relative_to(image_dir).with_suffix("").as_posix(), f)
        else:
            issues.append(Issue(str(f), "non_image_file", "not an image file (by suffix)", "ignored", "file"))
    parsed: dict[str, tuple[Path, dict]] = {}
    for ann_file in sorted((root / "Annotations").glob("*.xml")):
        try:
            content, xml_issues = _parse_xml(ann_file)
        except (ET.ParseError, ValueError, OSError) as exc:
            issues.append(
                Issue(str(ann_file), "corrupt_annotation", f"cannot parse: {exc}", "dropped (image left out)", "image")
            )
            parsed[ann_file.stem] = (ann_file, {"broken": True})
            continue
        issues.extend(xml_issues)
        parsed[ann_file.stem] = (ann_file, content)
    for other in sorted((root / "Annotations").iterdir()):
        if other.is_file() and other.suffix.lower() != ".xml" and not other.name.startswith("."):
            issues.append(Issue(str(other), "non_annotation_file", "not an .xml annotation", "ignored", "file"))

    names_found = sorted({n for _, info in parsed.values() for n, _ in info.get("objects", [])})
    names = list(class_names) if class_names is not None else _class_file_order(root, names_found)
    name_to_id = {n: i for i, n in enumerate(names)}
    split_of = _read_split_lists(root)
    has_splits = bool(split_of)

    records: list[ImageRecord] = []
    for stem in sorted(set(images_by_stem) | set(parsed)):
        entry: tuple[Path | None, dict | None] = parsed.get(stem, (None, None))
        xml_file, info = entry
        image = images_by_stem.get(stem)
        if image is None and info is not None and info.get("filename"):
            candidate = image_dir / info["filename"]
            image = candidate if candidate.is_file() else None
        if image is None:
            issues.append(Issue(str(xml_file), "label_without_image", f"no image for '{stem}'", "dropped", "image"))
            continue
        if info is not None and info.get("broken"):
            continue
        split = split_of.get(stem, "")  # "" = no split yet: core.data.load makes a seeded one
        if has_splits and not split:
            issues.append(Issue(str(image), "not_in_split", "not listed in ImageSets/Main/*.txt", "dropped", "image"))
            continue
        probe = probe_image(image)
        if isinstance(probe, str):
            issues.append(Issue(str(image), "unreadable_image", probe, "dropped", "image"))
            continue
        boxes, classes = [], []
        if info is None:
            issues.append(
                Issue(str(image), "image_without_labels", "no annotation file: used as background", "kept", "image")
            )
        else:
            if info["size"] and info["size"] != (probe.width, probe.height) and info["size"] != (0, 0):
                issues.append(
                    Issue(
                        str(xml_file),
                        "size_mismatch",
                        f"<size> says {info['size'][0]}x{info['size'][1]}, image is {probe.width}x{probe.height}",
                        "kept (boxes checked against the real size)",
                        "image",
                    )
                )
            for name, coords in info["objects"]:
                if name not in name_to_id:
                    issues.append(Issue(str(xml_file), "unknown_class", f"class '{name}' not in {names}", "dropped"))
                    continue
                boxes.append(coords)
                classes.append(name_to_id[name])
        if probe.orientation != 1:
            issues.append(_exif_issue(image, probe.orientation))
        records.append(
            ImageRecord(
                path=image.resolve(),
                width=probe.width,
                height=probe.height,
                boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                classes=np.asarray(classes, dtype=np.int64),
                split=split,
                key=stem,
                label_file=xml_file,
            )
        )
    split_info = SplitInfo("dataset") if has_splits else SplitInfo("none")
    return DetectionDataset(root, "voc", tuple(names), tuple(records), tuple(issues), split_info, source=path)


def _class_file_order(root: Path, names_found: list[str]) -> list[str]:
    """Class order from ``classes.txt`` / ``labels.txt`` when present (names it lacks are appended, sorted)."""
    for name in ("classes.txt", "labels.txt"):
        f = root / name
        if f.is_file():
            listed = [n.strip() for n in f.read_text(errors="replace").splitlines() if n.strip()]
            return listed + [n for n in names_found if n not in listed]
    return names_found


def _exif_issue(image: Path, orientation: int) -> Issue:
    return Issue(
        str(image),
        "exif_rotated",
        f"EXIF orientation {orientation}: the image is used as displayed (rotated); labels must refer to that view",
        "kept",
        "image",
    )


def write_voc(dataset: DetectionDataset, out: Path, copy_images: bool = True) -> Path:
    """Write ``dataset`` as Pascal VOC under ``out`` (Annotations/, JPEGImages/, ImageSets/Main/); returns ``out``.

    Boxes are written with 2 decimals when not whole pixels. Image files are copied (or referenced by name only with
    ``copy_images=False``). File stems are the image stems (keys flattened with ``__`` where stems collide).
    """
    ann_dir, img_dir, sets_dir = out / "Annotations", out / "JPEGImages", out / "ImageSets" / "Main"
    for d in (ann_dir, img_dir, sets_dir):
        d.mkdir(parents=True, exist_ok=True)
    split_ids: dict[str, list[str]] = {}
    for rec, stem in zip(dataset.images, output_stems([r.key for r in dataset.images])):
        image_name = stem + rec.path.suffix.lower()
        if copy_images:
            shutil.copy2(rec.path, img_dir / image_name)
        split_ids.setdefault(rec.split, []).append(stem)
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = "JPEGImages"
        ET.SubElement(ann, "filename").text = image_name
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text = str(rec.width)
        ET.SubElement(size, "height").text = str(rec.height)
        ET.SubElement(size, "depth").text = "3"
        ET.SubElement(ann, "segmented").text = "0"
        for box, cls in zip(rec.boxes, rec.classes):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = dataset.class_names[int(cls)]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            bnd = ET.SubElement(obj, "bndbox")
            for tag, value in zip(_BOX_TAGS, box):
                ET.SubElement(bnd, tag).text = _fmt(value)
        ET.indent(ann, space="\t")
        ET.ElementTree(ann).write(ann_dir / f"{stem}.xml", encoding="utf-8", xml_declaration=False)
    (out / "classes.txt").write_text("".join(f"{n}\n" for n in dataset.class_names))  # VOC has no class order
    for split, ids in split_ids.items():
        (sets_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    if "train" in split_ids and "val" in split_ids:
        (sets_dir / "trainval.txt").write_text("".join(f"{i}\n" for i in split_ids["train"] + split_ids["val"]))
    return out


def _fmt(value: float) -> str:
    rounded = round(float(value), 2)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.2f}"
