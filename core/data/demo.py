"""Built-in demo dataset, generated deterministically: coloured shapes on textured backgrounds, in YOLO format.

Four classes with a distinct shape and a hue band each (red circles, green squares, blue triangles, yellow
crosses), hue/saturation/brightness jittered and rotated, on smooth low-saturation backgrounds with noise and grey
clutter (unlabelled ellipses and lines). Objects are small (10-22 px), medium (24-60 px) or large (64-150 px) at
320 px; one image in five is crowded (10-20 objects) and objects may overlap a little (IoU <= 0.3). Sizes scale
with ``img_size``. yolov7-tiny learns it from scratch at 320 px on a CPU in minutes; mAP is not trivially 1.0
because small crowded objects and partial occlusions remain hard.

API::

    data_yaml = make_demo_dataset("datasets/demo", n_images=300)   # ~2 s; returns .../data.yaml
    data_yaml = ensure_demo_dataset()                              # the same, only if not generated yet
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
_HUES = (0, 60, 120, 28)  # OpenCV hue (0..180) of each class: red, green, blue, yellow
DEFAULT_DIR = Path("datasets/demo")
_MARKER = "demo_params.json"


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    hsv = cv2.cvtColor(coarse, cv2.COLOR_BGR2HSV)
    hsv[..., 1] = (hsv[..., 1] * 0.3).astype(np.uint8)  # low saturation: the objects carry the colour
    smooth = cv2.resize(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), (size, size), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 8, size=(size, size, 1))
    img = np.clip(smooth.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):  # unlabelled grey clutter
        grey = int(rng.integers(60, 200))
        colour = (grey, grey, grey)
        if rng.random() < 0.5:
            p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.line(
                img, tuple(int(v) for v in p1), tuple(int(v) for v in p2), colour, int(rng.integers(1, 4)), cv2.LINE_AA
            )
        else:
            c = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = tuple(int(v) for v in rng.integers(4, max(size // 8, 5), 2))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    return img


def _colour(rng: np.random.Generator, cls: int) -> tuple[int, int, int]:
    hue = (_HUES[cls] + int(rng.integers(-7, 8))) % 180
    hsv = np.array([[[hue, int(rng.integers(150, 256)), int(rng.integers(140, 256))]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _shape_points(cls: int, cx: float, cy: float, size: float, angle: float) -> np.ndarray | None:
    """Polygon of the shape (None for the circle); ``size`` is the unrotated extent."""
    r = size / 2
    if cls == 1:
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]]) * 0.85
    elif cls == 2:
        pts = np.array(
            [[0, -r], [r * math.sin(math.pi / 3) * 1.15, r * 0.75], [-r * math.sin(math.pi / 3) * 1.15, r * 0.75]]
        )
    elif cls == 3:
        t = r * 0.33
        pts = np.array(
            [[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r], [-t, t], [-r, t], [-r, -t], [-t, -t]]
        )
    else:
        return None
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return rot + [cx, cy]


def _iou(a: np.ndarray, boxes: list[np.ndarray]) -> float:
    if not boxes:
        return 0.0
    b = np.asarray(boxes)
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return float((inter / union).max())


def render_demo_image(rng: np.random.Generator, img_size: int = 320) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One demo image (HWC BGR) with its pixel ``xyxy`` boxes ``[N, 4]`` and class ids ``[N]``."""
    k = img_size / 320
    img = _background(rng, img_size)
    crowded = rng.random() < 0.2
    n = int(rng.integers(10, 21)) if crowded else int(rng.integers(1, 8))
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(n):
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        bucket = rng.choice(3, p=[0.6, 0.35, 0.05] if crowded else [0.35, 0.4, 0.25])
        size = rng.uniform(*[(10, 22), (24, 60), (64, 150)][bucket]) * k
        for _try in range(30):
            cx, cy = rng.uniform(size / 2, img_size - size / 2, 2)
            angle = float(rng.uniform(0, 2 * math.pi)) if cls in (1, 2, 3) else 0.0
            pts = _shape_points(cls, cx, cy, size, angle)
            if pts is None:
                box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
            else:
                box = np.array([*pts.min(0), *pts.max(0)])
            box = np.clip(box, 0, img_size)
            if _iou(box, boxes) <= 0.3:
                break
        else:
            continue
        colour = _colour(rng, cls)
        if pts is None:
            cv2.circle(
                img, (int(round(cx * 16)), int(round(cy * 16))), int(round(size / 2 * 16)), colour, -1, cv2.LINE_AA, 4
            )
        else:
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, 4)
        boxes.append(box)
        classes.append(cls)
    return img, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(classes, dtype=np.int64)


def make_demo_dataset(
    out: str | Path = DEFAULT_DIR,
    n_images: int = 300,
    img_size: int = 320,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Path:
    """Generate the demo dataset as YOLO (``images/{train,val,test}``, ``labels/...``, ``data.yaml``) under ``out``.

    Deterministic: image i depends only on (seed, i, img_size); the split is a seeded permutation. An existing
    ``out`` is replaced. Returns the ``data.yaml`` path.
    """
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    perm = np.random.default_rng((seed, 1_000_003)).permutation(n_images)
    n_val, n_test = int(round(fractions[1] * n_images)), int(round(fractions[2] * n_images))
    split_of = {}
    for rank, i in enumerate(perm):
        split_of[int(i)] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    for split in ("train", "val", "test"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        img, boxes, classes = render_demo_image(np.random.default_rng((seed, i)), img_size)
        split = split_of[i]
        stem = f"demo_{i:05d}"
        cv2.imwrite(str(out / "images" / split / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        rows = []
        for (x1, y1, x2, y2), c in zip(boxes, classes):
            xc, yc = (x1 + x2) / 2 / img_size, (y1 + y2) / 2 / img_size
            rows.append(f"{c} {xc:.6f} {yc:.6f} {(x2 - x1) / img_size:.6f} {(y2 - y1) / img_size:.6f}\n")
        (out / "labels" / split / f"{stem}.txt").write_text("".join(rows))
    cfg: dict[str, object] = {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test"}
    cfg.update({"nc": len(CLASS_NAMES), "names": list(CLASS_NAMES)})
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(cfg, sort_keys=False))
    params = {"n_images": n_images, "img_size": img_size, "seed": seed, "fractions": list(fractions)}
    (out / _MARKER).write_text(json.dumps(params))
    return data_yaml


def ensure_demo_dataset(out: str | Path = DEFAULT_DIR, n_images: int = 300, img_size: int = 320, seed: int = 0) -> Path:
    """``make_demo_dataset`` unless ``out`` already holds a demo made with the same parameters; returns data.yaml."""
    out = Path(out)
    marker = out / _MARKER
    if marker.is_file() and (out / "data.yaml").is_file():
        try:
            params = json.loads(marker.read_text())
        except json.JSONDecodeError:
            params = {}
        if params.get("n_images") == n_images and params.get("img_size") == img_size and params.get("seed") == seed:
            return out / "data.yaml"
    return make_demo_dataset(out, n_images, img_size, seed)
