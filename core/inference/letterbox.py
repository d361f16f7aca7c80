"""Letterbox geometry for inference, and the exact way back to original pixels.

The pixels are made by :func:`core.data.letterbox.letterbox` (the data pipeline's implementation, shared so that
training, evaluation and inference letterbox identically); this module adds the geometry without the image (to
group images of equal letterboxed shape into batches) and the inverse mapping of boxes.

Official rules: ``r = min(new_h / h, new_w / w)`` (``min(r, 1)`` without ``scaleup``); the image is resized to
``(round(w*r), round(h*r))`` with ``cv2.INTER_LINEAR``; the padding is split in half with ``round(d - 0.1)`` before
and ``round(d + 0.1)`` after; fill colour 114. ``auto=True`` (detect.py) pads only up to a multiple of ``stride``
(the smallest rectangle), ``auto=False`` (test-time datasets, the conformance file) to the full ``new_shape``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.data.letterbox import PAD_VALUE, pad_offsets, unletterbox_boxes
from core.data.letterbox import letterbox as _letterbox_pixels


@dataclass(frozen=True)
class LetterboxInfo:
    """Where the original image lies in the letterboxed one.

    ``orig_shape`` and ``shape`` are ``(h, w)`` before and after; ``resized`` the ``(h, w)`` of the resized image
    inside the padding; ``pad`` the ``(left, top)`` padding in pixels.
    """

    orig_shape: tuple[int, int]
    shape: tuple[int, int]
    resized: tuple[int, int]
    pad: tuple[int, int]

    @property
    def ratio(self) -> tuple[float, float]:
        """Scale factors ``(w, h)`` from original to letterboxed pixels (equal up to rounding)."""
        return self.resized[1] / self.orig_shape[1], self.resized[0] / self.orig_shape[0]

    def to_original(self, boxes: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """Map ``[n, 4]`` xyxy boxes from letterboxed to original pixels (a new tensor), clipped to the image.

        This is the exact inverse of :func:`letterbox` (integer padding, per-axis scale), through
        :func:`core.data.letterbox.unletterbox_boxes`, the one mapping evaluation uses too. The official
        ``scale_coords`` subtracts the unrounded half padding instead, which can put boxes up to 0.5 letterboxed
        pixels elsewhere.
        """
        return unletterbox_boxes(boxes, self.ratio, self.pad, self.orig_shape, clip=clip)


def letterbox_geometry(
    orig_shape: tuple[int, int],
    new_shape: int | tuple[int, int] = 640,
    *,
    auto: bool = True,
    stride: int = 32,
    scaleup: bool = True,
) -> LetterboxInfo:
    """The output shape, resized size and padding of :func:`letterbox` for an image of ``orig_shape`` (h, w)."""
    h, w = orig_shape
    if h <= 0 or w <= 0:
        raise ValueError(f"cannot letterbox an empty image of shape {orig_shape}")
    new_h, new_w = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    r = min(new_h / h, new_w / w)
    if not scaleup:
        r = min(r, 1.0)
    unpad_w, unpad_h = round(w * r), round(h * r)
    pad_w, pad_h = new_w - unpad_w, new_h - unpad_h
    if auto:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    dw, dh = pad_w / 2, pad_h / 2
    left, top = pad_offsets(dw, dh)
    right, bottom = round(dw + 0.1), round(dh + 0.1)
    return LetterboxInfo((h, w), (unpad_h + top + bottom, unpad_w + left + right), (unpad_h, unpad_w), (left, top))


def letterbox(
    image: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    *,
    auto: bool = True,
    stride: int = 32,
    scaleup: bool = True,
    color: tuple[int, int, int] = (PAD_VALUE, PAD_VALUE, PAD_VALUE),
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize ``image`` (``[H, W, C]`` uint8, any channel order) keeping its aspect ratio and pad it.

    Returns the letterboxed ``[H', W', C]`` array and the :class:`LetterboxInfo` to map boxes back.
    """
    info = letterbox_geometry(image.shape[:2], new_shape, auto=auto, stride=stride, scaleup=scaleup)
    out, _, _ = _letterbox_pixels(image, new_shape, color=color, auto=auto, scaleup=scaleup, stride=stride)
    if out.shape[:2] != info.shape:  # pragma: no cover - both follow the same official formulas
        raise RuntimeError(f"letterbox produced {out.shape[:2]}, expected {info.shape}")
    return np.ascontiguousarray(out), info
