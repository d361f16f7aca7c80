"""Annotated images: one colour per class, a box and a ``name score`` tag for every detection.

Colours come from a 20-colour palette chosen to be told apart; tag text is black or white, whichever contrasts
more with the tag colour. Line width and font size scale with the image so that tags stay readable on small and
large images alike.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.inference.results import Detections

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip


def class_color(label: int) -> tuple[int, int, int]:
    """RGB colour of a class index."""
    return PALETTE[label % len(PALETTE)]


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_detections(
    image: np.ndarray | Image.Image,
    dets: Detections,
    *,
    line_width: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """A copy of ``image`` (``[H, W, 3]`` RGB uint8 or PIL) with the detections drawn, highest score on top."""
    im = image.convert("RGB").copy() if isinstance(image, Image.Image) else Image.fromarray(image, "RGB")
    w, h = im.size
    lw = line_width or max(2, round((w + h) / 2 * 0.003))
    size = font_size or max(13, round((w + h) / 2 * 0.025))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(im)
    order = list(range(len(dets)))[::-1]  # lowest score first, so the best detections are drawn last (on top)
    boxes, scores, labels = dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist()
    for k in order:
        x1, y1, x2, y2 = boxes[k]
        color = class_color(labels[k])
        draw.rectangle((x1, y1, x2, y2), outline=color, width=lw)
        text = f"{dets.class_names[labels[k]]} {scores[k]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        pad = max(2, size // 6)
        tag_h = th + 2 * pad
        ty = y1 - tag_h if y1 - tag_h >= 0 else y1  # above the box if it fits, else inside its top edge
        tx = min(max(0.0, x1), max(0.0, w - tw - 2 * pad))
        draw.rectangle((tx, ty, tx + tw + 2 * pad, ty + tag_h), fill=color)
        draw.text((tx + pad - left, ty + pad - top), text, fill=_text_color(color), font=font)
    return im
