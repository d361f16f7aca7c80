"""Our evaluation equals pycocotools run directly on a COCO file written by hand, not by our code.

The ground truth below is a literal COCO JSON (non-contiguous image and category ids, an image without objects,
small/medium/large boxes, half-pixel coordinates). It is imported the way training imports data
(``load_dataset`` + ``check_dataset``), and ``core.eval.evaluate`` runs a stand-in model over it that "detects"
a hand-written list of boxes: the model recognises each image by its uniform grey level and returns the boxes in
letterboxed input pixels. Everything our side does (import, class/image renumbering, letterbox and its inverse,
NMS, COCO results export, ground truth rebuild) must leave the 12 COCO numbers exactly as pycocotools computes
them from the hand-written files.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 12, "name": "bird"}]  # unsorted on purpose

# id, file, width, height, grey level (the stand-in model's key)
IMAGES = [
    (42, "a.png", 128, 96, 40),
    (7, "b.png", 96, 128, 80),
    (1001, "c.png", 128, 128, 120),
    (5, "d.png", 128, 96, 160),  # no objects: every detection on it is a false positive
    (13, "e.png", 128, 128, 200),
]

# image id, category id, [x, y, w, h], area = w * h by hand (COCO size ranges: small < 32^2 = 1024 <= medium < 96^2)
ANNOTATIONS = [
    (42, 3, [10, 8, 40, 30], 1200),  # 40 * 30, medium
    (42, 7, [60, 40, 20.5, 16], 328),  # 20.5 * 16, small
    (42, 3, [90, 10, 30, 50], 1500),  # 30 * 50, medium
    (7, 12, [4, 4, 12, 10], 120),  # small
    (7, 7, [20, 30, 70, 90], 6300),  # medium
    (7, 3, [50, 100, 40.5, 24], 972),  # 40.5 * 24, small; never detected
    (1001, 7, [10, 12, 104, 100], 10400),  # large
    (1001, 12, [100, 100, 20, 20], 400),  # small
    (1001, 3, [30.5, 40, 20, 25], 500),  # small
    (13, 12, [64, 0, 60, 40], 2400),  # medium
    (13, 12, [0, 64, 40, 60], 2400),  # medium
]

# image id, category id, [x, y, w, h], score (all scores distinct: no tie-breaking differences). IoU with the
# ground truth worked out by hand in the comments; same-class detections of one image overlap with IoU < 0.65,
# so NMS (IoU 0.65) keeps them all; every box lies inside its image, so nothing is clipped.
DETECTIONS = [
    (42, 3, [11, 9, 40, 30], 0.95),  # overlap 39 * 29 = 1131 / (1200 + 1200 - 1131) = 0.891
    (42, 7, [62, 42, 20, 16], 0.62),  # 18.5 * 14 = 259 / (328 + 320 - 259) = 0.666
    (42, 3, [90, 20, 30, 50], 0.41),  # 30 * 40 = 1200 / (1500 + 1500 - 1200) = 0.667
    (42, 7, [10, 8, 40, 30], 0.33),  # a cat box called dog: false positive
    (7, 12, [5, 5, 12, 10], 0.88),  # 11 * 9 = 99 / (120 + 120 - 99) = 0.702
    (7, 7, [20, 30, 70, 90], 0.91),  # exact
    (7, 7, [26, 48, 70, 80], 0.27),  # 64 * 72 = 4608 / (6300 + 5600 - 4608) = 0.632: duplicate, false positive
    (1001, 7, [14, 16, 100, 96], 0.79),  # 9600 / 10400 = 0.923
    (1001, 12, [96, 96, 20, 20], 0.55),  # 16 * 16 = 256 / (400 + 400 - 256) = 0.471: false positive at every IoU
    (1001, 3, [30.5, 40, 20, 25], 0.73),  # exact
    (5, 3, [20, 20, 30, 30], 0.48),  # background image
    (5, 12, [50, 50, 10, 10], 0.12),  # background image
    (13, 12, [64, 0, 60, 40], 0.97),  # exact
    (13, 12, [2, 66, 40, 60], 0.66),  # 38 * 58 = 2204 / (2400 + 2400 - 2204) = 0.849
    (13, 12, [64, 64, 30, 30], 0.05),  # false positive
]


def _write_dataset(root: Path) -> Path:
    import cv2

    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    for _, name, w, h, grey in IMAGES:
        cv2.imwrite(str(root / "images" / "val" / name), np.full((h, w, 3), grey, np.uint8))
    gt = {
        "info": {"description": "written by hand for tests/test_eval_independent.py"},
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h, _ in IMAGES],
        "annotations": [
            {"id": 100 + k, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": 0}
            for k, (i, c, b, a) in enumerate(ANNOTATIONS)
        ],
        "categories": CATEGORIES,
    }
    (root / "annotations" / "instances_val.json").write_text(json.dumps(gt))
    results = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in DETECTIONS]
    (root / "detections.json").write_text(json.dumps(results))
    return root


class _StandIn(nn.Module):
    """Returns the hand-written detections of the image it recognises, as decoded YOLO output
    ``[B, N, 5 + nc]`` (cx, cy, w, h in letterboxed input pixels, objectness 1, class probability = score)."""

    def __init__(self, class_of_category: dict[int, int]) -> None:
        super().__init__()
        self.by_grey = {grey: (image_id, w, h) for image_id, _, w, h, grey in IMAGES}
        self.class_of_category = class_of_category
        self.nc = len(class_of_category)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        out = torch.zeros(batch, len(DETECTIONS), 5 + self.nc)
        for j in range(batch):
            grey = round(float(x[j, 0, height // 2, width // 2]) * 255)
            image_id, w0, h0 = self.by_grey[grey]
            # images are at most img_size on their long side: no resize, only centred padding (even amounts)
            pad_w, pad_h = (width - w0) / 2, (height - h0) / 2
            rows = [d for d in DETECTIONS if d[0] == image_id]
            for k, (_, cat, (bx, by, bw, bh), score) in enumerate(rows):
                out[j, k, :4] = torch.tensor([bx + bw / 2 + pad_w, by + bh / 2 + pad_h, bw, bh])
                out[j, k, 4] = 1.0
                out[j, k, 5 + self.class_of_category[cat]] = score
        return out


def _pycocotools(root: Path, cat_ids: list[int] | None = None) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "annotations" / "instances_val.json"))
        ev = COCOeval(gt, gt.loadRes(str(root / "detections.json")), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.fixture(scope="module")
def hand_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("hand_coco"))


def test_reference_numbers_are_not_trivial(hand_dataset: Path) -> None:
    stats = _pycocotools(hand_dataset)
    # the file exercises every size range and neither a perfect nor an empty result
    assert 0.3 < stats[0] < 0.9 and stats[1] > stats[0]
    assert all(s > 0 for s in stats[3:6])  # APs, APm, APl all defined and non-zero


@pytest.mark.parametrize("checked", [False, True], ids=["as-loaded", "as-training-loads-it"])
def test_evaluate_equals_pycocotools_on_a_hand_written_coco_file(hand_dataset: Path, checked: bool) -> None:
    from core.data.check import check_dataset
    from core.data.io_coco import to_coco_dict
    from core.data.load import load_dataset
    from core.eval import evaluate

    dataset = load_dataset(hand_dataset)
    if checked:  # the trainer's path: core.train.setup.prepare_dataset
        dataset = check_dataset(dataset, decode=True).dataset
    assert list(dataset.class_names) == ["cat", "dog", "bird"]  # category ids 3, 7, 12 in id order
    class_of_category = {3: 0, 7: 1, 12: 2}
    result = evaluate(_StandIn(class_of_category), dataset, "val", img_size=128, batch_size=2, device="cpu")
    assert result.num_images == 5 and result.num_boxes == 11

    reference = _pycocotools(hand_dataset)
    ours = np.array(list(result.coco.stats.values()))
    assert ours == pytest.approx(reference, abs=1e-12)
    for cat_id, name in ((3, "cat"), (7, "dog"), (12, "bird")):
        assert result.coco.per_class_ap[name] == pytest.approx(_pycocotools(hand_dataset, [cat_id])[0], abs=1e-12)
        assert result.coco.per_class_ap50[name] == pytest.approx(_pycocotools(hand_dataset, [cat_id])[1], abs=1e-12)

    # the exported results are the hand-written boxes and scores, back in original pixels (under our ids, which
    # the ground truth we evaluate against maps back to file names and category names)
    ours_gt = to_coco_dict(dataset, "val")
    file_of_image = {im["id"]: im["file_name"] for im in ours_gt["images"]}
    name_of_category = {c["id"]: c["name"] for c in ours_gt["categories"]}
    id_of_file = {name: image_id for image_id, name, *_ in IMAGES}
    id_of_name = {c["name"]: c["id"] for c in CATEGORIES}
    exported = sorted(
        (
            id_of_file[file_of_image[d["image_id"]]],
            id_of_name[name_of_category[d["category_id"]]],
            *d["bbox"],
            d["score"],
        )
        for d in result.detections
    )
    assert exported == sorted((i, c, *b, s) for i, c, b, s in DETECTIONS)
