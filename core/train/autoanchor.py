"""Autoanchor, as the official recipe: keep the anchors if their best possible recall (BPR) on the training
boxes is >= 0.98, else k-means on the box sizes followed by a seeded genetic evolution, and use the result only
if it is better. Box sizes are taken at the training size (long side of each image scaled to ``img_size``)."""

from __future__ import annotations

import numpy as np
import torch

from core.data.anchors import anchor_fit, best_possible_recall

BPR_THRESHOLD = 0.98


def training_box_sizes(dataset, img_size: int, split: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``[N, 2]`` box (w, h) in pixels after the long side of each image is scaled to ``img_size``."""
    out = []
    for r in dataset.split(split):
        if r.num_boxes:
            scale = img_size / max(r.width, r.height)
            b = np.asarray(r.boxes, dtype=np.float64)
            out.append((b[:, 2:] - b[:, :2]) * scale)
    return np.concatenate(out) if out else np.zeros((0, 2))


def _fitness(anchors: np.ndarray, wh: np.ndarray, thr: float) -> float:
    best = anchor_fit(wh, anchors).max(1)
    return float((best * (best > thr)).mean())


def evolve_anchors(wh: np.ndarray, n: int, anchor_t: float = 4.0, generations: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n, 2]`` anchors sorted by area: whitened k-means, then mutation (p 0.9, sigma 0.1) kept when fitter."""
    from scipy.cluster.vq import kmeans

    thr = 1.0 / anchor_t
    wh = wh[(wh >= 2.0).any(1)].astype(np.float64)
    rng = np.random.default_rng(seed)
    if len(wh) < n:
        raise ValueError(f"autoanchor needs at least {n} boxes, got {len(wh)}")
    s = wh.std(0)
    s[s == 0] = 1
    k, _ = kmeans(wh / s, n, iter=30, seed=int(rng.integers(2**31)))
    if len(k) < n:  # k-means may return fewer clusters for degenerate data: pad with random boxes
        k = np.concatenate([k, wh[rng.choice(len(wh), n - len(k))] / s])
    k = k * s
    f = _fitness(k, wh, thr)
    for _ in range(generations):
        v = np.ones(k.shape)
        while (v == 1).all():
            v = ((rng.random(k.shape) < 0.9) * rng.random() * rng.standard_normal(k.shape) * 0.1 + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = _fitness(kg, wh, thr)
        if fg > f:
            f, k = fg, kg
    return k[np.argsort(k.prod(1))]


@torch.no_grad()
def set_anchors(model, anchors_px: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Write pixel anchors ``[nl*na, 2]`` (sorted by area, i.e. level order) into the model's head buffers."""
    head = model.head
    a = torch.as_tensor(anchors_px, dtype=torch.float32, device=head.anchors.device).view(head.nl, head.na, 2)
    head.anchor_grid.copy_(a.view_as(head.anchor_grid))
    head.anchors.copy_(a / head.stride.view(-1, 1, 1))


def check_and_evolve(
    model,
    dataset,
    img_size: int,
    anchor_t: float,
    split: str = "train",
    seed: int = 0,  # type: ignore[no-untyped-def]
) -> str:
    """Run the check (and evolution when needed); returns the message for the log."""
    wh = training_box_sizes(dataset, img_size, split)
    head = model.head
    current = head.anchor_grid.detach().cpu().view(-1, 2).numpy()
    bpr, per_box = best_possible_recall(wh, current, anchor_t)
    msg = f"autoanchor: {per_box:.2f} anchors/target, best possible recall {bpr:.4f}"
    if bpr >= BPR_THRESHOLD or len(wh) < head.nl * head.na:
        return msg + " (anchors kept)"
    new = evolve_anchors(wh, head.nl * head.na, anchor_t, seed=seed)
    new_bpr, _ = best_possible_recall(wh, new, anchor_t)
    if new_bpr > bpr:
        set_anchors(model, new)
        return msg + f" -> evolved anchors with recall {new_bpr:.4f}: " + ", ".join(f"{w:.0f}x{h:.0f}" for w, h in new)
    return msg + f" (evolved anchors were not better: {new_bpr:.4f}; kept)"
