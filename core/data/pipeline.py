"""The training/validation ``torch.utils.data.Dataset``: one sample = augmented image + normalized targets.

Training sample (``augment=True``), official order: mosaic (4 or 9) with random perspective, or letterbox +
random perspective when mosaic is off; MixUp (only with mosaic); HSV jitter; up-down and left-right flips.
Validation sample (``augment=False``): long-side resize (INTER_AREA when shrinking) and letterbox without
upscaling, to a square or to the sample's rectangular batch shape.

Each sample's randomness comes from ``np.random.default_rng((seed, epoch, index))``, so a sample is the same
whatever worker process builds it and however many workers there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch

from core.data.augment import LabelCounts, Labels, augment_hsv, flip, mixup, random_perspective
from core.data.hyp import HYP_P5, MIXUP_BETA, MOSAIC9_PROB, Hyp
from core.data.letterbox import letterbox, read_bgr, rect_batch_shapes, resize_long_side
from core.data.mosaic import load_mosaic
from core.data.types import ImageRecord


class Sample(NamedTuple):
    """One dataset item (before collation).

    Attributes:
        image: ``uint8 [3, H, W]`` RGB.
        targets: ``float32 [n, 6]``: (0 placeholder for the batch index, class, xc, yc, w, h) normalized to H, W.
        path: the image file.
        record_index: position of the image in the records given to the dataset.
        shapes: validation only: ((h0, w0), ((h / h0, w / w0), (pad_w, pad_h))) to map boxes back; else ``None``.
        counts: labels fed in / kept / cropped / filtered for this sample.
    """

    image: torch.Tensor
    targets: torch.Tensor
    path: str
    record_index: int
    shapes: tuple | None
    counts: LabelCounts


class YoloDataset(torch.utils.data.Dataset):
    """Detection dataset following the official ``LoadImagesAndLabels`` behaviour.

    Args:
        records: images and labels (cleaned, e.g. ``check_dataset(...).dataset.split("train")``).
        img_size: network input size s (square training images are s x s).
        hyp: augmentation hyperparameters (mosaic, mixup, scale, hsv, flips ...).
        augment: training augmentation on/off.
        rect: rectangular batches (validation); needs ``batch_size`` and disables mosaic.
        batch_size, stride, pad: for the rectangular batch shapes (``pad`` 0.5 is the official evaluation value).
        cache_images: decode and resize every image once into RAM (``cache_bytes`` tells how much).
        seed: base seed of every sample's random generator.
        mosaic9_prob: share of 9-image mosaics among mosaics (official 0.2).

    Items are looked up with ``dataset[i]`` (epoch ``dataset.epoch``) or ``dataset[(i, epoch)]`` (what the
    loader's sampler passes, so that worker processes need no shared state).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        img_size: int = 640,
        hyp: Hyp = HYP_P5,
        augment: bool = True,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        pad: float = 0.0,
        cache_images: bool = False,
        seed: int = 0,
        mosaic9_prob: float = MOSAIC9_PROB,
    ) -> None:
        self.records = list(records)
        self.img_size = int(img_size)
        self.hyp = hyp
        self.augment = augment
        self.rect = rect
        self.mosaic = augment and not rect and hyp.mosaic > 0
        self.seed = int(seed)
        self.epoch = 0
        self.mosaic9_prob = mosaic9_prob
        self.order = np.arange(len(self.records))
        self.batch_shapes: np.ndarray | None = None
        if rect and self.records:
            sizes = np.array([[r.width, r.height] for r in self.records], dtype=np.float64)
            self.order, self.batch_shapes = rect_batch_shapes(sizes, batch_size, self.img_size, stride, pad)
            self.batch_size = batch_size
        self._cache: list[np.ndarray] | None = None
        if cache_images:
            self._cache = [self._read_resized(i) for i in range(len(self.records))]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def cache_bytes(self) -> int:
        """RAM used by the image cache (0 without cache)."""
        return sum(a.nbytes for a in self._cache) if self._cache is not None else 0

    def _read_resized(self, i: int) -> np.ndarray:
        return resize_long_side(read_bgr(self.records[i].path), self.img_size, self.augment)

    def load(self, i: int) -> tuple[np.ndarray, Labels]:
        """Image ``i`` resized to the long side ``img_size`` (HWC BGR) and its labels in its pixels."""
        rec = self.records[i]
        img = self._cache[i] if self._cache is not None else self._read_resized(i)
        h, w = img.shape[:2]
        segs = None if rec.segments is None else [s.copy() for s in rec.segments]
        labels = Labels(rec.boxes.copy(), rec.classes.copy(), segs)
        return img, labels.transformed(w / rec.width, h / rec.height, 0, 0)

    def rng(self, index: int, epoch: int) -> np.random.Generator:
        """The random generator of one sample (depends only on seed, epoch and index)."""
        return np.random.default_rng((self.seed, epoch, index))

    def __getitem__(self, item: int | tuple[int, int]) -> Sample:
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        index = int(self.order[index]) if self.rect else int(index)
        rng = self.rng(index, epoch)
        hyp = self.hyp
        shapes = None
        lost_crop = lost_filter = 0
        if self.mosaic and rng.random() < hyp.mosaic:
            img, labels, n_in, lost_crop, lost_filter = self._mosaic(index, rng)
            if rng.random() < hyp.mixup:
                partner = int(rng.integers(0, len(self)))
                img2, labels2, n2, c2, f2 = self._mosaic(partner, rng)
                img, labels = mixup(img, labels, img2, labels2, float(rng.beta(MIXUP_BETA, MIXUP_BETA)))
                n_in, lost_crop, lost_filter = n_in + n2, lost_crop + c2, lost_filter + f2
        else:
            img, labels = self.load(index)
            n_in = len(labels)
            h, w = img.shape[:2]
            rec = self.records[index]
            shape = self._rect_shape(item) if self.rect else self.img_size
            img, (rw, rh), (dw, dh) = letterbox(img, shape, auto=False, scaleup=self.augment)
            labels = labels.transformed(rw, rh, dw, dh)
            shapes = ((rec.height, rec.width), ((h / rec.height, w / rec.width), (dw, dh)))
            if self.augment:
                img, labels, lost_crop, lost_filter = random_perspective(
                    img,
                    labels,
                    rng,
                    degrees=hyp.degrees,
                    translate=hyp.translate,
                    scale=hyp.scale,
                    shear=hyp.shear,
                    perspective=hyp.perspective,
                )
                shapes = None
        if self.augment:
            img = augment_hsv(img, rng, hyp.hsv_h, hyp.hsv_s, hyp.hsv_v)
            if rng.random() < hyp.flipud:
                img, labels = flip(img, labels, horizontal=False)
            if rng.random() < hyp.fliplr:
                img, labels = flip(img, labels, horizontal=True)
        counts = LabelCounts(n_in, len(labels), lost_crop, lost_filter)
        return Sample(
            _to_chw_rgb(img), _targets(labels, img.shape[:2]), str(self.records[index].path), index, shapes, counts
        )

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, Labels, int, int, int]:
        return load_mosaic(self.load, index, len(self), self.img_size, self.hyp, rng, self.mosaic9_prob)

    def _rect_shape(self, item: int | tuple[int, int]) -> tuple[int, int]:
        position = item[0] if isinstance(item, tuple) else item
        assert self.batch_shapes is not None
        h, w = self.batch_shapes[int(position) // self.batch_size]
        return int(h), int(w)


def _to_chw_rgb(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)))


def _targets(labels: Labels, shape: tuple[int, int]) -> torch.Tensor:
    """``[n, 6]`` (0, class, xc, yc, w, h) normalized to the image (h, w) = ``shape``."""
    h, w = shape
    out = np.zeros((len(labels), 6), dtype=np.float32)
    if len(labels):
        b = labels.boxes
        out[:, 1] = labels.classes
        out[:, 2] = (b[:, 0] + b[:, 2]) / 2 / w
        out[:, 3] = (b[:, 1] + b[:, 3]) / 2 / h
        out[:, 4] = (b[:, 2] - b[:, 0]) / w
        out[:, 5] = (b[:, 3] - b[:, 1]) / h
    return torch.from_numpy(out)
