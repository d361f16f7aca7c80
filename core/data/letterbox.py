"""Image loading, long-side resize and letterbox, following the official rules (FACTS 1e).

Images are ``uint8`` HWC BGR inside the pipeline (OpenCV's order); the loader converts to RGB CHW at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

PAD_VALUE = 114

BoxArray = TypeVar("BoxArray", torch.Tensor, np.ndarray)


def read_bgr(path: str | Path) -> np.ndarray:
    """Decode an image as ``uint8`` HWC BGR (EXIF orientation applied, as ``cv2.imread`` does).

    Raises:
        FileNotFoundError: missing or undecodable file (the path is in the message).
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: cannot be read or decoded as an image")
    return img


def resize_long_side(img: np.ndarray, img_size: int, augment: bool) -> np.ndarray:
    """Official ``load_image`` resize: long side to ``img_size``, aspect kept.

    ``INTER_AREA`` when shrinking without augmentation, else ``INTER_LINEAR``; new size ``int(dim * r)``.
    """
    h0, w0 = img.shape[:2]
    r = img_size / max(h0, w0)
    if r == 1:
        return img
    interp = cv2.INTER_AREA if r < 1 and not augment else cv2.INTER_LINEAR
    return cv2.resize(img, (max(int(w0 * r), 1), max(int(h0 * r), 1)), interpolation=interp)


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (PAD_VALUE, PAD_VALUE, PAD_VALUE),
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to ``new_shape`` (h, w), official rules.

    r = min(new_h / h, new_w / w) (capped at 1 without ``scaleup``); unpadded size (round(w r), round(h r));
    the padding is split in two: top = round(dh - 0.1), bottom = round(dh + 0.1), same for left/right;
    ``auto`` pads only up to a multiple of ``stride``. Resize with ``INTER_LINEAR``.

    Returns:
        (image, (rw, rh) scale ratios, (dw, dh) half of the total padding per axis, as floats). The pixels are
        shifted by the integer :func:`pad_offsets` ``(round(dw - 0.1), round(dh - 0.1))``; labels follow the
        official code and use the float ``(dw, dh)`` (up to 0.5 px off for an odd padding). Map boxes back with
        :func:`unletterbox_boxes`, which uses the integer offsets (the exact inverse of the pixels).
    """
    shape = img.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = (int(round(shape[1] * r)), int(round(shape[0] * r)))
    pad_w, pad_h = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    dw, dh = pad_w / 2, pad_h / 2
    if (shape[1], shape[0]) != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    left, top = pad_offsets(dw, dh)
    bottom, right = int(round(dh + 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, (r, r), (dw, dh)


def pad_offsets(dw: float, dh: float) -> tuple[int, int]:
    """The integer ``(left, top)`` padding that :func:`letterbox` puts before the image, from its half pads."""
    return int(round(dw - 0.1)), int(round(dh - 0.1))


def unletterbox_boxes(
    boxes: BoxArray,
    ratio: tuple[float, float],
    pad: tuple[int, int] | tuple[float, float],
    orig_shape: tuple[int, int],
    clip: bool = True,
) -> BoxArray:
    """Map boxes from letterboxed input pixels back to original image pixels: THE inverse letterbox mapping.

    Used by the predictor and by evaluation (``val``), so one image gives the same boxes through both.

    Args:
        boxes: ``[n, >=4]`` tensor or array, xyxy in the first four columns (further columns, e.g. score and
            class, are copied unchanged).
        ratio: ``(rw, rh)`` per-axis scale from original to letterboxed pixels (resized size / original size).
        pad: ``(left, top)`` padding before the image in letterboxed pixels: the integer offsets the pixels were
            shifted by (:func:`pad_offsets` of the half pads), not the official ``scale_coords``' unrounded half
            pad, which puts boxes up to 0.5 input pixels off when the padding is odd.
        orig_shape: original ``(h, w)``; with ``clip`` boxes are clipped to ``[0, w] x [0, h]``.
    Returns:
        A new tensor/array of the same type, shape and dtype: ``x = (x' - left) / rw``, ``y = (y' - top) / rh``.
    """
    rw, rh = ratio
    left, top = pad
    out = boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - left) / rw
    out[:, [1, 3]] = (out[:, [1, 3]] - top) / rh
    if clip:
        h, w = orig_shape
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def rect_batch_shapes(
    sizes: np.ndarray, batch_size: int, img_size: int, stride: int = 32, pad: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Rectangular batches (official ``rect``): image order by aspect ratio and one (h, w) shape per batch.

    Args:
        sizes: ``[N, 2]`` image (w, h).
    Returns:
        (order ``[N]``: indices sorted by h/w, shapes ``[num_batches, 2]`` (h, w) multiples of ``stride``):
        shape = ceil([h/w, 1] or [1, w/h] scaled to ``img_size`` / stride + pad) * stride.
    """
    ar = sizes[:, 1] / sizes[:, 0]
    order = np.argsort(ar, kind="stable")
    ar = ar[order]
    nb = math.ceil(len(order) / batch_size)
    shapes = np.ones((nb, 2))
    for b in range(nb):
        ari = ar[b * batch_size : (b + 1) * batch_size]
        lo, hi = ari.min(), ari.max()
        if hi < 1:
            shapes[b] = [hi, 1]
        elif lo > 1:
            shapes[b] = [1, 1 / lo]
    return order, (np.ceil(shapes * img_size / stride + pad).astype(int) * stride)
