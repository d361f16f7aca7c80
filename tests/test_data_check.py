"""Validation on generated bad inputs and on BCCD; statistics and the autoanchor best possible recall."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.data import check_dataset, load_dataset, report_to_dict, report_to_text
from core.data.anchors import anchor_fit, best_possible_recall, model_anchor_groups
from core.data.letterbox import read_bgr


def _jpg(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return path.read_bytes()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A YOLO dataset with one of every problem (64x48 images, classes a, b)."""
    img, lab = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    lab.mkdir(parents=True)
    good = _jpg(img / "good.jpg")
    (lab / "good.txt").write_text(
        "0 0.5 0.5 0.25 0.5\n"  # fine
        "1 0.5 0.5 0.0 0.5\n"  # degenerate (zero width)
        "0 1.5 1.5 0.1 0.1\n"  # entirely outside
        "1 0.95 0.5 0.2 0.2\n"  # reaches past the right border: clipped
        "7 0.5 0.5 0.1 0.1\n"  # unknown class
        "0 0.5 abc 0.1 0.1\n"  # malformed
        "0 0.5 0.5 0.25 0.5\n"  # duplicate of the first
    )
    (img / "corrupt.jpg").write_bytes(b"this is not a jpeg at all")
    (lab / "corrupt.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    _jpg(img / "cut.jpg", seed=1)
    data = (img / "cut.jpg").read_bytes()
    (img / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])  # truncated: header intact, data cut
    (lab / "cut.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (img / "copy.jpg").write_bytes(good)  # duplicate image
    (lab / "copy.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    _jpg(img / "nolabel.jpg", seed=2)  # image without labels
    _jpg(img / "empty.jpg", seed=3)
    (lab / "empty.txt").write_text("")  # empty image
    (lab / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # label without image
    (img / "notes.md").write_text("not an image")  # non-image file
    pil = Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    pil.save(img / "rotated.jpg", exif=exif)
    (lab / "rotated.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a, b]\n")
    return tmp_path


def test_every_problem_is_reported_with_file_and_reason(broken: Path) -> None:
    report = check_dataset(load_dataset(broken))
    counts = report.counts_by_kind()
    assert counts == {
        "box_clipped": 1,
        "box_outside_image": 1,
        "corrupt_image": 1,
        "degenerate_box": 1,
        "duplicate_box": 1,
        "duplicate_image": 1,
        "empty_image": 1,
        "exif_rotated": 1,
        "image_without_labels": 1,
        "label_without_image": 1,
        "malformed_row": 1,
        "non_image_file": 1,
        "unknown_class": 1,
        "unreadable_image": 1,
    }
    by_kind = {i.kind: i for i in report.issues}
    assert by_kind["unreadable_image"].file.endswith("corrupt.jpg")  # PIL cannot even identify it
    assert by_kind["corrupt_image"].file.endswith("cut.jpg") and "truncated" in by_kind["corrupt_image"].message
    assert by_kind["label_without_image"].file.endswith("orphan.txt")
    assert by_kind["non_image_file"].file.endswith("notes.md")
    assert by_kind["duplicate_image"].file.endswith("good.jpg") or by_kind["duplicate_image"].file.endswith("copy.jpg")
    assert by_kind["malformed_row"].file.endswith("good.txt") and "line 6" in by_kind["malformed_row"].message
    assert by_kind["unknown_class"].action == "dropped" and by_kind["box_clipped"].action == "clipped"
    # What is used: 6 images (good, copy, nolabel, empty, rotated, + none of corrupt/cut); good keeps 2 boxes.
    names = sorted(r.path.name for r in report.dataset.images)
    assert names == ["copy.jpg", "empty.jpg", "good.jpg", "nolabel.jpg", "rotated.jpg"]
    good = next(r for r in report.dataset.images if r.path.name == "good.jpg")
    np.testing.assert_allclose(good.boxes, [[24, 12, 40, 36], [54.4, 19.2, 64, 28.8]])
    assert report.left_out_images == 3  # corrupt, cut, orphan label
    # the boxes of corrupt.jpg, cut.jpg and orphan.txt are left out with their images: used + left out = read
    assert report.left_out_boxes == 8 and report.clipped_boxes == 1
    assert report.input_boxes == report.used_boxes + report.left_out_boxes
    assert report.used_boxes == 2 + 1 + 1
    text = report_to_text(report)
    assert "Will be used: 5 images, 4 boxes" in text and "Left out: 3 images, 8 boxes" in text
    assert "orphan.txt" in text and "notes.md" in text
    as_json = report_to_dict(report)
    assert as_json["summary"]["left_out_boxes"] == 8 and as_json["issue_counts"]["corrupt_image"] == 1


def test_exif_rotated_image_is_used_as_displayed(broken: Path) -> None:
    ds = load_dataset(broken)
    rec = next(r for r in ds.images if r.path.name == "rotated.jpg")
    assert (rec.width, rec.height) == (48, 64)  # stored 64x48, orientation 6
    assert read_bgr(rec.path).shape[:2] == (64, 48)  # what the training loader sees
    np.testing.assert_allclose(rec.boxes, [[12, 16, 36, 48]])


def test_nothing_crashes_on_garbage_annotations(tmp_path: Path) -> None:
    """Broken XML, non-numeric boxes and a JSON without images are reported, not raised."""
    _jpg(tmp_path / "JPEGImages" / "a.jpg")
    _jpg(tmp_path / "JPEGImages" / "b.jpg", seed=1)
    _jpg(tmp_path / "JPEGImages" / "c.jpg", seed=2)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object><name>x</name")
    (tmp_path / "Annotations" / "b.xml").write_text(
        "<annotation><object><name>x</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object><object><name>x</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
        "<ymax>9</ymax></bndbox></object></annotation>"
    )
    (tmp_path / "Annotations" / "z.xml").write_text("<annotation></annotation>")
    report = check_dataset(load_dataset(tmp_path))
    counts = report.counts_by_kind()
    assert counts["corrupt_annotation"] == 1 and counts["malformed_box"] == 1
    assert counts["label_without_image"] == 1 and counts["image_without_labels"] == 1  # z.xml; c.jpg
    # b.xml has an unreadable object: b.jpg is left out (its other box too), not trained on with an object missing
    assert counts["labels_unreadable"] == 1 and "<xmin> is 'a', not a number" in report_to_text(report)
    assert [r.path.name for r in report.dataset.images] == ["c.jpg"]
    assert report.left_out_boxes == 2 and report.input_boxes == report.used_boxes + report.left_out_boxes


def test_bccd_has_exactly_its_two_defective_boxes(bccd_root: Path) -> None:
    report = check_dataset(load_dataset(bccd_root))
    defective = report.defective_boxes
    assert len(defective) == 2
    assert sorted(Path(i.file).name for i in defective) == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert {i.kind for i in defective} == {"degenerate_box"}
    assert report.counts_by_kind() == {"degenerate_box": 2}
    assert (report.used_images, report.used_boxes, report.input_boxes) == (364, 4886, 4888)
    assert report.dataset.split_counts() == {"train": 205, "val": 87, "test": 72}
    st = report.stats
    assert st.boxes_per_class == {"Platelets": 361, "RBC": 4153, "WBC": 372}
    assert st.image_sizes == {"640x480": 364}
    assert all(f.bpr > 0.99 for f in st.anchor_fits)


def test_bpr_matches_the_official_metric() -> None:
    anchors = np.array([[10.0, 13.0], [16.0, 30.0]])
    wh = np.array([[10.0, 13.0], [40.0, 13.0], [64.0, 30.0], [2.0, 2.0]])
    fit = anchor_fit(wh, anchors)
    # box 2 vs anchor 0: r = (4, 1) -> min(r, 1/r) = (0.25, 1) -> 0.25
    assert fit[1, 0] == pytest.approx(0.25) and fit[0, 0] == pytest.approx(1.0)
    bpr, per_box = best_possible_recall(wh, anchors, anchor_t=4.0)
    # passes when best > 1/4: box0 yes, box1 (0.25, not >) vs anchor1: min(40/16=2.5->0.4, 13/30=0.433)=0.4 yes,
    # box2 vs anchor1: 64/16=4 -> 0.25 no; vs anchor0: 0.156 no; box3: 2/10=0.2 no.
    assert bpr == pytest.approx(2 / 4)
    assert per_box == pytest.approx((2 + 1 + 0 + 0) / 4)


def test_model_anchor_groups_use_the_model_zoo() -> None:
    groups = {g.names[0]: g for g in model_anchor_groups()}
    tiny = next(g for name, g in groups.items() if "tiny" in name)
    assert tiny.anchors[0] == ((10, 13), (16, 30), (33, 23)) and tiny.strides == (8, 16, 32)
    p6 = next(g for g in groups.values() if len(g.strides) == 4)
    assert p6.train_size == 1280 and p6.anchors[3][2] == (925, 792)
    assert set(p6.names) >= {"yolov7-w6", "yolov7-e6", "yolov7-d6", "yolov7-e6e"}


def test_anchor_fit_scales_images_to_the_training_size(tmp_path: Path) -> None:
    """A 32x32 box in a 320-px image is 64x64 at 640: it must be counted at that size."""
    _jpg(tmp_path / "images" / "a.jpg", 320, 160)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.2\n")
    report = check_dataset(load_dataset(tmp_path), decode=False)
    fit = next(f for f in report.stats.anchor_fits if f.train_size == 640 and "yolov7" in f.models)
    expected = best_possible_recall(np.array([[64.0, 64.0]]), np.asarray(
        [wh for level in fit.anchors for wh in level], dtype=float))  # fmt: skip
    assert (fit.bpr, fit.anchors_per_box) == pytest.approx(expected)
    assert sum(fit.best_level) == 1


def test_duplicate_folder_listing_is_reported_once(tmp_path: Path) -> None:
    _jpg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("train: images\nval: images\nnames: [x]\n")
    ds = load_dataset(tmp_path)
    assert [r.split for r in ds.images] == ["train"]
    assert Counter(i.kind for i in ds.issues) == {"duplicate_listing": 1}


def test_check_copes_with_a_deleted_image(tmp_path: Path) -> None:
    _jpg(tmp_path / "images" / "a.jpg")
    _jpg(tmp_path / "images" / "b.jpg", seed=1)
    ds = load_dataset(tmp_path)
    shutil.move(tmp_path / "images" / "b.jpg", tmp_path / "b.jpg")
    report = check_dataset(ds)
    assert report.counts_by_kind()["corrupt_image"] == 1 and report.used_images == 1
