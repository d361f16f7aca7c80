"""Conversion: BCCD round trip VOC -> COCO -> YOLO -> VOC keeps every box within 1 px and every class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.data import check_dataset, convert_dataset, load_dataset


def test_bccd_round_trip_voc_coco_yolo_voc(bccd_root: Path, tmp_path: Path) -> None:
    source = check_dataset(load_dataset(bccd_root), decode=False)
    assert source.left_out_boxes == 2  # the two degenerate boxes are not carried over; everything else is
    coco_dir, report = convert_dataset(bccd_root, "coco", tmp_path / "coco", decode=False)
    assert load_dataset(coco_dir).format == "coco"
    yolo_yaml, _ = convert_dataset(coco_dir, "yolo", tmp_path / "yolo", decode=False)
    assert load_dataset(yolo_yaml).format == "yolo"
    voc_dir, last = convert_dataset(yolo_yaml.parent, "voc", tmp_path / "voc", decode=False)
    assert last.counts_by_kind() == {}  # nothing to clean after the first step
    back = load_dataset(voc_dir)
    assert back.format == "voc"
    assert back.class_names == source.dataset.class_names
    assert back.split_counts() == {"train": 205, "val": 87, "test": 72}
    original = {r.path.stem: r for r in source.dataset.images}
    final = {r.path.stem: r for r in back.images}
    assert original.keys() == final.keys() and len(final) == 364
    worst = 0.0
    for stem, rec in original.items():
        got = final[stem]
        assert got.split == rec.split
        assert got.classes.tolist() == rec.classes.tolist(), stem
        assert (got.width, got.height) == (rec.width, rec.height)
        worst = max(worst, float(np.abs(got.boxes - rec.boxes).max()))
    assert worst <= 1.0
    assert worst < 0.01  # in fact exact up to the 6-decimal normalized YOLO rows
    assert back.num_boxes == source.used_boxes == 4886
