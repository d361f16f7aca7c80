"""Pascal VOC: ``Annotations/*.xml`` + ``JPEGImages/`` + ``ImageSets/Main/{train,val,test}.txt``; read and write.

Read also as people publish VOC datasets: a folder of .xml files of any name beside a folder of images of any name
(``images/`` + ``annotations/`` or ``annots/``), or the .xml files beside the images; without ``ImageSets/``. An
image and its .xml are paired by file name (relative path, then bare name) and by the xml's ``<filename>``.

VOC ``bndbox`` values are taken as pixel ``xyxy`` as written (no 1-based shift), so that a VOC -> other -> VOC round
trip is exact and boxes touching the right/bottom border (``xmax == width``) stay inside the image.
"""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.files import exif_issue, is_image_file, normalize_split, output_stems, probe_image, walk_files
from core.data.progress import Progress, ProgressFn
from core.data.types import DetectionDataset, ImageRecord, Issue, SplitInfo

_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


_CLASSIC_ANNOTATIONS = "annotations"
_IMAGE_FOLDER_NAMES = ("jpegimages", "images", "imgs", "img", "pictures", "photos")


@dataclass(frozen=True)
class VocLayout:
    """Where a Pascal VOC dataset keeps its files: ``annotations`` (folder of .xml) and ``images`` (folder searched
    for the images; the same folder when the .xml files sit beside the images)."""

    root: Path
    annotations: Path
    images: Path


def looks_like_voc(xml_file: Path) -> bool:
    """True when the file starts like a VOC annotation (an ``<annotation>`` root element); reads at most 4 KiB."""
    try:
        with open(xml_file, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"<annotation[\s>]", head) is not None


def _is_xml(path: Path) -> bool:
    return path.suffix.lower() == ".xml" and not path.name.startswith(".")


def _voc_xml_in(folder: Path, depth: int = 1, sniff: bool = True, sample: int = 3) -> bool:
    """Does ``folder`` (or a subfolder up to ``depth`` levels down) hold .xml files (that look like VOC, with
    ``sniff``: one of the first ``sample`` has an ``<annotation>`` root)?"""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return False
    xmls = [Path(e.path) for e in entries if e.is_file() and _is_xml(Path(e.name))]
    if xmls:
        return not sniff or any(looks_like_voc(f) for f in xmls[:sample])
    if depth > 0:
        return any(
            _voc_xml_in(Path(e.path), depth - 1, sniff, sample)
            for e in entries
            if e.is_dir() and not e.name.startswith(".")
        )
    return False


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")
    except OSError:
        return []


def _count_images(folder: Path) -> int:
    return sum(1 for f in walk_files(folder) if is_image_file(f))


def _image_folder(root: Path, annotations: Path) -> Path:
    """The images of a VOC layout: ``JPEGImages``/``images`` (any case), else the sibling folder with the most images,
    else the annotation folder itself (images beside their .xml), else ``root``."""
    siblings = [d for d in _subfolders(root) if d != annotations]
    for name in _IMAGE_FOLDER_NAMES:
        for d in siblings:
            if d.name.lower() == name:
                return d
    counted = [(n, d) for d in siblings if (n := _count_images(d))]
    if counted:
        return max(counted, key=lambda nd: nd[0])[1]
    if any(is_image_file(f) for f in walk_files(annotations)):
        return annotations
    return root


def find_voc_layout(path: Path, max_depth: int = 3) -> VocLayout | None:
    """Find a Pascal VOC layout at ``path`` or up to ``max_depth`` levels below (e.g. ``VOCdevkit/VOC2007``).

    Recognised: ``Annotations/`` (any case) beside ``JPEGImages/`` (the official layout); a folder of VOC .xml files
    of any name (``annotations/``, ``annots/``, ``xml/`` ...) beside a folder of images of any name; .xml files
    beside the images. A .xml file counts as VOC when its root element is ``<annotation>``.
    """
    frontier = [path] if path.is_dir() else []
    for _ in range(max_depth + 1):
        for folder in frontier:  # the official name first, at each depth
            for d in _subfolders(folder):
                if d.name.lower() == _CLASSIC_ANNOTATIONS and _voc_xml_in(d, sniff=False):
                    return VocLayout(folder, d, _image_folder(folder, d))
        for folder in frontier:
            if _voc_xml_in(folder, depth=0):  # xml beside the images
                if folder == path and not any(is_image_file(f) for f in walk_files(folder)):
                    images = _image_folder(path.parent, path)  # the annotation folder itself was given
                    if images not in (path, path.parent) or any(is_image_file(f) for f in _files_in(path.parent)):
                        return VocLayout(path.parent, path, images)
                return VocLayout(folder, folder, folder)
            for d in _subfolders(folder):
                if _voc_xml_in(d):
                    return VocLayout(folder, d, _image_folder(folder, d))
        frontier = [d for folder in frontier for d in _subfolders(folder)]
    return None


def _files_in(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def find_voc_root(path: Path, max_depth: int = 3) -> Path | None:
    """The folder of a VOC dataset at or below ``path`` (see ``find_voc_layout``), or ``None``."""
    layout = find_voc_layout(path, max_depth)
    return layout.root if layout is not None else None


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
    info: dict = {"filename": (root.findtext("filename") or "").strip(), "size": None, "objects": [], "bad": 0}
    size = root.find("size")
    if size is None:
        info["no_size"] = True
    else:
        try:
            info["size"] = (int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0)))
        except ValueError:
            issues.append(Issue(str(xml_file), "malformed_annotation", "<size> is not numeric", "ignored", "file"))
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        bnd = obj.find("bndbox")
        missing = [t for t, v in (("<name>", name), ("<bndbox>", bnd)) if v is None or v == ""]
        if missing:
            message = f"object {k}: {' and '.join(missing)} missing"
            issues.append(Issue(str(xml_file), "malformed_box", message, "dropped"))
            info["bad"] += 1
            continue
        assert bnd is not None
        coords, problems = [], []
        for tag in _BOX_TAGS:
            text = (bnd.findtext(tag) or "").strip()
            try:
                value = float(text) if text else float("nan")
            except ValueError:
                value = float("nan")
            if not text:
                problems.append(f"<{tag}> missing")
            elif not np.isfinite(value):
                problems.append(f"<{tag}> is {text!r}, not a number")
            coords.append(value)
        if problems:
            message = f"object {k} ({name}): " + ", ".join(problems) + " in <bndbox>"
            issues.append(Issue(str(xml_file), "malformed_box", message, "dropped"))
            info["bad"] += 1
            continue
        info["objects"].append((name, coords))
    return info, issues


def _pair(
    xml_key: str, filename: str, by_key: dict[str, Path], by_stem: dict[str, list[Path]], by_name: dict[str, list[Path]]
) -> Path | None:
    """The image of one annotation: same relative path, else same bare name, else the xml's ``<filename>``."""
    if xml_key in by_key:
        return by_key[xml_key]
    same_stem = by_stem.get(xml_key.rsplit("/", 1)[-1].lower(), [])
    if len(same_stem) == 1:
        return same_stem[0]
    if filename:
        named = by_name.get(Path(filename.replace("\\", "/")).name.lower(), [])
        if len(named) == 1:
            return named[0]
        named = by_stem.get(Path(filename.replace("\\", "/")).stem.lower(), [])
        if len(named) == 1:
            return named[0]
    return same_stem[0] if same_stem else None


def read_voc(path: Path, class_names: list[str] | None = None, progress: ProgressFn | None = None) -> DetectionDataset:
    """Read a Pascal VOC folder (official layout, or .xml files in any folder beside or among the images).

    Args:
        path: the VOC folder (or a parent such as ``VOCdevkit``).
        class_names: fixed class order; objects with other names are dropped as unknown classes. Default: the order
            of ``classes.txt`` (or ``labels.txt``) in the VOC folder if present, else the sorted names found.
        progress: optional callback ``(fraction, message)`` while the annotations and image headers are read.
    """
    layout = find_voc_layout(path)
    if layout is None:
        from core.data.layouts import annotation_findings  # imports this module

        found = "; ".join(annotation_findings(Path(path))[:8]) if Path(path).is_dir() else ""
        raise FileNotFoundError(
            f"{path}: not Pascal VOC: no folder (of any name) of .xml files with an <annotation> root, here or up to "
            f"3 levels down. Found: {found or 'no annotation-like files'}"
        )
    report = Progress(progress)
    root, ann_dir, image_dir = layout.root, layout.annotations, layout.images
    issues: list[Issue] = []
    if Path(path).is_dir() and Path(path).resolve() == ann_dir.resolve() and ann_dir != image_dir:
        message = (
            f"{Path(path).name}/ holds the .xml annotations and no images: read it with the images in "
            f"{image_dir.name}/ beside it (the dataset folder is {root})"
        )
        issues.append(Issue(str(path), "layout_note", message, "kept", "file"))
    by_key: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    by_name: dict[str, list[Path]] = {}
    for f in walk_files(image_dir):
        if is_image_file(f):
            key = f.relative_to(image_dir).with_suffix("").as_posix()
            by_key.setdefault(key, f)
            by_stem.setdefault(f.stem.lower(), []).append(f)
            by_name.setdefault(f.name.lower(), []).append(f)
        elif not _is_xml(f) and f.suffix.lower() not in (".txt", ".json") and image_dir != root:
            issues.append(Issue(str(f), "non_image_file", "not an image file (by suffix)", "ignored", "file"))
    xml_files = [f for f in walk_files(ann_dir) if _is_xml(f)]
    parsed: dict[Path, tuple[Path, dict]] = {}  # image -> (xml, content)
    for n, ann_file in enumerate(xml_files, start=1):
        report.update(n, len(xml_files) * 2, "reading annotations")
        try:
            content, xml_issues = _parse_xml(ann_file)
        except (ET.ParseError, ValueError, OSError) as exc:
            issues.append(
                Issue(str(ann_file), "corrupt_annotation", f"cannot parse: {exc}", "dropped (image left out)", "image")
            )
            content, xml_issues = {"broken": True, "filename": ""}, []
        xml_key = ann_file.relative_to(ann_dir).with_suffix("").as_posix()
        image = _pair(xml_key, content.get("filename", ""), by_key, by_stem, by_name)
        if image is None:
            issues.append(Issue(str(ann_file), "label_without_image", f"no image for '{xml_key}'", "dropped", "image"))
            continue
        if image in parsed:
            other = parsed[image][0]
            msg = f"a second annotation for {image.name} (first: {other.name})"
            issues.append(Issue(str(ann_file), "duplicate_listing", msg, "ignored", "file"))
            continue
        issues.extend(xml_issues)
        parsed[image] = (ann_file, content)
    if ann_dir != image_dir:
        for other in sorted(ann_dir.iterdir()):
            if other.is_file() and not _is_xml(other) and not other.name.startswith("."):
                issues.append(Issue(str(other), "non_annotation_file", "not an .xml annotation", "ignored", "file"))

    names_found = sorted({n for _, info in parsed.values() for n, _ in info.get("objects", [])})
    names = list(class_names) if class_names is not None else _class_file_order(root, names_found)
    name_to_id = {n: i for i, n in enumerate(names)}
    split_of = _read_split_lists(root)
    has_splits = bool(split_of)

    records: list[ImageRecord] = []
    images = sorted(by_key.items())
    for n, (key, image) in enumerate(images, start=1):
        report.update(len(images) + n, len(images) * 2, "reading image headers")
        xml_file, info = parsed.get(image, (None, None))
        if info is not None and info.get("broken"):
            continue
        image_id = key.rsplit("/", 1)[-1]
        folder_split = normalize_split(key.split("/", 1)[0]) if "/" in key else None
        split = split_of.get(image_id, folder_split or "")  # "" = no split yet: core.data.load makes a seeded one
        if has_splits and image_id not in split_of:
            issues.append(Issue(str(image), "not_in_split", "not listed in ImageSets/Main/*.txt", "dropped", "image"))
            continue
        probe = probe_image(image)
        if isinstance(probe, str):
            n_boxes = len(info["objects"]) if info is not None else 0
            issues.append(Issue(str(image), "unreadable_image", probe, "dropped", "image", boxes=n_boxes))
            continue
        if info is not None and info.get("bad"):
            good = len(info["objects"])
            message = (
                f"{info['bad']} object(s) of {image.name} could not be read (see malformed_box): the image is left "
                "out rather than used as a background, since it shows objects that would be taught as background"
                + (f"; its {good} readable boxes are left out with it" if good else "")
            )
            action = "dropped (image left out)"
            issues.append(Issue(str(xml_file), "labels_unreadable", message, action, "image", 1, good))
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
            if info.get("no_size"):
                message = f"no <size> element: the real size of the image ({probe.width}x{probe.height}) is used"
                issues.append(Issue(str(xml_file), "missing_size", message, "kept", "file"))
            for name, coords in info["objects"]:
                if name not in name_to_id:
                    issues.append(Issue(str(xml_file), "unknown_class", f"class '{name}' not in {names}", "dropped"))
                    continue
                boxes.append(coords)
                classes.append(name_to_id[name])
        if probe.orientation != 1:
            issues.append(exif_issue(image, probe.orientation))
        records.append(
            ImageRecord(
                path=image.resolve(),
                width=probe.width,
                height=probe.height,
                boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                classes=np.asarray(classes, dtype=np.int64),
                split=split,
                key=key,
                label_file=xml_file,
            )
        )
    report(1.0, f"read {len(records)} images")
    split_info = SplitInfo("dataset") if any(r.split for r in records) else SplitInfo("none")
    return DetectionDataset(root, "voc", tuple(names), tuple(records), tuple(issues), split_info, source=path)


def _class_file_order(root: Path, names_found: list[str]) -> list[str]:
    """Class order from ``classes.txt`` / ``labels.txt`` when present (names it lacks are appended, sorted)."""
    for name in ("classes.txt", "labels.txt"):
        f = root / name
        if f.is_file():
            listed = [n.strip() for n in f.read_text(errors="replace").splitlines() if n.strip()]
            return listed + [n for n in names_found if n not in listed]
    return names_found


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
