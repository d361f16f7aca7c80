"""DataLoader factory, collate function, per-epoch seeding, label-loss bookkeeping and the multi-scale helper.

Trainer usage::

    loader = create_train_loader(report.dataset, img_size=320, batch_size=16, hyp=get_hyp("tiny"), workers=2, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)                  # optional: iterating again also moves to the next epoch
        for batch in loader:                     # Batch(images uint8 [B,3,H,W] RGB, targets float32 [N,6], ...)
            imgs = batch.images.float() / 255
            imgs = multi_scale_resize(imgs, 320, stride=32, rng=rng)   # only with --multi-scale
            loss = compute_loss(model(imgs), batch.targets)
        log(loader.label_counts().lost_share)     # share of labels lost by augmentation this epoch
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.data.augment import LabelCounts
from core.data.hyp import HYP_P5, Hyp
from core.data.pipeline import Sample, YoloDataset
from core.data.types import DetectionDataset, ImageRecord


class Batch(NamedTuple):
    """A collated batch.

    Attributes:
        images: ``uint8 [B, 3, H, W]`` RGB (divide by 255 for the network).
        targets: ``float32 [N, 6]``: (image index in the batch, class, xc, yc, w, h), normalized to (W, H).
        paths: image files, in batch order.
        indices: ``int64 [B]`` position of each image in the records the dataset was built from (for a split, the
            COCO image id of ``to_coco_dict(dataset, split)`` is ``index + 1``).
        shapes: validation: per image ((h0, w0), ((h / h0, w / w0), (pad_w, pad_h))); training: ``None`` entries.
        counts: labels fed in / kept / lost by augmentation in this batch.
    """

    images: torch.Tensor
    targets: torch.Tensor
    paths: tuple[str, ...]
    indices: torch.Tensor
    shapes: tuple
    counts: LabelCounts


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack images (all of one size) and concatenate targets, writing each image's batch index in column 0."""
    targets = []
    counts = LabelCounts()
    for i, s in enumerate(samples):
        t = s.targets.clone()
        t[:, 0] = i
        targets.append(t)
        counts = counts + s.counts
    return Batch(
        images=torch.stack([s.image for s in samples]),
        targets=torch.cat(targets) if targets else torch.zeros((0, 6)),
        paths=tuple(s.path for s in samples),
        indices=torch.tensor([s.record_index for s in samples], dtype=torch.int64),
        shapes=tuple(s.shapes for s in samples),
        counts=counts,
    )


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, epoch)``; shuffles with a generator seeded by (seed, epoch) when ``shuffle``.

    For distributed training set ``num_replicas`` and ``rank`` (before iterating): every rank draws the same
    permutation, padded by wrapping around to a multiple of ``num_replicas``, and takes every ``num_replicas``-th
    index from ``rank`` (as ``torch.utils.data.DistributedSampler`` does).
    """

    def __init__(self, n: int, shuffle: bool, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0
        self.num_replicas, self.rank = num_replicas, rank
        self.weights: np.ndarray | None = None  # image weights: draw n indices with replacement, p ~ weights

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas) if self.n else 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        if self.weights is not None and self.n:
            p = np.asarray(self.weights, dtype=np.float64)
            order = rng.choice(self.n, size=self.n, replace=True, p=p / p.sum())
        else:
            order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        if self.num_replicas > 1 and self.n:
            total = len(self) * self.num_replicas
            order = np.resize(order, total)[self.rank : total : self.num_replicas]
        return iter([(int(i), self.epoch) for i in order])


def seed_worker(worker_id: int) -> None:
    """Worker init: seed ``random``/``numpy``/``torch`` globals from the loader's per-worker seed, and stop OpenCV
    threads from oversubscribing the cores (each worker is already one process)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    cv2.setNumThreads(0)


class DetectionLoader:
    """Iterable over ``Batch``es with epoch control and label-loss counts (wraps ``torch.utils.data.DataLoader``).

    Attributes:
        dataset: the ``YoloDataset``.
        history: epoch -> ``LabelCounts`` of completed (or current) epochs.
    """

    def __init__(
        self, dataset: YoloDataset, batch_size: int, shuffle: bool, workers: int, seed: int, drop_last: bool = False
    ) -> None:
        self.dataset = dataset
        self.sampler = EpochSampler(len(dataset), shuffle, seed)
        self.epoch = 0
        self._started = False
        self.history: dict[int, LabelCounts] = {}
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            drop_last=drop_last,
            worker_init_fn=seed_worker if workers > 0 else None,
            generator=torch.Generator().manual_seed(seed),
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next iteration (shuffle order and augmentation depend on it)."""
        self.epoch = epoch
        self._started = False

    def __iter__(self) -> Iterator[Batch]:
        if self._started:  # iterating again without set_epoch: next epoch
            self.epoch += 1
        self._started = True
        epoch = self.epoch
        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        self.history[epoch] = LabelCounts()
        for batch in self.loader:
            self.history[epoch] = self.history[epoch] + batch.counts
            yield batch

    def label_counts(self, epoch: int | None = None) -> LabelCounts:
        """Label counts of ``epoch`` (default: the current/last one); ``.lost_share`` is what to log."""
        return self.history.get(self.epoch if epoch is None else epoch, LabelCounts())


def _records(data: DetectionDataset | Sequence[ImageRecord], split: str | None) -> list[ImageRecord]:
    if isinstance(data, DetectionDataset):
        return list(data.split(split))
    return list(data)


def create_train_loader(
    data: DetectionDataset | Sequence[ImageRecord],
    img_size: int = 640,
    batch_size: int = 16,
    hyp: Hyp = HYP_P5,
    workers: int = 2,
    seed: int = 0,
    split: str | None = "train",
    cache_images: bool = False,
    rect: bool = False,
    shuffle: bool = True,
    drop_last: bool = False,
) -> DetectionLoader:
    """Training loader: augmented samples of ``split`` (or all given records), shuffled per epoch.

    ``data`` should be cleaned (``check_dataset(...).dataset``) so that every box is inside its image.
    """
    ds = YoloDataset(
        _records(data, split), img_size, hyp, augment=True, rect=rect, batch_size=batch_size,
        cache_images=cache_images, seed=seed,
    )  # fmt: skip
    return DetectionLoader(ds, batch_size, shuffle and not rect, workers, seed, drop_last)


def create_val_loader(
    data: DetectionDataset | Sequence[ImageRecord],
    img_size: int = 640,
    batch_size: int = 32,
    workers: int = 2,
    split: str | None = "val",
    rect: bool = True,
    pad: float = 0.5,
    stride: int = 32,
    cache_images: bool = False,
) -> DetectionLoader:
    """Validation loader: letterbox without augmentation; rectangular batches (official eval: pad 0.5) or squares."""
    ds = YoloDataset(
        _records(data, split), img_size, augment=False, rect=rect, batch_size=batch_size, stride=stride, pad=pad,
        cache_images=cache_images,
    )  # fmt: skip
    return DetectionLoader(ds, batch_size, False, workers, 0)


def multi_scale_size(img_size: int, stride: int, rng: random.Random | np.random.Generator) -> int:
    """Official multi-scale draw: randrange(0.5 s, 1.5 s + stride) // stride * stride."""
    lo, hi = int(img_size * 0.5), int(img_size * 1.5 + stride)
    value = rng.randrange(lo, hi) if isinstance(rng, random.Random) else int(rng.integers(lo, hi))
    return value // stride * stride


def multi_scale_resize(
    images: torch.Tensor,
    img_size: int,
    stride: int = 32,
    rng: random.Random | np.random.Generator | None = None,
    size: int | None = None,
) -> torch.Tensor:
    """Resize a float batch ``[B, 3, H, W]`` so its long side is a random multiple of ``stride`` (official
    ``--multi-scale``); each side becomes ceil(dim * sz / max_dim / stride) * stride, bilinear, align_corners False.

    Targets are normalized, so they need no change. Pass ``size`` to force the drawn size.
    """
    sz = size if size is not None else multi_scale_size(img_size, stride, rng or random.Random())
    sf = sz / max(images.shape[2:])
    if sf == 1:
        return images
    new = [math.ceil(d * sf / stride) * stride for d in images.shape[2:]]
    return F.interpolate(images, size=new, mode="bilinear", align_corners=False)
