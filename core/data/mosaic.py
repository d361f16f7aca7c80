"""4- and 9-image mosaics (official layouts and crop ranges, FACTS 1e), followed by the random perspective crop.

``load(i)`` must return the ``i``-th image resized to the long side ``s`` (uint8 HWC BGR) and its ``Labels`` in
that image's pixels. Both mosaics build a 2s x 2s canvas filled with 114 and hand it to ``random_perspective`` with
border ``-s/2``, which outputs an s x s image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.data.augment import Labels, random_perspective
from core.data.hyp import Hyp
from core.data.letterbox import PAD_VALUE

Loader = Callable[[int], tuple[np.ndarray, Labels]]


def _paste(canvas: np.ndarray, img: np.ndarray, x0: int, y0: int) -> None:
    """Copy ``img`` with its top-left corner at canvas (x0, y0); parts outside the canvas are cut off."""
    ch, cw = canvas.shape[:2]
    h, w = img.shape[:2]
    cx1, cy1, cx2, cy2 = max(x0, 0), max(y0, 0), min(x0 + w, cw), min(y0 + h, ch)
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1:cy2, cx1:cx2] = img[cy1 - y0 : cy2 - y0, cx1 - x0 : cx2 - x0]


def mosaic4(load: Loader, indices: list[int], s: int, rng: np.random.Generator) -> tuple[np.ndarray, Labels, int]:
    """Four images around a centre drawn uniformly in [s/2, 3s/2]; returns (2s x 2s canvas, labels, input count).

    Image 0 ends at the centre from the top-left, 1 from the top-right, 2 from the bottom-left, 3 starts there.
    Labels are clipped to the canvas, as the official code does before the perspective step.
    """
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, dtype=np.uint8)
    yc = int(rng.uniform(s // 2, 2 * s - s // 2))
    xc = int(rng.uniform(s // 2, 2 * s - s // 2))
    parts, n_input = [], 0
    for k, index in enumerate(indices[:4]):
        img, labels = load(index)
        h, w = img.shape[:2]
        x0 = xc - w if k in (0, 2) else xc
        y0 = yc - h if k in (0, 1) else yc
        _paste(canvas, img, x0, y0)
        parts.append(labels.transformed(1, 1, x0, y0))
        n_input += len(labels)
    return canvas, Labels.concat(parts).clipped(2 * s, 2 * s), n_input


def mosaic9(load: Loader, indices: list[int], s: int, rng: np.random.Generator) -> tuple[np.ndarray, Labels, int]:
    """Nine images on a 3s x 3s canvas, then a 2s x 2s crop at an offset drawn uniformly in [0, s) per axis.

    Layout (official): image 0 with its top-left at (s, s); then clockwise from the top, each image against its
    neighbour: top, top-right, right, bottom-right, bottom, bottom-left, left, top-left.
    """
    canvas = np.full((3 * s, 3 * s, 3), PAD_VALUE, dtype=np.uint8)
    parts, n_input = [], 0
    h0 = w0 = hp = wp = 0
    for k, index in enumerate(indices[:9]):
        img, labels = load(index)
        h, w = img.shape[:2]
        if k == 0:
            h0, w0 = h, w
        origin = {
            0: (s, s),
            1: (s, s - h),
            2: (s + wp, s - h),
            3: (s + w0, s),
            4: (s + w0, s + hp),
            5: (s + w0 - w, s + h0),
            6: (s + w0 - wp - w, s + h0),
            7: (s - w, s + h0 - h),
            8: (s - w, s + h0 - hp - h),
        }[k]
        x0, y0 = origin
        # Official: a tile reaching left/above the canvas is placed at 0 and cut, its labels keep the true offset.
        _paste(canvas, img, x0, y0)
        parts.append(labels.transformed(1, 1, x0, y0))
        n_input += len(labels)
        hp, wp = h, w
    yc, xc = int(rng.uniform(0, s)), int(rng.uniform(0, s))
    crop = canvas[yc : yc + 2 * s, xc : xc + 2 * s]
    labels = Labels.concat(parts).transformed(1, 1, -xc, -yc).clipped(2 * s, 2 * s)
    return np.ascontiguousarray(crop), labels, n_input


def load_mosaic(
    load: Loader, index: int, num_images: int, s: int, hyp: Hyp, rng: np.random.Generator, mosaic9_prob: float
) -> tuple[np.ndarray, Labels, int, int, int]:
    """A 4-mosaic (p = 1 - ``mosaic9_prob``) or 9-mosaic of ``index`` and random others, warped to s x s.

    Returns:
        (image s x s, labels, labels fed in, labels cropped away, labels removed by the box filter).
    """
    if rng.random() < 1 - mosaic9_prob:
        others = rng.integers(0, num_images, size=3).tolist()
        canvas, labels, n_input = mosaic4(load, [index, *others], s, rng)
    else:
        others = rng.integers(0, num_images, size=8).tolist()
        canvas, labels, n_input = mosaic9(load, [index, *others], s, rng)
    img, labels, cropped, filtered = random_perspective(
        canvas,
        labels,
        rng,
        degrees=hyp.degrees,
        translate=hyp.translate,
        scale=hyp.scale,
        shear=hyp.shear,
        perspective=hyp.perspective,
        border=(-s // 2, -s // 2),
    )
    return img, labels, n_input, cropped, filtered
