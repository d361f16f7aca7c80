"""Dataset validation: decode every image, clean every box, find duplicates; say what is used and what is left out.

``check_dataset`` never raises on bad data: each problem becomes an ``Issue`` naming the file and the reason, and
the returned report carries the cleaned dataset that training, conversion and statistics use.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.progress import Progress, ProgressArg, as_progress, wants_tqdm
from core.data.stats import DatasetStats, compute_stats
from core.data.types import DetectionDataset, ImageRecord, Issue

# Every issue kind, with a one-line explanation (also shown by the text report and the UIs).
ISSUE_KINDS: dict[str, str] = {
    "unreadable_image": "image cannot be opened or has no valid size",
    "corrupt_image": "image cannot be decoded (corrupt or truncated data)",
    "truncated_jpeg": "JPEG without its end marker (decodes, but the file was cut)",
    "exif_rotated": "EXIF orientation is not 1; used as displayed",
    "exif_invalid": "EXIF orientation tag outside 1..8 (invalid); ignored, the image is used as stored",
    "labels_unreadable": "image whose annotation could not be fully read (left out, not used as a background)",
    "missing_size": "annotation without the image size; the real size of the image is used",
    "layout_note": "how the files were found and paired (e.g. the images beside a given annotation folder)",
    "size_mismatch": "annotation's image size differs from the real one",
    "image_without_labels": "image with no annotation (used as background when kept)",
    "label_without_image": "annotation whose image is missing",
    "not_in_split": "image not listed in any split file",
    "non_image_file": "file that is not an image in an image folder",
    "non_annotation_file": "file that is not an annotation in the annotation folder",
    "corrupt_annotation": "annotation file that cannot be parsed",
    "corrupt_label": "label file that cannot be read",
    "malformed_row": "label row that cannot be parsed",
    "malformed_box": "box with missing or non-numeric coordinates",
    "malformed_image_entry": "COCO image entry without a file name",
    "box_row_in_polygon_file": "4-coordinate row in a polygon label file",
    "unknown_class": "class id or name outside the class list",
    "degenerate_box": "box with zero or negative width/height (or under the minimum size)",
    "box_outside_image": "box entirely outside the image",
    "box_clipped": "box reaching outside the image, clipped to it",
    "duplicate_box": "same class and coordinates twice in one image",
    "duplicate_image": "same file content as another image",
    "duplicate_image_id": "COCO image id used twice",
    "duplicate_listing": "image listed in more than one split",
    "crowd_annotation": "COCO iscrowd=1 regions (not trained on; ignore regions in the COCO evaluation)",
    "empty_dataset": "no images at all: nothing to train or evaluate on",
    "no_labels_found": "no labels were found at all: the layouts tried and the annotation-like files seen",
    "empty_image": "image with no boxes (used as background)",
    "missing_image": "image listed in a split file but not found",
    "missing_split": "split entry of data.yaml that does not exist",
}


@dataclass(frozen=True, eq=False)
class CheckReport:
    """Result of ``check_dataset``.

    Attributes:
        dataset: the cleaned dataset (what will be used): corrupt images left out, boxes clipped or dropped.
        issues: every issue found while reading and checking.
        input_images, input_boxes: counts before cleaning (images that could be listed, boxes read).
        stats: statistics of the cleaned dataset.
        figures: paths of saved figures (filled in by ``core.data.figures.save_figures``).
    """

    dataset: DetectionDataset
    issues: tuple[Issue, ...]
    input_images: int
    input_boxes: int
    stats: DatasetStats
    figures: tuple[str, ...] = field(default_factory=tuple)

    def counts_by_kind(self) -> dict[str, int]:
        """Issue kind -> number of items concerned."""
        counts: Counter[str] = Counter()
        for issue in self.issues:
            counts[issue.kind] += issue.count
        return dict(sorted(counts.items()))

    @property
    def defective_boxes(self) -> tuple[Issue, ...]:
        """Box issues that changed or removed a box (clipped, degenerate, outside, malformed, unknown class ...)."""
        return tuple(i for i in self.issues if i.scope == "box" and i.action in ("dropped", "clipped"))

    @property
    def used_images(self) -> int:
        return len(self.dataset.images)

    @property
    def used_boxes(self) -> int:
        return self.dataset.num_boxes

    @property
    def left_out_images(self) -> int:
        return sum(i.count for i in self.issues if i.scope == "image" and i.action.startswith("dropped"))

    @property
    def left_out_boxes(self) -> int:
        """Boxes dropped one by one, plus the boxes of images left out (so used + left out = read)."""
        return sum(
            i.count if i.scope == "box" else i.boxes
            for i in self.issues
            if i.action.startswith("dropped") and (i.scope == "box" or i.boxes)
        )

    @property
    def clipped_boxes(self) -> int:
        return sum(i.count for i in self.issues if i.kind == "box_clipped")


def _check_image_file(path: Path) -> tuple[str, str | None, str | None]:
    """(sha1 of the bytes, fatal problem or None, warning or None) after fully decoding the image."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "", f"cannot read: {exc}", None
    digest = hashlib.sha1(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt = im.format
    except Exception as exc:  # noqa: BLE001 - any decoder error means the image is unusable
        return digest, f"cannot decode: {exc}", None
    if fmt == "JPEG" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return digest, None, "JPEG end marker missing (file cut short?); it decodes, so it is kept"
    return digest, None, None


def clean_boxes(
    rec: ImageRecord, num_classes: int, min_size: float = 1.0, clip_tolerance: float = 0.01
) -> tuple[ImageRecord, list[Issue]]:
    """Clip boxes to the image and drop degenerate, outside, duplicate and unknown-class ones; report each.

    A box is degenerate when its width or height (before clipping) is under ``min_size`` pixels; a box that has
    less than ``min_size`` left inside the image is "outside". Boxes passing the border by at most
    ``clip_tolerance`` pixels (rounding of normalized coordinates, e.g. 1.0000005) are clipped without a report.
    """
    where = str(rec.label_file or rec.path)
    if rec.label_file is not None and rec.label_file.stem != rec.path.stem:  # shared file (COCO): name the image
        where = f"{rec.label_file} [{rec.path.name}]"
    issues: list[Issue] = []
    keep_boxes, keep_cls, keep_segs, keep_areas = [], [], [], []
    seen: set[tuple] = set()
    w, h = rec.width, rec.height
    for k, (box, cls) in enumerate(zip(rec.boxes, rec.classes)):
        x1, y1, x2, y2 = (float(v) for v in box)
        desc = f"box {k} ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        if not 0 <= cls < num_classes:
            issues.append(Issue(where, "unknown_class", f"{desc}: class id {int(cls)} of {num_classes}", "dropped"))
            continue
        if not np.all(np.isfinite(box)):
            issues.append(Issue(where, "malformed_box", f"{desc}: non-finite coordinate", "dropped"))
            continue
        if x2 - x1 < min_size or y2 - y1 < min_size:
            msg = f"{desc}: size {x2 - x1:g}x{y2 - y1:g} px (minimum {min_size:g})"
            issues.append(Issue(where, "degenerate_box", msg, "dropped"))
            continue
        cx1, cy1, cx2, cy2 = min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)
        if cx2 - cx1 < min_size or cy2 - cy1 < min_size:
            msg = f"{desc}: outside the {w}x{h} image"
            issues.append(Issue(where, "box_outside_image", msg, "dropped"))
            continue
        excess = max(cx1 - x1, cy1 - y1, x2 - cx2, y2 - cy2)
        if excess > clip_tolerance:
            msg = f"{desc}: reaches outside the {w}x{h} image, clipped to ({cx1:g}, {cy1:g}, {cx2:g}, {cy2:g})"
            issues.append(Issue(where, "box_clipped", msg, "clipped"))
        signature = (int(cls), *(round(v * 2) for v in (cx1, cy1, cx2, cy2)))  # equal within half a pixel
        if signature in seen:
            issues.append(Issue(where, "duplicate_box", f"{desc}: duplicate of an earlier box", "dropped"))
            continue
        seen.add(signature)
        keep_boxes.append((cx1, cy1, cx2, cy2))
        keep_cls.append(int(cls))
        if rec.areas is not None:
            keep_areas.append(rec.areas[k])  # the stated area stays (it is what COCO evaluates against)
        if rec.segments is not None:
            keep_segs.append(np.clip(rec.segments[k], 0, [w, h]))
    segments = tuple(keep_segs) if rec.segments is not None else None
    if len(keep_boxes) == rec.num_boxes and np.array_equal(np.asarray(keep_boxes).reshape(-1, 4), rec.boxes):
        return rec, issues
    areas = np.asarray(keep_areas, dtype=np.float64) if rec.areas is not None else None
    return rec.with_labels(np.asarray(keep_boxes).reshape(-1, 4), np.asarray(keep_cls), segments, areas), issues


class CheckStopped(Exception):
    """``check_dataset``'s ``should_stop`` turned true while the images were decoded; the rest were skipped."""


def _decode_all(
    paths: list[Path], report: Progress, tqdm_bar: bool, should_stop: Callable[[], bool] | None
) -> list[tuple[str, str | None, str | None]]:
    """``_check_image_file`` of every path on a small thread pool, in order.

    ``should_stop`` is polled before each image; once it is true (or the caller is interrupted, e.g. Ctrl-C), the
    images not yet started are skipped instead of decoded, so a stop waits for the images in hand only, never for
    the whole pool's queue (which would otherwise also hold up the process's exit).
    """
    cancel = threading.Event()

    def one(path: Path) -> tuple[str, str | None, str | None] | None:
        if cancel.is_set():
            return None
        if should_stop is not None and should_stop():
            cancel.set()
            return None
        return _check_image_file(path)

    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    try:
        mapped = pool.map(one, paths)
        if tqdm_bar:
            from tqdm import tqdm

            mapped = tqdm(mapped, total=len(paths), desc="checking images", unit="img", disable=None)
        results: list[tuple[str, str | None, str | None]] = []
        for res in report.iterate(mapped, len(paths), "decoding images"):
            if res is None:
                raise CheckStopped(f"stop requested while decoding the images ({len(results)} of {len(paths)} done)")
            results.append(res)
    except BaseException:
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def check_dataset(
    dataset: DetectionDataset,
    decode: bool = True,
    min_box_size: float = 1.0,
    img_size: int | None = None,
    progress: ProgressArg = False,
    should_stop: Callable[[], bool] | None = None,
) -> CheckReport:
    """Validate ``dataset``: decode images, clean boxes, find duplicate images; compute statistics.

    Args:
        dataset: as read by ``core.data.load.load_dataset`` (reader issues are carried into the report).
        decode: fully decode each image (finds truncated/corrupt files; ~3 ms per 640x480 JPEG) and hash it for
            duplicates. ``False`` only cleans boxes.
        min_box_size: boxes narrower or shorter than this many pixels are degenerate and dropped.
        img_size: training size for the anchor statistics (default: each model's official size).
        progress: ``True`` shows a tqdm bar while decoding; a callable ``(fraction 0..1, message)`` (e.g. a UI's
            progress bar) is called with increasing fractions, ending with 1.0.
        should_stop: polled (from the decoding threads) before each image is decoded; when it returns true the
            images not yet decoded are skipped and :class:`CheckStopped` is raised.
    """
    report = as_progress(progress)
    issues: list[Issue] = list(dataset.issues)
    input_boxes = dataset.num_boxes + sum(
        i.count if i.scope == "box" else i.boxes for i in dataset.issues if i.action.startswith("dropped")
    )
    records = list(dataset.images)
    keep = [True] * len(records)
    if decode and records:
        results = _decode_all([r.path for r in records], report.sub(0.0, 0.8), wants_tqdm(progress), should_stop)
        first_of_hash: dict[str, ImageRecord] = {}
        for k, (rec, (digest, fatal, warning)) in enumerate(zip(records, results)):
            if fatal:
                with_boxes = f"; its {rec.num_boxes} boxes are left out with it" if rec.num_boxes else ""
                issues.append(
                    Issue(str(rec.path), "corrupt_image", fatal + with_boxes, "dropped", "image", boxes=rec.num_boxes)
                )
                keep[k] = False
                continue
            if warning:
                issues.append(Issue(str(rec.path), "truncated_jpeg", warning, "kept", "image"))
            if digest in first_of_hash:
                other = first_of_hash[digest]
                msg = f"same content as {other.path} ({other.split})"
                if other.split != rec.split:
                    msg += ": the same image in two splits inflates validation scores"
                issues.append(Issue(str(rec.path), "duplicate_image", msg, "kept", "image"))
            else:
                first_of_hash[digest] = rec
    unlabelled = {str(Path(i.file).resolve()) for i in issues if i.kind == "image_without_labels"}
    cleaned: list[ImageRecord] = []
    for rec, ok in zip(records, keep):
        if not ok:
            continue
        rec, box_issues = clean_boxes(rec, dataset.num_classes, min_box_size)
        issues.extend(box_issues)
        if rec.num_boxes == 0 and str(rec.path) not in unlabelled:
            issues.append(Issue(str(rec.path), "empty_image", "no boxes: used as a background image", "kept", "image"))
        cleaned.append(rec)
    clean = replace(dataset, images=tuple(cleaned), issues=tuple(issues))
    input_images = len(records) + sum(
        i.count for i in dataset.issues if i.scope == "image" and i.action.startswith("dropped")
    )
    report(0.85, "statistics and anchor fit")
    stats = compute_stats(clean, img_size=img_size)
    report(1.0, f"checked {len(records)} images")
    return CheckReport(clean, tuple(issues), input_images, input_boxes, stats)
