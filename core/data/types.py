"""The one in-memory representation of a detection dataset, shared by readers, checks, converters and loaders.

Box format everywhere in this representation: absolute pixels, ``xyxy`` float (x1, y1, x2, y2), in the frame of
the image *as displayed* (EXIF orientation applied, which is also what ``cv2.imread`` returns). Class ids index
``DetectionDataset.class_names``. Optional polygon segments are ``[K, 2]`` pixel ``(x, y)`` arrays, one per box.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"}
)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image and its labels.

    Attributes:
        path: absolute path of the image file.
        width, height: image size in pixels as displayed (EXIF orientation applied).
        boxes: ``[N, 4]`` float64 pixel ``xyxy``.
        classes: ``[N]`` int64 class ids.
        split: ``"train"``, ``"val"``, ``"test"`` (or another name the dataset uses).
        key: stable identifier inside the dataset (relative path without suffix), used for reports and file names.
        segments: ``None``, or one ``[K, 2]`` float64 pixel polygon per box (same order as ``boxes``).
        label_file: the annotation file the boxes came from, if any (for reports).
        areas: ``None``, or ``[N]`` float64: the area each annotation states (COCO ``area``, e.g. of its
            segmentation), kept for evaluation; ``None`` means box width x height.
        crowd_boxes: ``[M, 4]`` float64 pixel ``xyxy`` COCO crowd regions (``iscrowd=1``). Never trained on (as in
            the official pipeline); the evaluation gives them to pycocotools, which ignores detections on them.
        crowd_classes: ``[M]`` int64 class ids of the crowd regions.
        crowd_areas: ``[M]`` float64 stated areas of the crowd regions.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    split: str
    key: str
    segments: tuple[np.ndarray, ...] | None = None
    label_file: Path | None = None
    areas: np.ndarray | None = None
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    crowd_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    crowd_areas: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if len(boxes) != len(classes):
            raise ValueError(f"{self.path}: {len(boxes)} boxes but {len(classes)} class ids")
        object.__setattr__(self, "boxes", _readonly(boxes.copy()))
        object.__setattr__(self, "classes", _readonly(classes.copy()))
        if self.segments is not None:
            if len(self.segments) != len(boxes):
                raise ValueError(f"{self.path}: {len(self.segments)} segments for {len(boxes)} boxes")
            segs = tuple(_readonly(np.asarray(s, dtype=np.float64).reshape(-1, 2).copy()) for s in self.segments)
            object.__setattr__(self, "segments", segs)
        if self.areas is not None:
            areas = np.asarray(self.areas, dtype=np.float64).reshape(-1)
            if len(areas) != len(boxes):
                raise ValueError(f"{self.path}: {len(areas)} areas for {len(boxes)} boxes")
            object.__setattr__(self, "areas", _readonly(areas.copy()))
        crowd = np.asarray(self.crowd_boxes, dtype=np.float64).reshape(-1, 4)
        crowd_cls = np.asarray(self.crowd_classes, dtype=np.int64).reshape(-1)
        crowd_areas = np.asarray(self.crowd_areas, dtype=np.float64).reshape(-1)
        if not len(crowd) == len(crowd_cls) == len(crowd_areas):
            raise ValueError(
                f"{self.path}: {len(crowd)} crowd boxes, {len(crowd_cls)} classes, {len(crowd_areas)} areas"
            )
        object.__setattr__(self, "crowd_boxes", _readonly(crowd.copy()))
        object.__setattr__(self, "crowd_classes", _readonly(crowd_cls.copy()))
        object.__setattr__(self, "crowd_areas", _readonly(crowd_areas.copy()))

    @property
    def num_boxes(self) -> int:
        """Number of labelled objects."""
        return len(self.classes)

    def with_labels(
        self,
        boxes: np.ndarray,
        classes: np.ndarray,
        segments: tuple[np.ndarray, ...] | None = None,
        areas: np.ndarray | None = None,
    ) -> ImageRecord:
        """Copy with other labels (same image; the crowd regions are kept)."""
        return replace(self, boxes=boxes, classes=classes, segments=segments, areas=areas)

    def box_areas(self) -> np.ndarray:
        """``[N]`` the evaluation area of each box: the stated ``areas`` where known, else width x height."""
        if self.areas is not None:
            return self.areas
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])


@dataclass(frozen=True)
class Issue:
    """One problem found while reading or checking a dataset.

    Attributes:
        file: the file concerned (image, label or annotation file), as a string path.
        kind: machine-readable category, e.g. ``"degenerate_box"`` (see ``core.data.check.ISSUE_KINDS``).
        message: human-readable reason.
        action: what was done: ``"dropped"`` (left out), ``"clipped"``, ``"kept"``, ``"ignored"``.
        scope: ``"image"``, ``"box"`` or ``"file"`` (what the action applies to).
        count: how many items this issue covers (normally 1).
        boxes: for an image left out, how many of its boxes go with it (counted among the left-out boxes).
    """

    file: str
    kind: str
    message: str
    action: str
    scope: str = "box"
    count: int = 1
    boxes: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "kind": self.kind,
            "message": self.message,
            "action": self.action,
            "scope": self.scope,
            "count": self.count,
            "boxes": self.boxes,
        }


@dataclass(frozen=True)
class SplitInfo:
    """Where the train/val/test split came from.

    ``source`` is ``"dataset"`` when the dataset defined it, or ``"seeded"`` when we made one with ``seed`` and
    ``fractions`` (train, val, test), in which case ``assignment`` maps each image key to its split.
    """

    source: str
    seed: int | None = None
    fractions: tuple[float, float, float] | None = None
    assignment: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        if self.source == "seeded":
            return f"seeded split (seed {self.seed}, fractions train/val/test {self.fractions}); the dataset had none"
        return "splits defined by the dataset"


@dataclass(frozen=True, eq=False)
class DetectionDataset:
    """A detection dataset: class names, images with their labels and split, and the problems met while reading.

    Attributes:
        root: the folder (or extracted archive folder) the dataset was read from.
        format: ``"coco"``, ``"yolo"`` or ``"voc"`` (or ``"memory"``).
        class_names: class id -> name.
        images: all images, in a stable order (sorted by key within each split reader).
        issues: problems found while *reading* (malformed rows, missing files ...). ``check_dataset`` adds more.
        split_info: where the splits came from.
        source: the path the user gave (folder, annotation file or .zip).
    """

    root: Path
    format: str
    class_names: tuple[str, ...]
    images: tuple[ImageRecord, ...]
    issues: tuple[Issue, ...] = ()
    split_info: SplitInfo = field(default_factory=lambda: SplitInfo("dataset"))
    source: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_names(self) -> tuple[str, ...]:
        """Split names present, official order first."""
        present = {r.split for r in self.images}
        return tuple(s for s in SPLITS if s in present) + tuple(sorted(present - set(SPLITS)))

    def split(self, name: str | None) -> tuple[ImageRecord, ...]:
        """Images of one split (all images for ``None`` or ``"all"``)."""
        if name in (None, "all"):
            return self.images
        return tuple(r for r in self.images if r.split == name)

    def split_counts(self) -> dict[str, int]:
        counts = Counter(r.split for r in self.images)
        return {s: counts[s] for s in self.split_names}

    @property
    def num_boxes(self) -> int:
        return int(sum(r.num_boxes for r in self.images))

    def with_images(self, images: tuple[ImageRecord, ...], extra_issues: tuple[Issue, ...] = ()) -> DetectionDataset:
        """Copy with other images and more issues."""
        return replace(self, images=tuple(images), issues=self.issues + tuple(extra_issues))
