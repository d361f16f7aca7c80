"""Evaluation: pycocotools numbers, equality with pycocotools run directly on the exported JSON, curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.eval.coco_eval import evaluate_coco
from core.eval.matching import ConfusionMatrix, match_image, pr_curves


def _gt() -> dict:
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 9):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 320, "height": 240})
        for _ in range(rng.integers(1, 6)):
            x, y = rng.uniform(0, 250), rng.uniform(0, 180)
            w, h = rng.uniform(8, 60), rng.uniform(8, 55)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": c, "name": n} for c, n in ((1, "a"), (2, "b"), (3, "c"))]
    return {"images": images, "annotations": anns, "categories": cats}


def _noisy_detections(gt: dict, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.85:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 2.5, 4)
            dets.append(
                {
                    "image_id": a["image_id"],
                    "category_id": a["category_id"],
                    "bbox": [x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)],
                    "score": float(rng.uniform(0.3, 1)),
                }
            )
    for i in range(1, 9):  # false positives
        dets.append({"image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.2})
    return dets


def test_metrics_equal_pycocotools_run_directly(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = _gt(), _noisy_detections(_gt())
    ours = evaluate_coco(gt, dets)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    coco = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert list(ours.stats.values()) == pytest.approx(list(ev.stats), abs=1e-12)
    assert 0.3 < ours.map < 0.95 and ours.map50 > ours.map
    assert set(ours.per_class_ap) == {"a", "b", "c"}
    # per-class AP50-95 averages to the overall AP (all classes present)
    assert np.mean(list(ours.per_class_ap.values())) == pytest.approx(ours.map, abs=1e-9)


def test_perfect_and_empty_predictions() -> None:
    gt = _gt()
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    assert evaluate_coco(gt, perfect).map == pytest.approx(1.0)
    assert evaluate_coco(gt, []).map == 0.0


def test_matching_curves_and_confusion() -> None:
    gt_boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 40, 40.0]])
    gt_cls = torch.tensor([0, 1])
    det = torch.tensor(
        [[0, 0, 10, 10, 0.9, 0], [21, 21, 40, 40, 0.8, 1], [0, 0, 10, 10, 0.7, 0], [50, 50, 60, 60, 0.6, 1]]
    )
    correct = match_image(det, gt_boxes, gt_cls)
    assert correct[:, 0].tolist() == [True, True, False, False]  # duplicate and background are false positives
    assert correct[1].sum() < 10  # IoU 0.9: not correct at the strictest thresholds
    curves = pr_curves(correct.numpy(), det[:, 4].numpy(), det[:, 5].numpy(), gt_cls.numpy(), 2)
    assert curves.ap[:, 0].tolist() == pytest.approx([1.0, 1.0])
    cm = ConfusionMatrix(2, conf=0.25, iou=0.45)
    cm.update(det, gt_boxes, gt_cls)
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]


def test_evaluate_reports_progress_to_a_callback(tmp_path: Path) -> None:
    """``evaluate(progress=callback)``: increasing fractions in [0, 1], the last one 1.0; the tqdm switch works."""
    from core.data import check_dataset, load_dataset, make_demo_dataset
    from core.eval import evaluate
    from core.models import build_model

    data = make_demo_dataset(tmp_path / "demo", n_images=30, img_size=64, seed=1)
    dataset = check_dataset(load_dataset(data), decode=False).dataset
    assert len(dataset.split("val")) >= 3
    torch.manual_seed(0)
    model = build_model("yolov7-tiny", dataset.num_classes).eval()
    calls: list[tuple[float, str]] = []
    result = evaluate(
        model, dataset, "val", img_size=64, batch_size=1, fuse=False, progress=lambda f, m: calls.append((f, m))
    )
    fractions = [f for f, _ in calls]
    assert len(calls) >= len(dataset.split("val")) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b > a for a, b in zip(fractions, fractions[1:]))
    assert all(isinstance(m, str) and m for _, m in calls)
    again = evaluate(model, dataset, "val", img_size=64, batch_size=1, fuse=False, progress=True)
    assert again.coco.stats == result.coco.stats


def test_per_epoch_evaluation_iou_is_the_documented_choice() -> None:
    """FACTS 1e: official per-epoch 0.6 (test() default), test.py 0.65, final COCO 0.7. We evaluate every epoch,
    the final metrics and ``val`` at the test.py value so that the three agree (see core.eval.evaluator)."""
    from core.eval.evaluator import OFFICIAL_EPOCH_IOU, OFFICIAL_FINAL_COCO_IOU, VAL_NMS
    from core.train.config import TrainConfig

    assert (OFFICIAL_EPOCH_IOU, VAL_NMS.iou, OFFICIAL_FINAL_COCO_IOU) == (0.6, 0.65, 0.7)
    cfg = TrainConfig(data="x")
    assert (cfg.eval_conf, cfg.eval_iou) == (VAL_NMS.conf, VAL_NMS.iou)
