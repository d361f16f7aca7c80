"""Datasets as people publish them: VOC without JPEGImages/ImageSets, COCO JSON beside the images, labelling-tool
YOLO exports; a clear report when no labels are found; progress callbacks of load and check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import check_dataset, detect_format, load_dataset, report_to_text

BOXES = {"a": [(4, 6, 30, 40, "cat")], "b": [(10, 10, 50, 30, "dog"), (1, 2, 20, 22, "cat")], "c": []}


def _image(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _voc_xml(path: Path, filename: str, objects: list[tuple], w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
        "</bndbox></object>"
        for x1, y1, x2, y2, n in objects
    )
    path.write_text(
        f"<annotation><folder>images</folder><filename>{filename}</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


def _assert_labels(ds, names: tuple[str, ...] = ("cat", "dog")) -> None:
    assert ds.class_names == names
    by_stem = {r.path.stem: r for r in ds.images}
    assert set(by_stem) == {"a", "b", "c"}
    for stem, objects in BOXES.items():
        rec = by_stem[stem]
        np.testing.assert_allclose(rec.boxes, np.array([o[:4] for o in objects], dtype=float).reshape(-1, 4))
        assert [names[c] for c in rec.classes] == [o[4] for o in objects]


@pytest.mark.parametrize("ann_folder", ["annotations", "annots", "Annotations", "XML_labels"])
def test_voc_images_beside_a_folder_of_xml(tmp_path: Path, ann_folder: str) -> None:
    """images/ + annotations/ (or annots/, or any name; any case), no JPEGImages/ or ImageSets/: read as VOC."""
    root = tmp_path / "ds"
    for k, stem in enumerate(BOXES):
        _image(root / "images" / f"{stem}.jpg", seed=k)
        if BOXES[stem]:
            _voc_xml(root / ann_folder / f"{stem}.xml", f"{stem}.jpg", BOXES[stem])
    assert detect_format(root) == "voc"
    ds = load_dataset(root)
    assert ds.format == "voc"
    _assert_labels(ds)
    kinds = {i.kind for i in ds.issues}
    assert "no_labels_found" not in kinds and "label_without_image" not in kinds
    unlabelled = [i for i in ds.issues if i.kind == "image_without_labels"]
    assert [Path(i.file).name for i in unlabelled] == ["c.jpg"]
    report = check_dataset(ds, decode=False)
    assert report.used_boxes == 3 and "(VOC)" in report_to_text(report)


def test_voc_xml_beside_the_images_and_paired_by_filename(tmp_path: Path) -> None:
    """.xml files among the images; an .xml whose name differs from its image is paired by its <filename>."""
    root = tmp_path / "ds"
    PNG_NAMES = {"a": "a.png", "b": "b.png", "c": "c.png"}
    for k, stem in enumerate(BOXES):
        _image(root / PNG_NAMES[stem], seed=k)
    _voc_xml(root / "a.xml", "a.png", BOXES["a"])
    _voc_xml(root / "label_0002.xml", "b.png", BOXES["b"])  # another name: paired by <filename>
    ds = load_dataset(root)
    assert ds.format == "voc"
    _assert_labels(ds)
    assert not [i for i in ds.issues if i.kind in ("non_image_file", "label_without_image", "no_labels_found")]


def test_voc_split_subfolders_and_nested_root(tmp_path: Path) -> None:
    """images/train, images/val beside annots/train, annots/val, one level below the folder given."""
    root = tmp_path / "download" / "dataset"
    for split, stems in {"train": ["a", "b"], "val": ["c"]}.items():
        for k, stem in enumerate(stems):
            _image(root / "images" / split / f"{stem}.jpg", seed=k)
            _voc_xml(root / "annots" / split / f"{stem}.xml", f"{stem}.jpg", BOXES[stem] or [(1, 1, 9, 9, "cat")])
    ds = load_dataset(tmp_path / "download")
    assert ds.format == "voc" and ds.split_info.source == "dataset"
    assert ds.split_counts() == {"train": 2, "val": 1}
    assert ds.num_boxes == 4


def test_coco_json_beside_the_images(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, annotations = [], []
    for k, stem in enumerate(BOXES):
        _image(root / f"{stem}.jpg", seed=k)
        images.append({"id": 10 + k, "file_name": f"{stem}.jpg", "width": 64, "height": 48})
        for x1, y1, x2, y2, name in BOXES[stem]:
            cat = 1 if name == "cat" else 2
            ann = {"id": len(annotations) + 1, "image_id": 10 + k, "category_id": cat, "iscrowd": 0}
            ann.update(bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1))
            annotations.append(ann)
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    (root / "_annotations.coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    assert detect_format(root) == "coco"
    ds = load_dataset(root)
    _assert_labels(ds)
    assert "no_labels_found" not in {i.kind for i in ds.issues}


@pytest.mark.parametrize("names_file", ["classes.txt", "data.yaml", "obj.names"])
def test_labelling_tool_yolo_export(tmp_path: Path, names_file: str) -> None:
    """Label Studio / CVAT "YOLO" exports: images/ + labels/ + a class list (classes.txt, data.yaml or obj.names),
    with the tool's extra files (notes.json) beside them."""
    root = tmp_path / "export"
    for k, stem in enumerate(BOXES):
        _image(root / "images" / f"{stem}.jpg", seed=k)
        rows = [
            f"{['cat', 'dog'].index(n)} {(x1 + x2) / 128} {(y1 + y2) / 96} {(x2 - x1) / 64} {(y2 - y1) / 48}"
            for x1, y1, x2, y2, n in BOXES[stem]
        ]
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
    if names_file == "data.yaml":
        (root / "data.yaml").write_text("train: images\nval: images\nnc: 2\nnames: [cat, dog]\n")
    else:
        (root / names_file).write_text("cat\ndog\n")
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": 0, "name": "cat"}], "info": {}}))
    ds = load_dataset(root)
    assert ds.format == "yolo"
    _assert_labels(ds)


def test_cvat_yolo_1_1_export(tmp_path: Path) -> None:
    """CVAT "YOLO 1.1": obj.data, obj.names, train.txt listing data/obj_train_data/*.jpg, labels beside images."""
    root = tmp_path / "cvat"
    lines = []
    for k, stem in enumerate(BOXES):
        _image(root / "obj_train_data" / f"{stem}.jpg", seed=k)
        rows = [
            f"{['cat', 'dog'].index(n)} {(x1 + x2) / 128} {(y1 + y2) / 96} {(x2 - x1) / 64} {(y2 - y1) / 48}"
            for x1, y1, x2, y2, n in BOXES[stem]
        ]
        (root / "obj_train_data" / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
        lines.append(f"data/obj_train_data/{stem}.jpg")
    (root / "obj.names").write_text("cat\ndog\n")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset(root)
    assert ds.format == "yolo"
    _assert_labels(ds)
    assert not [i for i in ds.issues if i.kind in ("missing_image", "missing_split", "image_without_labels")]


def test_no_labels_found_says_what_was_tried_and_seen(tmp_path: Path) -> None:
    """Labels the readers cannot use (here: VOC .xml read as YOLO, CSV files): one issue lists the layouts tried and
    what is there, instead of every image silently becoming background."""
    root = tmp_path / "ds"
    for k, stem in enumerate(BOXES):
        _image(root / "images" / f"{stem}.jpg", seed=k)
        _voc_xml(root / "annotations" / f"{stem}.xml", f"{stem}.jpg", BOXES[stem])
    (root / "boxes.csv").write_text("file,x1,y1,x2,y2,label\na.jpg,4,6,30,40,cat\n")
    ds = load_dataset(root, format="yolo")
    found = [i for i in ds.issues if i.kind == "no_labels_found"]
    assert len(found) == 1
    message = found[0].message
    assert "3 .xml files in annotations/ look like Pascal VOC" in message
    assert ".csv files in the top folder" in message
    assert "YOLO" in message and "Try --format voc" in message
    text = report_to_text(check_dataset(ds, decode=False))
    assert text.index("no labelled box found") < text.index("Problems:")  # shown first, not buried
    # auto-detection on only images and CSV lists every layout it tried
    (root / "annotations").rename(tmp_path / "elsewhere")
    (root / "boxes.csv").write_text("id,value\n1,2\n")  # a CSV that is not a box export
    ds = load_dataset(root)
    message = next(i.message for i in ds.issues if i.kind == "no_labels_found")
    assert "Pascal VOC (" in message and "COCO (" in message and "YOLO (" in message and "boxes.csv" not in message
    assert ".csv files" in message


def test_labelled_dataset_has_no_no_labels_issue(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _image(root / "images" / "a.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert "no_labels_found" not in {i.kind for i in load_dataset(root).issues}


def _assert_progress(calls: list[tuple[float, str]]) -> None:
    assert len(calls) >= 3
    fractions = [f for f, _ in calls]
    assert all(b > a for a, b in zip(fractions, fractions[1:])), fractions
    assert fractions[0] >= 0.0 and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in calls)


@pytest.mark.parametrize("layout", ["voc", "yolo", "coco"])
def test_load_and_check_report_progress(tmp_path: Path, layout: str) -> None:
    from core.data import write_dataset

    root = tmp_path / "voc"
    for k in range(12):
        _image(root / "images" / f"im{k:02d}.jpg", seed=k)
        _voc_xml(root / "annotations" / f"im{k:02d}.xml", f"im{k:02d}.jpg", [(2, 2, 20 + k, 20, "cat")])
    source = root
    if layout != "voc":
        source = write_dataset(load_dataset(root), layout, tmp_path / layout)
    calls: list[tuple[float, str]] = []
    ds = load_dataset(source, progress=lambda f, m: calls.append((f, m)))
    assert len(ds.images) == 12
    _assert_progress(calls)
    calls.clear()
    report = check_dataset(ds, decode=True, progress=lambda f, m: calls.append((f, m)))
    assert report.used_boxes == 12
    _assert_progress(calls)
    check_dataset(ds, decode=True, progress=True)  # the tqdm switch still works
