"""Model anchors and the official autoanchor best-possible-recall (BPR) metric.

Anchors come from ``core.models.model_anchors(name) -> (anchors_px, strides)`` (``anchors_px``: per level a list
of (w, h) pixel tuples) and ``core.models.list_models()``. Until ``core.models`` provides them, the official values
below (FACTS 1a) are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_P5: list[list[tuple[float, float]]] = [
    [(12, 16), (19, 36), (40, 28)],
    [(36, 75), (76, 55), (72, 146)],
    [(142, 110), (192, 243), (459, 401)],
]
_TINY: list[list[tuple[float, float]]] = [
    [(10, 13), (16, 30), (33, 23)],
    [(30, 61), (62, 45), (59, 119)],
    [(116, 90), (156, 198), (373, 326)],
]
_P6: list[list[tuple[float, float]]] = [
    [(19, 27), (44, 40), (38, 94)],
    [(96, 68), (86, 152), (180, 137)],
    [(140, 301), (303, 264), (238, 542)],
    [(436, 615), (739, 380), (925, 792)],
]
_FALLBACK: dict[str, tuple[list[list[tuple[float, float]]], list[int]]] = {
    "yolov7-tiny": (_TINY, [8, 16, 32]),
    "yolov7": (_P5, [8, 16, 32]),
    "yolov7x": (_P5, [8, 16, 32]),
    "yolov7-w6": (_P6, [8, 16, 32, 64]),
    "yolov7-e6": (_P6, [8, 16, 32, 64]),
    "yolov7-d6": (_P6, [8, 16, 32, 64]),
    "yolov7-e6e": (_P6, [8, 16, 32, 64]),
}


@dataclass(frozen=True)
class ModelAnchors:
    """Anchors of one or several models that share them.

    Attributes:
        names: model names sharing these anchors (e.g. ``("yolov7", "yolov7x")``).
        anchors: per level, ``(w, h)`` pixel tuples.
        strides: per level stride in pixels.
        train_size: the official training size (640 for 3-level P5 models, 1280 for 4-level P6 models).
    """

    names: tuple[str, ...]
    anchors: tuple[tuple[tuple[float, float], ...], ...]
    strides: tuple[int, ...]
    train_size: int

    @property
    def label(self) -> str:
        return " / ".join(self.names)

    def as_array(self) -> np.ndarray:
        """``[nl * na, 2]`` pixel (w, h), level-major."""
        return np.asarray([wh for level in self.anchors for wh in level], dtype=np.float64)

    def level_of_anchor(self) -> np.ndarray:
        """``[nl * na]`` level index of each row of ``as_array()``."""
        return np.asarray([i for i, level in enumerate(self.anchors) for _ in level], dtype=np.int64)


def _source() -> tuple[list[str], object]:
    try:
        from core.models import list_models, model_anchors  # type: ignore[attr-defined]

        return list(list_models()), model_anchors
    except (ImportError, AttributeError):
        return list(_FALLBACK), lambda name: _FALLBACK[name]


def model_anchor_groups(names: list[str] | None = None) -> list[ModelAnchors]:
    """Anchors of the given (default: all) models, models with identical anchors and strides grouped together."""
    all_names, get = _source()
    groups: dict[tuple, list[str]] = {}
    for name in names or all_names:
        try:
            anchors_px, strides = get(name)  # type: ignore[operator]
        except (KeyError, ValueError):
            continue
        key = (
            tuple(tuple((float(w), float(h)) for w, h in level) for level in anchors_px),
            tuple(int(s) for s in strides),
        )
        groups.setdefault(key, []).append(name)
    return [
        ModelAnchors(tuple(members), anchors, strides, 1280 if len(strides) == 4 else 640)
        for (anchors, strides), members in groups.items()
    ]


def anchor_fit(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Official autoanchor ratio metric: ``[N, K]`` = min over (w, h) of min(r, 1/r), r = box wh / anchor wh.

    Args:
        wh: ``[N, 2]`` box sizes in pixels at the training size.
        anchors: ``[K, 2]`` anchor sizes in pixels.
    """
    r = wh[:, None, :] / anchors[None, :, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.minimum(r, 1.0 / r).min(axis=2)
    return np.nan_to_num(m, nan=0.0)


def best_possible_recall(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> tuple[float, float]:
    """(BPR, anchors above threshold per box) as the official ``check_anchors`` computes them.

    BPR is the share of boxes whose best anchor has ``anchor_fit > 1 / anchor_t``; the second value is the mean
    number of anchors per box passing that threshold. The official check also multiplies the image sizes by a
    random factor U(0.9, 1.1); this deterministic version does not.
    """
    if len(wh) == 0:
        return 0.0, 0.0
    x = anchor_fit(wh, anchors)
    passing = x > 1.0 / anchor_t
    return float(passing.any(axis=1).mean()), float(passing.sum(axis=1).mean())
