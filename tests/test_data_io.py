"""Readers and writers: YOLO (boxes and polygon rows), COCO, VOC, format detection, zips, seeded splits."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.data import (
    check_dataset,
    detect_format,
    load_dataset,
    make_demo_dataset,
    to_coco_api,
    to_coco_dict,
    write_dataset,
)
from core.data.load import seeded_split, write_split_file


def _jpg(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=24, img_size=128, seed=3).parent


def test_yolo_boxes_to_pixels(tmp_path: Path) -> None:
    _jpg(tmp_path / "images" / "a.jpg", 64, 48)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n0 0.125 0.25 0.25 0.5\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    ds = load_dataset(tmp_path)
    assert ds.format == "yolo" and ds.class_names == ("cat", "dog")
    rec = ds.images[0]
    assert (rec.width, rec.height) == (64, 48)
    np.testing.assert_allclose(rec.boxes, [[24, 12, 40, 36], [0, 0, 16, 24]])
    assert rec.classes.tolist() == [1, 0]
    assert rec.segments is None


def test_yolo_polygon_rows_make_every_row_a_polygon(tmp_path: Path) -> None:
    """One row with > 8 values turns the whole file into polygons; boxes are the polygon extents."""
    _jpg(tmp_path / "images" / "a.jpg", 100, 50)
    (tmp_path / "labels").mkdir()
    rows = [
        "0 0.1 0.2 0.3 0.2 0.3 0.6 0.2 0.8 0.1 0.6",  # 5 points: polygon
        "1 0.5 0.5 0.9 0.5 0.7 0.9",  # 3 points: still a polygon in this file
    ]
    (tmp_path / "labels" / "a.txt").write_text("\n".join(rows) + "\n")
    rec = load_dataset(tmp_path).images[0]
    np.testing.assert_allclose(rec.boxes, [[10, 10, 30, 40], [50, 25, 90, 45]])
    assert rec.segments is not None and len(rec.segments) == 2
    np.testing.assert_allclose(rec.segments[1], [[50, 25], [90, 25], [70, 45]])


def test_yolo_data_yaml_splits_and_names_dict(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _jpg(tmp_path / "images" / split / f"{split}1.jpg")
        (tmp_path / "labels" / split).mkdir(parents=True)
        (tmp_path / "labels" / split / f"{split}1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: {0: thing}\n")
    ds = load_dataset(tmp_path / "data.yaml")
    assert ds.split_counts() == {"train": 1, "val": 1}
    assert ds.class_names == ("thing",) and ds.split_info.source == "dataset"


def test_coco_reader(tmp_path: Path) -> None:
    _jpg(tmp_path / "images" / "x.jpg", 80, 60)
    _jpg(tmp_path / "images" / "y.jpg", 80, 60, seed=1)
    coco = {
        "images": [
            {"id": 7, "file_name": "x.jpg", "width": 80, "height": 60},
            {"id": 9, "file_name": "y.jpg", "width": 80, "height": 60},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 30, 15], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {
                "id": 3,
                "image_id": 9,
                "category_id": 5,
                "bbox": [1, 2, 3, 4],
                "iscrowd": 0,
                "segmentation": [[1, 2, 4, 2, 4, 6]],
            },
        ],  # fmt: skip
        "categories": [{"id": 5, "name": "b"}, {"id": 3, "name": "a"}],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(coco))
    assert detect_format(tmp_path) == "coco"
    ds = load_dataset(tmp_path)
    assert ds.class_names == ("a", "b")  # category id order
    x, y = sorted(ds.images, key=lambda r: r.path.name)
    assert x.split == "val" and x.boxes.tolist() == [[10, 20, 40, 35]] and x.classes.tolist() == [0]
    assert y.segments is not None and y.classes.tolist() == [1]
    assert {i.kind for i in ds.issues} == {"crowd_annotation"}


def test_voc_reader_and_format_override(tmp_path: Path) -> None:
    _jpg(tmp_path / "JPEGImages" / "img1.jpg", 50, 40)
    (tmp_path / "Annotations").mkdir()
    xml = (
        "<annotation><filename>img1.jpg</filename><size><width>50</width><height>40</height></size>"
        "<object><name>cell</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>20.5</xmax><ymax>30</ymax></bndbox>"
        "</object></annotation>"
    )
    (tmp_path / "Annotations" / "img1.xml").write_text(xml)
    ds = load_dataset(tmp_path, format="voc")
    assert ds.images[0].boxes.tolist() == [[5, 6, 20.5, 30]]
    assert ds.class_names == ("cell",)
    with pytest.raises(FileNotFoundError, match="no data.yaml and no images/"):
        load_dataset(tmp_path, format="yolo")


def test_unknown_layout_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="format not recognised"):
        load_dataset(tmp_path)


def test_seeded_split_when_none_and_recorded(tmp_path: Path) -> None:
    for i in range(20):
        _jpg(tmp_path / "images" / f"{i:02d}.jpg", 32, 32, seed=i)
    (tmp_path / "labels").mkdir()
    ds = load_dataset(tmp_path, split_seed=5)
    assert ds.split_info.source == "seeded" and ds.split_info.seed == 5
    assert ds.split_counts() == {"train": 16, "val": 2, "test": 2}
    assert dict(ds.split_info.assignment) == {r.key: r.split for r in ds.images}
    assert load_dataset(tmp_path, split_seed=5).split_info.assignment == ds.split_info.assignment
    assert seeded_split([r.key for r in ds.images], seed=6) != dict(ds.split_info.assignment)
    saved = json.loads(write_split_file(ds, tmp_path / "split.json").read_text())
    assert saved["source"] == "seeded" and saved["splits"] == {r.key: r.split for r in ds.images}
    assert "seeded split (seed 5" in ds.split_info.describe()


def test_zip_of_a_dataset(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOV7_STUDIO_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "demo.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(demo.rglob("*")):
            if f.is_file():
                zf.write(f, Path("demo") / f.relative_to(demo))
    ds = load_dataset(archive)
    direct = load_dataset(demo)
    assert ds.format == "yolo" and len(ds.images) == len(direct.images) == 24
    assert ds.num_boxes == direct.num_boxes and ds.split_counts() == direct.split_counts()
    assert str(ds.root).startswith(str(tmp_path / "cache"))


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_write_then_read_each_format(demo: Path, tmp_path: Path, fmt: str) -> None:
    src = check_dataset(load_dataset(demo), decode=False).dataset
    write_dataset(src, fmt, tmp_path / fmt)
    back = load_dataset(tmp_path / fmt)
    assert back.format == fmt and back.class_names == src.class_names
    assert back.split_counts() == src.split_counts()
    a = {Path(r.key).name: r for r in src.images}
    b = {Path(r.key).name: r for r in back.images}
    assert a.keys() == b.keys()
    for key, rec in a.items():
        np.testing.assert_allclose(b[key].boxes, rec.boxes, atol=0.01)
        assert b[key].classes.tolist() == rec.classes.tolist()


def test_write_refuses_non_empty_folder(demo: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_dataset(load_dataset(demo), "coco", tmp_path / "out")


def test_to_coco_for_the_evaluator(demo: Path) -> None:
    ds = check_dataset(load_dataset(demo), decode=False).dataset
    val = ds.split("val")
    gt = to_coco_dict(ds, "val")
    assert [im["id"] for im in gt["images"]] == list(range(1, len(val) + 1))
    assert len(gt["annotations"]) == sum(r.num_boxes for r in val)
    assert all(a["id"] >= 1 and a["category_id"] >= 1 for a in gt["annotations"])
    rec, ann = val[0], next(a for a in gt["annotations"] if a["image_id"] == 1)
    x1, y1, x2, y2 = rec.boxes[0]
    assert ann["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1]) and ann["category_id"] == rec.classes[0] + 1
    coco = to_coco_api(ds, "val")
    assert len(coco.getImgIds()) == len(val) and len(coco.getCatIds()) == ds.num_classes


def test_dataset_definition_file(demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_HOME", str(demo.parent))
    (tmp_path / "d.yaml").write_text(f"path: $DEMO_HOME/{demo.name}\nformat: yolo\nnames: [cross, circle]\n")
    ds = load_dataset(tmp_path / "d.yaml")
    assert ds.format == "yolo" and ds.class_names == ("cross", "circle") and ds.source == tmp_path / "d.yaml"
    assert {i.kind for i in ds.issues} == {"unknown_class"}  # class ids 2 and 3 are outside a 2-class list
    (tmp_path / "missing.yaml").write_text("path: nowhere\nformat: voc\n")
    with pytest.raises(FileNotFoundError, match="edit 'path'"):
        load_dataset(tmp_path / "missing.yaml")


def test_shipped_bccd_definition(bccd_root: Path) -> None:
    definition = Path(__file__).resolve().parents[1] / "datasets" / "bccd.yaml"
    from core.data.load import read_definition

    target, fmt, names = read_definition(definition)
    if target != bccd_root.resolve():
        pytest.skip(f"datasets/bccd.yaml points at {target}, BCCD is at {bccd_root} here")
    ds = load_dataset(definition)
    assert fmt == "voc" and ds.class_names == ("RBC", "WBC", "Platelets") == tuple(names)
    assert len(ds.images) == 364
