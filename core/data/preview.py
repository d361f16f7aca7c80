"""Grid of augmented training samples with their boxes and class names (``yolov7-studio data preview``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from core.data.augment import LabelCounts
from core.data.hyp import HYP_P5, Hyp
from core.data.pipeline import YoloDataset
from core.data.types import ImageRecord

_COLOURS = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]  # fmt: skip


def draw_sample(image: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> np.ndarray:
    """Draw normalized ``[n, 6]`` targets on a ``uint8 [3, H, W]`` RGB image; returns HWC BGR for OpenCV."""
    img = np.ascontiguousarray(image.numpy().transpose(1, 2, 0)[:, :, ::-1])
    h, w = img.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    for _, cls, xc, yc, bw, bh in targets.tolist():
        c = int(cls)
        colour = _COLOURS[c % len(_COLOURS)]
        x1, y1 = int((xc - bw / 2) * w), int((yc - bh / 2) * h)
        x2, y2 = int((xc + bw / 2) * w), int((yc + bh / 2) * h)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        scale = 0.35 * thickness
        (tw, th), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 2 if y1 - th - 3 >= 0 else y1 + th + 2
        cv2.rectangle(img, (x1, ty - th - 1), (x1 + tw + 2, ty + 2), colour, -1)
        cv2.putText(img, name, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def render_preview(
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    out: str | Path,
    n: int = 16,
    img_size: int = 320,
    hyp: Hyp = HYP_P5,
    seed: int = 0,
    augment: bool = True,
) -> tuple[Path, LabelCounts]:
    """Write a PNG grid of ``n`` samples (the first ``n`` indices, epoch 0) as the training loader makes them.

    Returns:
        (the PNG path, label counts of the shown samples).
    """
    ds = YoloDataset(records, img_size, hyp, augment=augment, seed=seed)
    n = min(n, len(ds))
    if n == 0:
        raise ValueError("no images to preview")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles, counts = [], LabelCounts()
    for i in range(n):
        s = ds[(i, 0)]
        counts = counts + s.counts
        tile = draw_sample(s.image, s.targets, class_names)
        tile = cv2.copyMakeBorder(tile, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        tile = cv2.resize(tile, (img_size + 4, img_size + 4)) if tile.shape[:2] != (img_size + 4,) * 2 else tile
        tiles.append(tile)
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (rows * cols - n)
    grid = np.vstack([np.hstack(tiles[r * cols : (r + 1) * cols]) for r in range(rows)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), grid):
        raise OSError(f"{out}: could not write the PNG")
    return out, counts
