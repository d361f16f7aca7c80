"""COCO crowd regions and stated areas: kept through import and evaluation (our numbers equal pycocotools run on the
ORIGINAL file), never trained on."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import check_dataset, load_dataset, to_coco_dict
from core.data.pipeline import YoloDataset
from core.eval.coco_eval import STAT_NAMES, evaluate_coco

# Original COCO file: non-contiguous ids, polygon areas that are not w*h, two crowd regions (RLE and polygon).
SIZES = {42: (200, 160), 7: (180, 150), 100: (160, 120)}
CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "person"}]


def _polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    """A diamond inside the box: its area is half the box's."""
    return [[x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]]


def _annotations() -> list[dict]:
    anns = []

    def add(image_id: int, cat: int, bbox: list[float], crowd: int = 0, seg: object = None) -> None:
        x, y, w, h = bbox
        segmentation = seg if seg is not None else _polygon(x, y, w, h)
        area = w * h / 2 if crowd == 0 else w * h * 0.7
        ann = {"id": 1000 + len(anns), "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd}
        ann.update(area=area, segmentation=segmentation)
        anns.append(ann)

    add(42, 7, [10, 10, 40, 60])  # box area 2400 (medium), stated area 1200 (medium)
    add(42, 7, [60, 20, 30, 40])  # box 1200 (medium), stated 600 (medium)
    add(42, 3, [100, 70, 90, 80])  # box 7200 (medium), stated 3600
    add(42, 7, [5, 100, 120, 55], crowd=1, seg={"counts": [0, 6600], "size": [160, 200]})  # crowd (RLE)
    add(7, 3, [20, 30, 100, 95])  # box 9500 (large), stated 4750 (medium): moves between APl and APm
    add(7, 7, [130, 10, 30, 30])  # box 900 (small), stated 450 (small)
    add(7, 7, [125, 60, 50, 80], crowd=1)  # crowd (polygon)
    add(100, 7, [70, 30, 80, 85], crowd=1)  # crowd listed before the image's objects
    add(100, 3, [10, 10, 44, 30])  # box 1320 (medium), stated 660 (small): moves between APm and APs
    add(100, 7, [80, 40, 60, 70])
    return anns


def _detections(anns: list[dict]) -> list[dict]:
    """Detections in the ORIGINAL ids: near-hits on the objects, several on the crowd regions, a few misses."""
    rng = np.random.default_rng(5)
    dets = []
    for ann in anns:
        x, y, w, h = ann["bbox"]
        copies = 3 if ann["iscrowd"] else 1
        for _ in range(copies):
            jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
            bbox = [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]]
            dets.append(
                {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": bbox, "score": rng.random()}
            )
    for image_id, (w, h) in SIZES.items():  # false positives
        for _ in range(2):
            x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            cat = int(rng.choice([3, 7]))
            dets.append({"image_id": image_id, "category_id": cat, "bbox": [x, y, 25.0, 20.0], "score": rng.random()})
    return dets


def _pycocotools_stats(gt_file: Path, dets: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_file))
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    images = []
    for k, (image_id, (w, h)) in enumerate(SIZES.items()):
        name = f"img_{image_id}.jpg"
        pixels = np.random.default_rng(k).integers(0, 255, (h, w, 3), dtype=np.uint8)
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "images" / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    content = {"images": images, "annotations": _annotations(), "categories": CATEGORIES}
    (tmp_path / "annotations").mkdir()
    gt_file = tmp_path / "annotations" / "instances_val.json"
    gt_file.write_text(json.dumps(content))  # written by hand, not by the code under test
    return gt_file


def _to_our_ids(dets: list[dict], dataset, split: str) -> list[dict]:
    """The same detections in our ids (image = position in the split + 1, category = class id + 1)."""
    records = dataset.split(split)
    by_name = {r.path.name: k + 1 for k, r in enumerate(records)}
    original = json.loads(Path(records[0].label_file).read_text())
    image_name = {im["id"]: im["file_name"] for im in original["images"]}
    cat_name = {c["id"]: c["name"] for c in original["categories"]}
    out = []
    for d in dets:
        ours = dict(d)
        ours["image_id"] = by_name[image_name[d["image_id"]]]
        ours["category_id"] = dataset.class_names.index(cat_name[d["category_id"]]) + 1
        out.append(ours)
    return out


def test_crowd_and_areas_are_kept_and_evaluation_equals_pycocotools_on_the_original(coco_file: Path) -> None:
    dets = _detections(_annotations())
    expected = _pycocotools_stats(coco_file, dets)
    dataset = check_dataset(load_dataset(coco_file.parent.parent), decode=False).dataset
    assert dataset.format == "coco" and dataset.split_names == ("val",)
    gt = to_coco_dict(dataset, "val")
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 3
    ours = evaluate_coco(gt, _to_our_ids(dets, dataset, "val"))
    assert [ours.stats[k] for k in STAT_NAMES] == pytest.approx(expected, abs=1e-12)
    # the crowd regions and the stated areas matter here: without them the numbers differ
    stripped = json.loads(coco_file.read_text())
    stripped["annotations"] = [a for a in stripped["annotations"] if not a["iscrowd"]]
    for a in stripped["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    stripped_file = coco_file.with_name("stripped.json")
    stripped_file.write_text(json.dumps(stripped))
    without = _pycocotools_stats(stripped_file, dets)
    differs = [k for k, a, b in zip(STAT_NAMES, expected, without) if abs(a - b) > 1e-6]
    assert {"AP", "APs", "APm", "APl"} <= set(differs)


def test_crowd_regions_are_never_trained_on(coco_file: Path) -> None:
    dataset = check_dataset(load_dataset(coco_file.parent.parent), decode=False).dataset
    records = {r.path.name: r for r in dataset.images}
    rec = records["img_42.jpg"]
    assert rec.num_boxes == 3 and len(rec.crowd_boxes) == 1
    np.testing.assert_allclose(rec.crowd_boxes, [[5, 100, 125, 155]])
    np.testing.assert_allclose(rec.areas, [1200, 600, 3600])
    assert dataset.num_boxes == 7  # statistics, anchors and training see the 7 non-crowd boxes only
    crowd_issue = next(i for i in load_dataset(coco_file).issues if i.kind == "crowd_annotation")
    assert crowd_issue.count == 3 and crowd_issue.action == "kept for evaluation only"
    train = YoloDataset(list(dataset.images), img_size=64, augment=False)
    for k, r in enumerate(dataset.images):
        sample = train[k]
        assert len(sample.targets) == r.num_boxes  # crowd regions are not among the training targets
        assert sorted(sample.targets[:, 1].tolist()) == sorted(r.classes.tolist())


def test_written_coco_keeps_crowd_and_areas(coco_file: Path, tmp_path: Path) -> None:
    from core.data import write_dataset

    dataset = load_dataset(coco_file)
    out = write_dataset(dataset, "coco", tmp_path / "out")
    again = load_dataset(out)
    a = to_coco_dict(dataset, "val")["annotations"]
    b = to_coco_dict(again, "val")["annotations"]
    assert [(x["iscrowd"], x["area"], x["bbox"]) for x in a] == [(x["iscrowd"], x["area"], x["bbox"]) for x in b]
