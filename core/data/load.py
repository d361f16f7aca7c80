"""Open a dataset from a folder, an annotation file or a ``.zip``: detect the format, read it, settle the splits."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from core.data.files import is_image_file
from core.data.io_coco import find_coco_files, read_coco
from core.data.io_csv import csv_header, expected_message, find_csv_files, read_csv
from core.data.io_voc import find_voc_root, read_voc
from core.data.io_yolo import find_data_yaml, read_yolo
from core.data.layouts import LAYOUTS_TRIED, annotation_findings, no_labels_message
from core.data.progress import Progress, ProgressFn
from core.data.safezip import ZipLimits, safe_extract
from core.data.types import DetectionDataset, Issue, SplitInfo

FORMATS: tuple[str, ...] = ("coco", "yolo", "voc", "csv")
DEFAULT_SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
SPLIT_FILE = "yolov7_studio_split.json"


def cache_dir() -> Path:
    """Where extracted archives go: ``$YOLOV7_STUDIO_CACHE`` or ``~/.cache/yolov7-studio``."""
    return Path(os.environ.get("YOLOV7_STUDIO_CACHE", Path.home() / ".cache" / "yolov7-studio"))


def detect_format(path: Path) -> str:
    """``"coco"``, ``"yolo"``, ``"voc"`` or ``"csv"`` for a dataset folder or file.

    Order: a data yaml, ``images/``+``labels/`` or a darknet ``obj.data``/``obj.names`` means YOLO; VOC .xml files
    (``Annotations/``, or a folder of any name, or beside the images: ``core.data.io_voc.find_voc_layout``) mean
    VOC; a JSON with ``images`` and ``annotations`` means COCO; a per-image box CSV (``core.data.io_csv``) means CSV;
    a bare ``images/`` folder is YOLO without labels.

    Raises:
        ValueError: none of the three layouts was recognised (the message lists what was looked for).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() == ".csv":
            return "csv"
        raise ValueError(f"{path}: expected a folder, a .zip, a data .yaml or a COCO .json")
    if find_data_yaml(path) is not None or ((path / "images").is_dir() and (path / "labels").is_dir()):
        return "yolo"
    if any((path / name).is_file() for name in ("obj.data", "obj.names")):  # darknet / CVAT "YOLO 1.1" export
        return "yolo"
    if find_voc_root(path) is not None:
        return "voc"
    if find_coco_files(path):
        return "coco"
    if any((d / "images").is_dir() and (d / "labels").is_dir() for d in path.iterdir() if d.is_dir()):
        return "yolo"
    box_csvs, other_csvs = find_csv_files(path)
    if box_csvs:
        return "csv"
    if (path / "images").is_dir():  # images without any labels yet: YOLO layout, every image a background
        return "yolo"
    files = [f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")][:100_000]
    if not files:
        raise ValueError(f"{path}: the folder is empty (no images and no annotation files)")
    if other_csvs:
        raise ValueError(expected_message(other_csvs[0], csv_header(other_csvs[0])))
    findings = annotation_findings(path)
    if not findings:
        n_images = sum(1 for f in files if is_image_file(f))
        raise ValueError(
            f"{path}: {n_images} images and no annotation files (.xml, .json, .txt, .csv) found"
            + (f"; put the images in {path}/images/ to use them unlabelled (as background)" if n_images else "")
        )
    raise ValueError(
        f"{path}: format not recognised. Tried: "
        + "; ".join(LAYOUTS_TRIED.values())
        + ". Found: "
        + "; ".join(findings[:12])
        + ". Arrange the files in one of these layouts, or pass the format (--format) if they are in one."
    )


def extract_archive(archive: Path, limits: ZipLimits | None = None, target: Path | None = None) -> Path:
    """Safely extract ``archive`` (once; reused while unchanged) and return the dataset folder inside it.

    The default target is ``cache_dir()/archives/<name>-<hash of path, size, mtime>``. A single top folder in the
    archive is descended into.
    """
    st = archive.stat()
    digest = hashlib.sha1(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = target or cache_dir() / "archives" / f"{archive.stem}-{digest}"
    marker = target / ".yolov7-studio-extracted"
    if not marker.exists():
        if target.exists():
            shutil.rmtree(target)
        safe_extract(archive, target, limits)
        marker.write_text(str(archive))
    folder = target
    while True:
        children = [c for c in folder.iterdir() if not c.name.startswith(".") and c.name != "__MACOSX"]
        if len(children) == 1 and children[0].is_dir():
            folder = children[0]
        else:
            return folder


def seeded_split(
    keys: list[str], seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
) -> dict[str, str]:
    """Key -> split for a dataset without splits: a seeded permutation cut by ``fractions`` (train, val, test).

    The keys are sorted first, so the result depends only on the set of keys, ``seed`` and ``fractions``. With at
    least 3 images, val gets at least one image (and test too when its fraction is > 0).
    """
    order = sorted(keys)
    n = len(order)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    out = {}
    for rank, i in enumerate(perm):
        out[order[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


def apply_seeded_split(
    dataset: DetectionDataset, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
) -> DetectionDataset:
    """Give images without a split (``split == ""``) a seeded one, recorded in ``dataset.split_info``."""
    unsplit = [r.key for r in dataset.images if not r.split]
    if not unsplit:
        return dataset
    assignment = seeded_split(unsplit, seed, fractions)
    images = tuple(replace(r, split=assignment[r.key]) if not r.split else r for r in dataset.images)
    info = SplitInfo("seeded", seed, (fractions[0], fractions[1], fractions[2]), tuple(sorted(assignment.items())))
    return replace(dataset, images=images, split_info=info)


def write_split_file(dataset: DetectionDataset, path: Path) -> Path:
    """Record the split (key -> split, and where it came from) as JSON; returns ``path``."""
    info = dataset.split_info
    content = {
        "source": info.source,
        "seed": info.seed,
        "fractions": info.fractions,
        "splits": {r.key: r.split for r in dataset.images},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1))
    return path


def read_definition(path: Path) -> tuple[Path, str | None, list[str] | None] | None:
    """A studio dataset definition (see ``datasets/README.md``): a YAML with ``path`` and ``format`` keys.

    ``path`` may use ``~`` and ``$VARS`` and is relative to the YAML file. Returns (target, format, class names),
    or ``None`` when ``path`` is not such a file (e.g. an official YOLO ``data.yaml``, which has no ``format``).
    """
    if not path.is_file() or path.suffix.lower() not in (".yaml", ".yml"):
        return None
    try:
        content = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(content, dict) or "format" not in content or "path" not in content:
        return None
    fmt = content.get("format")
    if fmt not in (*FORMATS, None, "auto"):
        raise ValueError(f"{path}: format {fmt!r} is not one of {FORMATS}")
    target = Path(os.path.expandvars(os.path.expanduser(str(content["path"]))))
    target = target if target.is_absolute() else (path.parent / target)
    names = content.get("names")
    return target.resolve(), None if fmt == "auto" else fmt, [str(n) for n in names] if names else None


def load_dataset(
    path: str | Path,
    format: str | None = None,
    class_names: list[str] | None = None,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
    zip_limits: ZipLimits | None = None,
    progress: ProgressFn | None = None,
) -> DetectionDataset:
    """Read a dataset (COCO, YOLO or VOC; folder, annotation file or ``.zip``) into the common representation.

    Boxes are as annotated (not yet clipped or filtered: ``core.data.check.check_dataset`` does that and returns
    the cleaned dataset). When the dataset defines no split, a seeded one is made and recorded in ``split_info``.

    Args:
        path: folder, ``data.yaml``, COCO ``.json``, ``.zip`` of any of these, or a dataset definition YAML
            (``path`` + ``format`` [+ ``names``], see ``read_definition``).
        format: ``"coco"``, ``"yolo"`` or ``"voc"``; detected when ``None``.
        class_names: force the class list/order (labels of other classes are dropped as unknown).
        split_seed, split_fractions: for the seeded split of datasets without one.
        zip_limits: limits for archive extraction.
        progress: optional callback ``(fraction 0..1, message)`` (e.g. a UI's progress bar); ends with 1.0.

    When not one labelled box is found, an issue ``no_labels_found`` says which layouts were tried and which
    annotation-like files are there (e.g. "200 .xml files in annotations/ look like Pascal VOC").

    Raises:
        FileNotFoundError, ValueError: nothing readable as a dataset at ``path`` (the message says why).
        core.data.safezip.UnsafeArchiveError: the archive was refused.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    definition = read_definition(source)
    if definition is not None:
        target, def_format, def_names = definition
        if not target.exists():
            raise FileNotFoundError(f"{source}: its path {target} does not exist (edit 'path' in the file)")
        dataset = load_dataset(
            target, format or def_format, class_names or def_names, split_seed, split_fractions, zip_limits, progress
        )
        return replace(dataset, source=source)
    report = Progress(progress)
    report(0.0, f"opening {source.name}")
    folder = extract_archive(source, zip_limits) if source.suffix.lower() == ".zip" else source
    fmt = (format or detect_format(folder)).lower()
    readers = {"coco": read_coco, "yolo": read_yolo, "voc": read_voc, "csv": read_csv}
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    dataset = readers[fmt](folder, class_names=class_names, progress=report.sub(0.05, 0.95))
    dataset = replace(dataset, source=source)
    if not dataset.images and not any(i.scope == "image" and i.action.startswith("dropped") for i in dataset.issues):
        where = folder if folder.is_dir() else folder.parent
        message = (
            f"the dataset is empty: no images found in {where} (format {fmt.upper()}; image files are "
            ".jpg, .jpeg, .png, .bmp, .tif, .webp ...)"
        )
        dataset = replace(dataset, issues=(Issue(str(where), "empty_dataset", message, "nothing to use", "file"),))
    elif dataset.images and not any(r.num_boxes or len(r.crowd_boxes) for r in dataset.images):
        where = folder if folder.is_dir() else folder.parent
        message = no_labels_message(where, fmt, detected=format is None)
        issue = Issue(str(folder), "no_labels_found", message, "kept (all images as background)", "file")
        dataset = replace(dataset, issues=(issue, *dataset.issues))
    dataset = apply_seeded_split(dataset, split_seed, split_fractions)
    report(1.0, f"{len(dataset.images)} images, {dataset.num_boxes} boxes ({fmt.upper()})")
    return dataset
