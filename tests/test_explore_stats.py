"""Assignment explorer, dataset level and label files: per-box counts equal the single-image explorer's, the group
summaries are their means/shares, figures and files are written; label files fail loudly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import check_dataset, load_dataset, make_demo_dataset
from core.explore import (
    SIZE_BUCKETS,
    STATS_FIGURES,
    LabelError,
    assignment_stats,
    explore_image,
    read_labels,
    save_stats,
    size_bucket,
)
from core.models import build_model, get_spec, scale_width

IMG = 96


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=10, img_size=96)
    return check_dataset(load_dataset(data), decode=False).dataset


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(1)
    return build_model(scale_width(get_spec("yolov7-tiny"), 0.125), dataset.num_classes, aux=True,
                       class_names=list(dataset.class_names))  # fmt: skip


@pytest.fixture(scope="module")
def stats(model, dataset):
    return assignment_stats(model, dataset, "all", img_size=IMG, batch_size=1)


def test_per_box_counts_are_the_explorers(stats, model, dataset):
    records = [r for r in dataset.split("all") if r.num_boxes]
    assert stats.boxes == sum(r.num_boxes for r in records) and stats.images == len(dataset.images)
    rows = iter(stats.per_box)
    for rec in records[:3]:
        exp = explore_image(model, rec.path, rec.boxes, rec.classes, img_size=IMG)
        for b in exp.view.boxes:
            row = next(rows)
            assert (row.image, row.index, row.cls) == (rec.key, b.index, int(rec.classes[b.index]))
            assert row.fine_per_level == [len(lv.positives) for lv in b.fine.levels]
            assert row.coarse_per_level == [len(lv.positives) for lv in b.coarse.levels]
            assert (row.fine_k, row.coarse_k) == (b.fine.dynamic_k, b.coarse.dynamic_k)
            x1, y1, x2, y2 = exp.boxes_input[b.index]
            assert row.size == size_bucket((x2 - x1) * (y2 - y1))


def test_group_summaries(stats):
    def check(group, rows):
        assert group.boxes == len(rows)
        if not rows:
            assert group.fine_mean is None and group.fine_level_share == [0.0] * 3
            return
        fine = np.array([r.fine_per_level for r in rows])
        coarse = np.array([r.coarse_per_level for r in rows])
        assert group.fine_mean == pytest.approx(fine.sum(1).mean())
        assert group.coarse_mean == pytest.approx(coarse.sum(1).mean())
        assert group.fine_none_share == pytest.approx((fine.sum(1) == 0).mean())
        assert group.coarse_none_share == pytest.approx((coarse.sum(1) == 0).mean())
        np.testing.assert_allclose(group.fine_level_share, fine.sum(0) / fine.sum())
        np.testing.assert_allclose(group.coarse_level_share, coarse.sum(0) / coarse.sum())

    check(stats.overall, stats.per_box)
    assert [g.name for g in stats.by_class] == list(stats.class_names)
    for c, g in enumerate(stats.by_class):
        check(g, [r for r in stats.per_box if r.cls == c])
    assert [g.name for g in stats.by_size] == list(SIZE_BUCKETS)
    for g in stats.by_size:
        check(g, [r for r in stats.per_box if r.size == g.name])
    # the coarse set (5 cells, larger dynamic k) gives more positives per box than the fine set
    assert stats.overall.coarse_mean > stats.overall.fine_mean
    assert json.loads(stats.to_json())["overall"]["boxes"] == stats.boxes


def test_batched_run_and_files(model, dataset, stats, tmp_path):
    batched = assignment_stats(model, dataset, "all", img_size=IMG, batch_size=4, coarse=False)
    assert batched.topk == 10 and not batched.coarse and batched.overall.coarse_mean is None
    assert batched.boxes == stats.boxes
    figs = {name: make(stats) for name, make in STATS_FIGURES.items()}
    assert [t.name for t in figs["positives_per_box"].data][:2] == ["fine (lead head's labels)",
                                                                     "coarse (aux head's labels)"]  # fmt: skip
    assert list(figs["positives_per_box"].data[0].y) == pytest.approx([g.fine_mean for g in stats.by_class])
    assert list(figs["positives_per_box"].data[3].y) == pytest.approx(
        [g.coarse_mean for g in stats.by_size])  # fmt: skip
    files = save_stats(stats, tmp_path)
    assert json.loads(files.json.read_text())["boxes"] == stats.boxes and files.html.stat().st_size > 100_000
    if files.note and "no Chrome" in files.note:
        pytest.skip(files.note)
    assert files.note is None and len(files.pngs) == 3
    for p in files.pngs:
        arr = np.asarray(Image.open(p).convert("RGB"))
        assert arr.std() > 10 and len(np.unique(arr.reshape(-1, 3), axis=0)) > 50
    save_stats(batched, tmp_path / "fine_only", png=False)


def test_dataset_errors(model, dataset):
    with pytest.raises(ValueError, match="no images in split 'nope'"):
        assignment_stats(model, dataset, "nope", img_size=IMG)
    small = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 2)
    with pytest.raises(ValueError, match="model has 2 classes"):
        assignment_stats(small, dataset, "all", img_size=IMG)


# -- label files of one image ------------------------------------------------------------------------------------------
NAMES = ["cat", "dog"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yolo_labels(tmp_path):
    p = _write(tmp_path, "a.txt", "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.1\n\n")
    boxes, classes = read_labels(p, 200, 100, NAMES)
    np.testing.assert_allclose(boxes, [[80, 30, 120, 70], [40, 70, 60, 80]])
    assert classes.tolist() == [0, 1]
    assert read_labels(_write(tmp_path, "empty.txt", ""), 200, 100, NAMES)[0].shape == (0, 4)
    for text, match in (("0 0.5 0.5 0.2\n", "malformed row"), ("0 0.5 x 0.2 0.2\n", "malformed row"),
                        ("2 0.5 0.5 0.2 0.2\n", "unknown class"), ("0 50 50 20 20\n", "normalized")):  # fmt: skip
        with pytest.raises(LabelError, match=match):
            read_labels(_write(tmp_path, "bad.txt", text), 200, 100, NAMES)


def test_voc_labels(tmp_path):
    xml = ("<annotation><size><width>200</width><height>100</height></size>"
           "<object><name>dog</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>50</xmax><ymax>60</ymax></bndbox>"
           "</object></annotation>")  # fmt: skip
    boxes, classes = read_labels(_write(tmp_path, "a.xml", xml), 200, 100, NAMES)
    assert boxes.tolist() == [[10, 20, 50, 60]] and classes.tolist() == [1]
    with pytest.raises(LabelError, match="unknown class 'dog'"):
        read_labels(tmp_path / "a.xml", 200, 100, ["cat"])
    with pytest.raises(LabelError, match="200x100 image, the image is 300x100"):
        read_labels(tmp_path / "a.xml", 300, 100, NAMES)
    with pytest.raises(LabelError, match="not a Pascal VOC"):
        read_labels(_write(tmp_path, "b.xml", "<annotation><object>"), 200, 100, NAMES)
    with pytest.raises(LabelError, match="unsupported label file"):
        read_labels(_write(tmp_path, "c.json", "{}"), 200, 100, NAMES)
    with pytest.raises(LabelError, match="no such label file"):
        read_labels(tmp_path / "missing.txt", 200, 100, NAMES)


def test_progress_callback_and_the_callers_model_unchanged(model, dataset, stats):
    """``progress(fraction, message)``: 0 first, increasing, 1 last; the model keeps its mode and BN statistics."""
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[tuple[float, str]] = []
    again = assignment_stats(model, dataset, "all", img_size=IMG, batch_size=3,
                             progress=lambda f, m: calls.append((f, m)))  # fmt: skip
    with_boxes = sum(1 for r in dataset.split("all") if r.num_boxes)
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(calls) == 2 + (with_boxes - 1) // 3  # start, each batch but the last, end
    assert (
        all(isinstance(m, str) and m for _, m in calls)
        and calls[-1][1] == f"{with_boxes}/{with_boxes} images with boxes"
    )
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [r.fine_per_level for r in again.per_box] == [r.fine_per_level for r in stats.per_box]
