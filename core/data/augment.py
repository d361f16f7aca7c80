"""Geometric and colour augmentations of the official training pipeline (FACTS 1e), and label-loss counting.

Conventions: images ``uint8`` HWC BGR; ``Labels.boxes`` ``[N, 4]`` float pixel ``xyxy`` in the current image;
all randomness comes from the ``np.random.Generator`` passed in (deterministic per sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from core.data.letterbox import PAD_VALUE


@dataclass
class Labels:
    """Labels travelling with an image through the pipeline.

    Attributes:
        boxes: ``[N, 4]`` float64 pixel ``xyxy``.
        classes: ``[N]`` int64.
        segments: ``None``, or one ``[K, 2]`` pixel polygon per box (a box without polygon uses its 4 corners).
    """

    boxes: np.ndarray
    classes: np.ndarray
    segments: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.classes)

    def transformed(self, sx: float, sy: float, dx: float, dy: float) -> Labels:
        """Scale by (sx, sy) then shift by (dx, dy) (e.g. resize + paste/letterbox)."""
        k = np.array([sx, sy, sx, sy])
        d = np.array([dx, dy, dx, dy])
        segs = None if self.segments is None else [s * [sx, sy] + [dx, dy] for s in self.segments]
        return Labels(self.boxes * k + d, self.classes.copy(), segs)

    def clipped(self, width: float, height: float) -> Labels:
        """Boxes (and polygons) clipped to [0, width] x [0, height]."""
        boxes = self.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        segs = None if self.segments is None else [np.clip(s, 0, [width, height]) for s in self.segments]
        return Labels(boxes, self.classes, segs)

    def polygons(self) -> list[np.ndarray]:
        """Polygon per box: the segment, or the box's 4 corners."""
        if self.segments is not None:
            return self.segments
        return [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]) for x1, y1, x2, y2 in self.boxes]

    @staticmethod
    def concat(parts: list[Labels]) -> Labels:
        """All labels of ``parts``; polygons are kept when any part has them (others use their box corners)."""
        boxes = np.concatenate([p.boxes for p in parts]) if parts else np.zeros((0, 4))
        classes = np.concatenate([p.classes for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        segs = None
        if any(p.segments is not None for p in parts):
            segs = [s for p in parts for s in p.polygons()]
        return Labels(boxes.reshape(-1, 4), classes.astype(np.int64), segs)


@dataclass(frozen=True)
class LabelCounts:
    """Labels fed into augmentation vs. labels that came out.

    ``input`` counts every label of every image used (all mosaic tiles, the MixUp partner); ``cropped`` were
    entirely outside the output image; ``filtered`` were partly visible but rejected by the official box filter.
    """

    input: int = 0
    kept: int = 0
    cropped: int = 0
    filtered: int = 0

    def __add__(self, other: LabelCounts) -> LabelCounts:
        return LabelCounts(
            self.input + other.input,
            self.kept + other.kept,
            self.cropped + other.cropped,
            self.filtered + other.filtered,
        )

    @property
    def lost(self) -> int:
        return self.cropped + self.filtered

    @property
    def lost_share(self) -> float:
        """Share of input labels lost (0 when there were none)."""
        return self.lost / self.input if self.input else 0.0

    def to_dict(self) -> dict[str, float]:
        return {**self.__dict__, "lost": self.lost, "lost_share": round(self.lost_share, 4)}


def box_candidates(
    box1: np.ndarray,
    box2: np.ndarray,
    wh_thr: float = 2,
    ar_thr: float = 20,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Official box filter: keep boxes wider and taller than ``wh_thr`` px, keeping more than ``area_thr`` of their
    (scaled) area, with aspect ratio under ``ar_thr``.

    Args:
        box1: ``[4, N]`` boxes before augmentation (already multiplied by the scale), ``xyxy``.
        box2: ``[4, N]`` boxes after augmentation, ``xyxy``.
    Returns:
        ``[N]`` bool mask.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def resample_polygon(poly: np.ndarray, n: int = 1000) -> np.ndarray:
    """``[n, 2]`` points evenly spaced in index along the closed polygon (so that warped extents are tight)."""
    closed = np.concatenate([poly, poly[:1]])
    t = np.linspace(0, len(closed) - 1, n)
    idx = np.arange(len(closed))
    return np.stack([np.interp(t, idx, closed[:, 0]), np.interp(t, idx, closed[:, 1])], axis=1)


def _extent_inside(points: np.ndarray, width: float, height: float) -> np.ndarray:
    inside = (points[:, 0] >= 0) & (points[:, 1] >= 0) & (points[:, 0] <= width) & (points[:, 1] <= height)
    if not inside.any():
        return np.zeros(4)
    p = points[inside]
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def random_perspective(
    img: np.ndarray,
    labels: Labels,
    rng: np.random.Generator,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, Labels, int, int]:
    """Official random affine/perspective warp with the box filter.

    Output size is the input size plus ``2 * border`` (the mosaic passes ``-s/2`` to crop its 2s canvas to s).
    The scale factor is drawn from U(1 - scale, 1.1 + scale) (asymmetric, as in the official code); translation
    is U(0.5 - translate, 0.5 + translate) of the output size; rotation U(-degrees, degrees); shear in degrees.

    Returns:
        (image, kept labels, number cropped away, number removed by ``box_candidates``).
    """
    height, width = img.shape[0] + 2 * border[0], img.shape[1] + 2 * border[1]
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -img.shape[1] / 2, -img.shape[0] / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)
    rot = np.eye(3)
    angle, s = rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1.1 + scale)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=s)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    tr = np.eye(3)
    tr[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * width
    tr[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * height
    m = tr @ sh @ rot @ persp @ centre
    if border[0] != 0 or border[1] != 0 or (m != np.eye(3)).any():
        fill = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        if perspective:
            img = cv2.warpPerspective(img, m, dsize=(width, height), borderValue=fill)
        else:
            img = cv2.warpAffine(img, m[:2], dsize=(width, height), borderValue=fill)
    n = len(labels)
    if n == 0:
        return img, labels, 0, 0

    def warp(points: np.ndarray) -> np.ndarray:
        xy = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ m.T
        return xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]

    polygons = labels.segments
    use_segments = polygons is not None
    if polygons is not None:
        new = np.stack([_extent_inside(warp(resample_polygon(p)), width, height) for p in polygons])
    else:
        b = labels.boxes
        corners = warp(b[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 2)).reshape(n, 8)
        xs, ys = corners[:, [0, 2, 4, 6]], corners[:, [1, 3, 5, 7]]
        new = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    keep = box_candidates(labels.boxes.T * s, new.T, area_thr=0.01 if use_segments else 0.10)
    visible = ((new[:, 2] - new[:, 0]) > 0) & ((new[:, 3] - new[:, 1]) > 0)
    cropped = int((~keep & ~visible).sum())
    filtered = int((~keep & visible).sum())
    segs = None
    if polygons is not None:
        segs = [np.clip(warp(p), 0, [width, height]) for p, k in zip(polygons, keep) if k]
    return img, Labels(new[keep], labels.classes[keep], segs), cropped, filtered


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """Official HSV jitter in place: gains U(-1, 1) * [h, s, v] + 1 applied through lookup tables (hue mod 180)."""
    if not (hgain or sgain or vgain):
        return img
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)
    return img


def mixup(
    img1: np.ndarray, labels1: Labels, img2: np.ndarray, labels2: Labels, ratio: float
) -> tuple[np.ndarray, Labels]:
    """Official MixUp: ``img1 * r + img2 * (1 - r)`` (truncated to uint8), labels of both."""
    img = (img1.astype(np.float32) * ratio + img2.astype(np.float32) * (1 - ratio)).astype(np.uint8)
    return img, Labels.concat([labels1, labels2])


def flip(img: np.ndarray, labels: Labels, horizontal: bool) -> tuple[np.ndarray, Labels]:
    """Mirror left-right (``horizontal``) or up-down; boxes follow."""
    h, w = img.shape[:2]
    boxes = labels.boxes.copy()
    segs = None if labels.segments is None else [s.copy() for s in labels.segments]
    if horizontal:
        img = np.ascontiguousarray(img[:, ::-1])
        boxes[:, [0, 2]] = w - labels.boxes[:, [2, 0]]
        if segs is not None:
            for s in segs:
                s[:, 0] = w - s[:, 0]
    else:
        img = np.ascontiguousarray(img[::-1])
        boxes[:, [1, 3]] = h - labels.boxes[:, [3, 1]]
        if segs is not None:
            for s in segs:
                s[:, 1] = h - s[:, 1]
    return img, Labels(boxes, labels.classes, segs)
