"""Dataset statistics: images, boxes per class and per image, image and box sizes, fit to each model's anchors."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from core.data.anchors import anchor_fit, best_possible_recall, model_anchor_groups
from core.data.types import DetectionDataset

# COCO size buckets (box area in original pixels).
SMALL_AREA, LARGE_AREA = 32**2, 96**2


@dataclass(frozen=True)
class AnchorFit:
    """How the dataset's boxes fit one model's anchors at its training size (official autoanchor metric).

    Attributes:
        models: the model names sharing these anchors.
        train_size: long image side the boxes were scaled to.
        anchor_t: the ratio threshold (hyp ``anchor_t``, 4.0).
        bpr: best possible recall: share of boxes with an anchor within ratio ``anchor_t`` on both sides.
        anchors_per_box: mean number of anchors within that ratio per box.
        best_level: per level, boxes whose best-fitting anchor is on that level.
        matchable: per level, boxes with at least one anchor of that level within the ratio.
        strides, anchors: the model's strides and per-level (w, h) pixel anchors.
    """

    models: tuple[str, ...]
    train_size: int
    anchor_t: float
    bpr: float
    anchors_per_box: float
    best_level: tuple[int, ...]
    matchable: tuple[int, ...]
    strides: tuple[int, ...]
    anchors: tuple[tuple[tuple[float, float], ...], ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "models": list(self.models),
            "train_size": self.train_size,
            "anchor_t": self.anchor_t,
            "bpr": round(self.bpr, 4),
            "anchors_per_box": round(self.anchors_per_box, 3),
            "best_level": list(self.best_level),
            "matchable": list(self.matchable),
            "strides": list(self.strides),
            "anchors": [[list(a) for a in level] for level in self.anchors],
        }


@dataclass(frozen=True, eq=False)
class DatasetStats:
    """Statistics of a (cleaned) dataset.

    Attributes:
        box_wh: ``[N, 2]`` box (w, h) in original image pixels, all boxes in image order.
        box_long_side: ``[N]`` long side of each box's image (to scale boxes to a training size).
        box_classes: ``[N]`` class id of each box.
        boxes_per_image: ``[num_images]`` number of boxes in each image.
    """

    class_names: tuple[str, ...]
    split_images: dict[str, int]
    boxes_per_class: dict[str, int]
    boxes_per_class_split: dict[str, dict[str, int]]
    image_sizes: dict[str, int]
    size_buckets: dict[str, int]
    box_wh: np.ndarray
    box_long_side: np.ndarray
    box_classes: np.ndarray
    boxes_per_image: np.ndarray
    anchor_fits: tuple[AnchorFit, ...]

    @property
    def num_images(self) -> int:
        return len(self.boxes_per_image)

    @property
    def num_boxes(self) -> int:
        return len(self.box_wh)

    def to_dict(self) -> dict[str, object]:
        bpi = self.boxes_per_image
        wh = self.box_wh
        return {
            "images": self.num_images,
            "boxes": self.num_boxes,
            "split_images": self.split_images,
            "boxes_per_class": self.boxes_per_class,
            "boxes_per_class_split": self.boxes_per_class_split,
            "boxes_per_image": {
                "mean": round(float(bpi.mean()), 3) if len(bpi) else 0.0,
                "min": int(bpi.min()) if len(bpi) else 0,
                "max": int(bpi.max()) if len(bpi) else 0,
                "histogram": {str(k): int(v) for k, v in sorted(Counter(bpi.tolist()).items())},
            },
            "image_sizes": self.image_sizes,
            "box_size_buckets": self.size_buckets,
            "box_wh_px": _percentiles(wh),
            "anchor_fits": [f.to_dict() for f in self.anchor_fits],
        }


def _percentiles(wh: np.ndarray) -> dict[str, list[float]]:
    if len(wh) == 0:
        return {}
    qs = (0, 5, 50, 95, 100)
    return {f"p{q}": [round(float(v), 1) for v in np.percentile(wh, q, axis=0)] for q in qs}


def compute_stats(
    dataset: DetectionDataset, img_size: int | None = None, anchor_t: float = 4.0, models: list[str] | None = None
) -> DatasetStats:
    """Statistics of ``dataset``; the anchor fit scales each image's long side to ``img_size`` (default: each model's
    official training size), as the official autoanchor does."""
    names = dataset.class_names
    class_counts: Counter[int] = Counter()
    per_split: dict[str, Counter[int]] = {}
    sizes: Counter[str] = Counter()
    wh_list, long_list, cls_list = [], [], []
    for rec in dataset.images:
        sizes[f"{rec.width}x{rec.height}"] += 1
        counts = per_split.setdefault(rec.split, Counter())
        for c in rec.classes:
            class_counts[int(c)] += 1
            counts[int(c)] += 1
        wh_list.append(rec.boxes[:, 2:4] - rec.boxes[:, 0:2])
        long_list.append(np.full(rec.num_boxes, max(rec.width, rec.height), dtype=np.float64))
        cls_list.append(rec.classes)
    box_wh = np.concatenate(wh_list) if wh_list else np.zeros((0, 2))
    long_side = np.concatenate(long_list) if long_list else np.zeros(0)
    classes = np.concatenate(cls_list) if cls_list else np.zeros(0, dtype=np.int64)
    area = box_wh.prod(axis=1) if len(box_wh) else np.zeros(0)
    buckets = {
        "small (<32^2 px)": int((area < SMALL_AREA).sum()),
        "medium": int(((area >= SMALL_AREA) & (area < LARGE_AREA)).sum()),
        "large (>=96^2 px)": int((area >= LARGE_AREA).sum()),
    }
    fits = []
    for group in model_anchor_groups(models):
        size = img_size or group.train_size
        wh = box_wh * (size / long_side)[:, None] if len(box_wh) else box_wh
        anchors = group.as_array()
        bpr, apb = best_possible_recall(wh, anchors, anchor_t)
        nl = len(group.anchors)
        levels = group.level_of_anchor()
        if len(wh):
            x = anchor_fit(wh, anchors)
            best = np.bincount(levels[x.argmax(axis=1)], minlength=nl)
            passing = x > 1.0 / anchor_t
            matchable = [int(passing[:, levels == lvl].any(axis=1).sum()) for lvl in range(nl)]
        else:
            best, matchable = np.zeros(nl, dtype=int), [0] * nl
        fits.append(
            AnchorFit(
                group.names,
                size,
                anchor_t,
                bpr,
                apb,
                tuple(int(v) for v in best),
                tuple(matchable),
                group.strides,
                group.anchors,
            )
        )
    return DatasetStats(
        class_names=names,
        split_images=dataset.split_counts(),
        boxes_per_class={n: class_counts[i] for i, n in enumerate(names)},
        boxes_per_class_split={
            s: {n: per_split[s][i] for i, n in enumerate(names)} for s in dataset.split_names if s in per_split
        },
        image_sizes=dict(sizes.most_common()),
        size_buckets=buckets,
        box_wh=box_wh,
        box_long_side=long_side,
        box_classes=classes,
        boxes_per_image=np.asarray([r.num_boxes for r in dataset.images], dtype=np.int64),
        anchor_fits=tuple(fits),
    )
