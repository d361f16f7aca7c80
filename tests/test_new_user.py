"""What a new user trips over (issue 18): messages that say what was found and what is done, counts that add up,
per-image CSV exports, defaults taken from the data and the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint.io import save_checkpoint
from core.cli import main
from core.data.check import check_dataset
from core.data.files import exif_issue
from core.data.load import load_dataset
from core.data.report import report_to_text
from core.models import build_model, get_spec, scale_width

BOX = {"xmin": 5, "ymin": 5, "xmax": 30, "ymax": 30}


def _jpg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)


def _xml(path: Path, stem: str, objects: list[dict], size: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"<annotation><filename>{stem}.jpg</filename>"
    if size:
        text += "<size><width>64</width><height>48</height><depth>3</depth></size>"
    for obj in objects:
        fields = "".join(f"<{k}>{v}</{k}>" for k, v in obj.items())
        text += f"<object><name>cell</name><bndbox>{fields}</bndbox></object>"
    path.write_text(text + "</annotation>")


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    """``Images/`` + ``annotations/`` (mixed case), 3 boxes per image; im1 lacks an <xmax>, im2 lacks <size>,
    im3 is a truncated JPEG."""
    root = tmp_path / "ds"
    for k in range(6):
        _jpg(root / "Images" / f"im{k}.jpg", seed=k)
        objects = [BOX, {**BOX, "xmin": 10}, {**BOX, "ymin": 12}]
        if k == 1:
            objects = [BOX, {"xmin": 1, "ymin": 2, "ymax": 9}]
        _xml(root / "annotations" / f"im{k}.xml", f"im{k}", objects, size=k != 2)
    data = (root / "Images" / "im3.jpg").read_bytes()
    (root / "Images" / "im3.jpg").write_bytes(data[: len(data) * 2 // 3])
    return root


def test_annotation_folder_given_reads_the_images_beside_it(voc: Path) -> None:
    """`data check DIR/annotations` reads the dataset and says so, instead of advice that goes in a circle."""
    for given, fmt in ((voc / "annotations", None), (voc / "annotations", "voc"), (voc, None)):
        ds = load_dataset(given, format=fmt)
        assert ds.format == "voc" and len(ds.images) == 5, given  # im1 left out (unreadable object)
        if given != voc:
            note = next(i for i in ds.issues if i.kind == "layout_note")
            assert "no images" in note.message and "Images/" in note.message


def test_left_out_boxes_are_counted_with_their_image(voc: Path) -> None:
    report = check_dataset(load_dataset(voc))
    # im3 (truncated, 3 boxes) and im1 (1 unreadable + 1 readable box) are left out with their boxes
    assert (report.used_images, report.used_boxes) == (4, 12)
    assert (report.left_out_images, report.left_out_boxes) == (2, 5)
    assert report.input_boxes == report.used_boxes + report.left_out_boxes == 17
    text = report_to_text(report)
    assert "Left out: 2 images, 5 boxes (of 6 images and 17 boxes read)" in text
    assert "its 3 boxes are left out with it" in text


def test_missing_xmax_named_and_image_left_out_not_background(voc: Path) -> None:
    report = check_dataset(load_dataset(voc))
    by_kind = {i.kind: i for i in report.issues}
    assert "<xmax> missing" in by_kind["malformed_box"].message
    assert by_kind["labels_unreadable"].action.startswith("dropped") and "im1" in by_kind["labels_unreadable"].message
    assert "im1.jpg" not in {r.path.name for r in report.dataset.images}
    assert "empty_image" not in by_kind  # not kept as a background
    note = by_kind["missing_size"]
    assert note.file.endswith("im2.xml") and "real size" in note.message and "64x48" in note.message
    assert len(next(r for r in report.dataset.images if r.path.name == "im2.jpg").boxes) == 3


def test_empty_annotation_folder_and_empty_dataset_said_plainly(tmp_path: Path) -> None:
    root = tmp_path / "e"
    _jpg(root / "images" / "a.jpg")
    (root / "annotations").mkdir()
    ds = load_dataset(root)
    message = next(i.message for i in ds.issues if i.kind == "no_labels_found")
    assert "annotations/ is empty" in message
    text = report_to_text(check_dataset(ds, decode=False))
    assert "0 classes: none (no labelled box)" in text
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="the folder is empty"):
        load_dataset(tmp_path / "nothing")
    only_images = tmp_path / "flat"
    _jpg(only_images / "a.jpg")
    with pytest.raises(ValueError, match="1 images and no annotation files"):
        load_dataset(only_images)


def test_invalid_exif_orientation_is_said_invalid(tmp_path: Path) -> None:
    issue = exif_issue(tmp_path / "a.jpg", 65537)
    assert issue.kind == "exif_invalid" and "invalid" in issue.message and "not rotated" in issue.message
    assert "rotated" in exif_issue(tmp_path / "a.jpg", 6).message and exif_issue(tmp_path / "a.jpg", 6).kind == (
        "exif_rotated"
    )


def test_per_image_csv_export_is_read(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    for k in range(3):
        _jpg(root / "train" / f"im{k}.jpg", seed=k)
    _jpg(root / "valid" / "v0.jpg", seed=9)
    (root / "train" / "_annotations.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "im0.jpg,64,48,rbc,1,2,30,40\nim0.jpg,64,48,wbc,5,5,20,20\nim1.jpg,64,48,rbc,3,3,33,33\n"
        "im2.jpg,64,48,rbc,1,2,,40\n"
    )
    (root / "valid" / "_annotations.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n")
    ds = load_dataset(root)
    assert ds.format == "csv" and ds.class_names == ("rbc", "wbc")
    by_name = {r.path.name: r for r in ds.images}
    np.testing.assert_allclose(by_name["im0.jpg"].boxes, [[1, 2, 30, 40], [5, 5, 20, 20]])
    assert by_name["im0.jpg"].split == "train" and by_name["v0.jpg"].split == "val"
    assert "im2.jpg" not in by_name  # its row is unreadable: left out, not a background
    report = check_dataset(ds)
    assert report.input_boxes == report.used_boxes + report.left_out_boxes == 4
    assert "line 5 (im2.jpg): not a number: xmax ''" in report_to_text(report)


def test_other_csv_is_refused_naming_the_columns(tmp_path: Path) -> None:
    root = tmp_path / "other"
    _jpg(root / "a.jpg")
    (root / "boxes.csv").write_text("image,label,x,y,w,h\na.jpg,cat,1,2,3,4\n")
    with pytest.raises(ValueError) as err:
        load_dataset(root)
    message = str(err.value)
    assert "boxes.csv" in message and "image, label, x, y, w, h" in message
    assert "filename, width, height, class, xmin, ymin, xmax, ymax" in message
    with pytest.raises(ValueError, match="missing xmin, ymin, xmax, ymax"):
        load_dataset(root, format="csv")


def test_reparam_text_explains_a_pass_with_different_nms_and_points_to_no_file() -> None:
    from core.inference.deploy import NmsAgreement, ReparamCheck

    nms = NmsAgreement(0.001, 0.65, True, 300, 300, 290, False, 1e-3, 1e-6)
    check = ReparamCheck("yolov7-tiny", "training", (1, 3, 64, 64), 1e-6, 10.0, 1e-3, 1e-6, 64.0, 10, 9, [nms])
    text = check.to_text()
    assert check.passed and "PASSED" in text and "290 of 300 matched" in text
    assert "nearly equal scores" in text and "FACTS" not in text and "DIFFERENT" not in text


def test_assign_aux_keeps_the_checkpoint_class_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(np.full((64, 80, 3), 90, dtype=np.uint8)).save(image)
    torch.manual_seed(0)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 2, class_names=["rbc", "wbc"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    out = tmp_path / "out"
    rc = main(["assign", str(image), "--weights", str(ckpt), "--aux", "--img", "64", "--no-png", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "a_assignment.json").read_text())
    assert data["class_names"] == ["rbc", "wbc"]
