"""Training input pipeline: official letterbox/mosaic/perspective/HSV/flip rules, targets, determinism, counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import (
    HYP_PRESETS,
    Hyp,
    YoloDataset,
    check_dataset,
    create_train_loader,
    create_val_loader,
    get_hyp,
    letterbox,
    load_dataset,
    make_demo_dataset,
    multi_scale_resize,
)
from core.data.augment import LabelCounts, Labels, augment_hsv, box_candidates, flip, mixup, random_perspective
from core.data.hyp import HYP_TINY, default_hyp_for
from core.data.loader import collate, multi_scale_size
from core.data.mosaic import load_mosaic, mosaic4, mosaic9

SIZE = 128


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=24, img_size=SIZE, seed=1).parent
    return check_dataset(load_dataset(root), decode=False).dataset


# ---------------------------------------------------------------- letterbox


@pytest.mark.parametrize(
    ("hw", "new", "kwargs", "out_hw", "ratio", "pad", "top_left"),
    [
        ((480, 640), 320, {}, (320, 320), 0.5, (0.0, 40.0), (40, 0)),
        ((61, 100), 64, {}, (64, 64), 0.64, (0.0, 12.5), (12, 0)),  # odd padding: 12 on top, 13 below
        ((16, 32), 64, {"scaleup": False}, (64, 64), 1.0, (16.0, 24.0), (24, 16)),
        ((512, 773), 320, {"auto": True}, (224, 320), 320 / 773, (0.0, 6.0), (6, 0)),  # horses.jpg at 320
    ],
)
def test_letterbox_official_rules(hw, new, kwargs, out_hw, ratio, pad, top_left) -> None:  # noqa: ANN001
    img = np.full((*hw, 3), 7, dtype=np.uint8)
    out, (rw, rh), (dw, dh) = letterbox(img, new, **kwargs)
    assert out.shape[:2] == out_hw
    assert rw == rh == pytest.approx(ratio)
    assert (dw, dh) == pytest.approx(pad)
    top, left = top_left
    assert (out[top, left] == 7).all() and (top == 0 or (out[top - 1, left] == 114).all())
    assert left == 0 or (out[top, left - 1] == 114).all()


# ---------------------------------------------------------------- augmentations


def test_random_perspective_scale_is_asymmetric() -> None:
    """scale 0.9 draws s in U(0.1, 2.0): a centred 40 px box becomes 40 s px."""
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    labels = Labels(np.array([[30.0, 30.0, 70.0, 70.0]]), np.array([0]))
    sizes = []
    for k in range(400):
        _, out, _, _ = random_perspective(img, labels, np.random.default_rng(k), translate=0.0, scale=0.9)
        sizes.append((out.boxes[0, 2] - out.boxes[0, 0]) / 40)
    s = np.array(sizes)
    assert s.min() >= 0.1 - 1e-9 and s.max() <= 2.0 + 1e-9
    assert s.max() > 1.9 and s.min() < 0.2
    assert s.mean() == pytest.approx(1.05, abs=0.08)  # centre of [0.1, 2.0], not 1.0


def test_box_candidates() -> None:
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 4], [0, 0, 10, 10]], float).T
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 100, 4], [0, 0, 3.5, 3.5]], float).T
    keep = box_candidates(before, after)
    # kept / w not > 2 / area 9% < 10% / aspect 25 > 20 / area 12.25% kept
    assert keep.tolist() == [True, False, False, False, True]
    assert box_candidates(before[:, 2:3], after[:, 2:3], area_thr=0.01).tolist() == [True]  # segments: 1%


def test_hsv_jitter_uses_the_official_luts() -> None:
    img = np.full((4, 4, 3), 128, dtype=np.uint8)  # grey: hue 0, saturation 0, value 128
    gains = (0.015, 0.7, 0.4)
    r = np.random.default_rng(5).uniform(-1, 1, 3) * gains + 1
    out = augment_hsv(img.copy(), np.random.default_rng(5), *gains)
    assert (out == int(np.clip(128 * r[2], 0, 255))).all()
    untouched = img.copy()
    assert augment_hsv(untouched, np.random.default_rng(5), 0, 0, 0) is untouched and (untouched == 128).all()


def test_flip_and_mixup() -> None:
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    img[:, :5] = 255
    labels = Labels(np.array([[0.0, 1.0, 5.0, 4.0]]), np.array([1]))
    f, fl = flip(img, labels, horizontal=True)
    assert (f[:, 15:] == 255).all() and fl.boxes.tolist() == [[15, 1, 20, 4]]
    f, fl = flip(img, labels, horizontal=False)
    assert fl.boxes.tolist() == [[0, 6, 5, 9]]
    a, b = np.full((2, 2, 3), 100, np.uint8), np.full((2, 2, 3), 200, np.uint8)
    m, ml = mixup(a, labels, b, Labels(np.array([[1.0, 1, 2, 2]]), np.array([0])), 0.25)
    assert (m == 175).all() and ml.classes.tolist() == [1, 0]


def _tiles(s: int, calls: list[int]):  # noqa: ANN202
    def load(i: int) -> tuple[np.ndarray, Labels]:
        calls.append(i)
        return np.full((s, s, 3), i % 250, np.uint8), Labels(np.array([[0.0, 0, s, s]]), np.array([i % 3]))

    return load


def test_mosaic4_layout_around_the_centre() -> None:
    s = 32
    canvas, labels, n_in = mosaic4(_tiles(s, []), [0, 1, 2, 3], s, np.random.default_rng(0))
    r = np.random.default_rng(0)
    yc, xc = int(r.uniform(s // 2, 2 * s - s // 2)), int(r.uniform(s // 2, 2 * s - s // 2))
    assert canvas.shape == (64, 64, 3) and n_in == 4
    expected = [[xc - s, yc - s, xc, yc], [xc, yc - s, xc + s, yc], [xc - s, yc, xc, yc + s], [xc, yc, xc + s, yc + s]]
    np.testing.assert_allclose(labels.boxes, np.clip(expected, 0, 2 * s))
    assert canvas[yc - 1, xc - 1, 0] == 0 and canvas[yc, xc, 0] == 3


def test_mosaic9_layout_and_crop() -> None:
    s = 32
    canvas, labels, n_in = mosaic9(_tiles(s, []), list(range(9)), s, np.random.default_rng(0))
    r = np.random.default_rng(0)
    yc, xc = int(r.uniform(0, s)), int(r.uniform(0, s))
    assert canvas.shape == (64, 64, 3) and n_in == 9
    origins = [(s, s), (s, 0), (2 * s, 0), (2 * s, s), (2 * s, 2 * s), (s, 2 * s), (0, 2 * s), (0, s), (0, 0)]
    expected = [[x - xc, y - yc, x - xc + s, y - yc + s] for x, y in origins]
    np.testing.assert_allclose(labels.boxes, np.clip(expected, 0, 2 * s))


def test_mosaic_9_is_used_one_time_in_five() -> None:
    calls: list[int] = []
    hyp = Hyp(translate=0.0, scale=0.0)
    nines = 0
    for k in range(400):
        calls.clear()
        load_mosaic(_tiles(16, calls), 0, 50, 16, hyp, np.random.default_rng(k), 0.2)
        assert len(calls) in (4, 9)
        nines += len(calls) == 9
    assert nines / 400 == pytest.approx(0.2, abs=0.05)


class _Counting(YoloDataset):
    def load(self, i):  # noqa: ANN001, ANN201
        self.calls += 1
        return super().load(i)


def test_mixup_blends_a_second_mosaic(demo) -> None:  # noqa: ANN001
    counts = []
    for p in (0.0, 1.0):
        ds = _Counting(demo.split("train"), SIZE, Hyp(mixup=p), seed=0)
        ds.calls = 0
        for i in range(20):
            ds[(i, 0)]
        counts.append(ds.calls / 20)
    assert 4 <= counts[0] <= 9 and 8 <= counts[1] <= 18 and counts[1] > 1.6 * counts[0]


# ---------------------------------------------------------------- samples, batches, loaders


def test_sample_and_batch_format(demo) -> None:  # noqa: ANN001
    ds = YoloDataset(demo.split("train"), SIZE, HYP_TINY, seed=0)
    samples = [ds[(i, 0)] for i in range(4)]
    batch = collate(samples)
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (4, 3, SIZE, SIZE)
    t = batch.targets
    assert t.dtype == torch.float32 and t.shape[1] == 6 and len(t) == sum(len(s.targets) for s in samples)
    assert sorted(set(t[:, 0].int().tolist())) <= [0, 1, 2, 3]
    assert ((t[:, 2:] >= 0) & (t[:, 2:] <= 1)).all()
    assert (t[:, 4:] * SIZE > 2).all()  # the box filter's 2 px minimum
    assert set(t[:, 1].int().tolist()) <= set(range(4))
    for s in samples:
        c = s.counts
        assert c.input == c.kept + c.cropped + c.filtered and c.kept == len(s.targets)
    assert batch.counts == sum((s.counts for s in samples), LabelCounts())


def test_images_are_rgb_chw(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "images").mkdir()
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :, 2] = 255  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "images" / "red.png"), img)
    ds = check_dataset(load_dataset(tmp_path), decode=False).dataset
    sample = YoloDataset(ds.images, 64, augment=False)[0]
    assert sample.image.shape == (3, 64, 64)
    assert sample.image[0, 32, 32] == 255 and sample.image[2, 32, 32] == 0


def test_val_mode_letterbox_and_rect_batches(bccd_root: Path) -> None:
    ds = check_dataset(load_dataset(bccd_root), decode=False).dataset
    loader = create_val_loader(ds, img_size=320, batch_size=4, workers=0)
    batch = next(iter(loader))
    assert batch.images.shape == (4, 3, 256, 352)  # official rect shape with pad 0.5 for 640x480
    (h0, w0), ((gh, gw), (pw, ph)) = batch.shapes[0]
    assert (h0, w0) == (480, 640) and (gh, gw) == (0.5, 0.5) and (pw, ph) == (16.0, 8.0)
    rec = ds.split("val")[int(batch.indices[0])]
    t = batch.targets[batch.targets[:, 0] == 0]
    x1 = (t[:, 2] - t[:, 4] / 2) * 352
    back = (x1 - pw) / gw
    np.testing.assert_allclose(np.sort(back.numpy()), np.sort(rec.boxes[:, 0]), atol=0.05)
    square = next(iter(create_val_loader(ds, img_size=320, batch_size=2, workers=0, rect=False)))
    assert square.images.shape == (2, 3, 320, 320) and square.counts.lost == 0


def test_loader_is_deterministic_across_workers_and_epochs(demo) -> None:  # noqa: ANN001
    def run(workers: int, seed: int, epochs: int = 2) -> list[list]:
        loader = create_train_loader(demo, img_size=SIZE, batch_size=4, hyp=HYP_TINY, workers=workers, seed=seed)
        out = []
        for _ in range(epochs):
            out.append([(b.images.clone(), b.targets.clone(), b.paths) for b in loader])
        return out, loader

    a, loader = run(0, seed=7)
    b, _ = run(2, seed=7)
    for ea, eb in zip(a, b):
        for (ia, ta, pa), (ib, tb, pb) in zip(ea, eb):
            assert pa == pb and torch.equal(ia, ib) and torch.equal(ta, tb)
    assert [p for *_, p in a[0]] != [p for *_, p in a[1]]  # next epoch, new order
    c, _ = run(0, seed=8, epochs=1)
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a[0], c[0]))
    assert loader.epoch == 1 and set(loader.history) == {0, 1}
    per_epoch = loader.label_counts(0)
    assert per_epoch.input == per_epoch.kept + per_epoch.lost and 0 < per_epoch.lost_share < 1
    loader.set_epoch(0)
    again = [(bt.images, bt.targets) for bt in loader]
    assert all(torch.equal(x[0], y[0]) for x, y in zip(again, [(i, t) for i, t, _ in a[0]]))


def test_ram_cache_gives_the_same_samples(demo) -> None:  # noqa: ANN001
    plain = YoloDataset(demo.split("train")[:6], SIZE, HYP_TINY, seed=3)
    cached = YoloDataset(demo.split("train")[:6], SIZE, HYP_TINY, seed=3, cache_images=True)
    assert plain.cache_bytes == 0 and cached.cache_bytes >= 6 * SIZE * SIZE * 3 // 2
    for i in range(6):
        assert torch.equal(plain[(i, 2)].image, cached[(i, 2)].image)


def test_multi_scale() -> None:
    import random

    rng = random.Random(0)
    sizes = {multi_scale_size(320, 32, rng) for _ in range(300)}
    assert min(sizes) == 160 and max(sizes) == 480 and all(s % 32 == 0 for s in sizes)
    x = torch.rand(2, 3, 256, 352)
    assert multi_scale_resize(x, 320, size=480).shape == (2, 3, 352, 480)
    assert multi_scale_resize(x, 320, size=352) is x


# ---------------------------------------------------------------- hyperparameters


def test_hyp_presets_are_the_official_tables(tmp_path: Path) -> None:
    p5, p6, tiny, custom = (HYP_PRESETS[k] for k in ("p5", "p6", "tiny", "custom"))
    assert (p5.lrf, p6.lrf, tiny.lrf, custom.lrf) == (0.1, 0.2, 0.01, 0.1)
    assert (p5.cls, tiny.cls, p5.obj, tiny.obj) == (0.3, 0.5, 0.7, 1.0)
    assert (p5.translate, tiny.translate, p5.scale, p6.scale, tiny.scale, custom.scale) == (
        0.2,
        0.1,
        0.9,
        0.9,
        0.5,
        0.5,
    )
    assert (p5.mixup, tiny.mixup, custom.mixup, p5.paste_in, tiny.paste_in, custom.paste_in) == (
        0.15, 0.05, 0.0, 0.15, 0.05, 0.0,
    )  # fmt: skip
    assert (p5.hsv_h, p5.hsv_s, p5.hsv_v, p5.fliplr, p5.flipud, p5.mosaic, p5.anchor_t) == (
        0.015, 0.7, 0.4, 0.5, 0.0, 1.0, 4.0,
    )  # fmt: skip
    assert (p5.lr0, p5.momentum, p5.weight_decay, p5.warmup_epochs, p5.box, p5.loss_ota) == (
        0.01, 0.937, 0.0005, 3.0, 0.05, 1,
    )  # fmt: skip
    path = tiny.to_yaml(tmp_path / "hyp.yaml")
    assert get_hyp(path) == tiny and get_hyp("hyp.scratch.tiny.yaml") == tiny and get_hyp("P6") == p6
    (tmp_path / "partial.yaml").write_text("mixup: 0.3\n")
    assert Hyp.from_yaml(tmp_path / "partial.yaml") == p5.replace(mixup=0.3)
    (tmp_path / "bad.yaml").write_text("mixup: 0.3\nmosaik: 1\n")
    with pytest.raises(ValueError, match="mosaik"):
        Hyp.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="not a preset"):
        get_hyp("p7")
    assert default_hyp_for("yolov7-tiny") == tiny and default_hyp_for("yolov7-e6e") == p6
    assert default_hyp_for("yolov7x") == p5


def test_polygons_give_tight_boxes_under_rotation() -> None:
    """With segments the warped box is the polygon's extent (official), not the rotated box's corners."""
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    circle = np.stack([50 + 20 * np.cos(t), 50 + 20 * np.sin(t)], axis=1)
    with_poly = Labels(np.array([[30.0, 30.0, 70.0, 70.0]]), np.array([0]), [circle])
    box_only = Labels(with_poly.boxes, with_poly.classes)
    widths_poly, widths_box = [], []
    for k in range(20):
        kw = {"degrees": 45.0, "translate": 0.0, "scale": 0.0}
        _, a, _, _ = random_perspective(img, with_poly, np.random.default_rng(k), **kw)
        _, b, _, _ = random_perspective(img, box_only, np.random.default_rng(k), **kw)
        widths_poly.append(a.boxes[0, 2] - a.boxes[0, 0])
        widths_box.append(b.boxes[0, 2] - b.boxes[0, 0])
        assert a.segments is not None and len(a.segments) == 1
    assert max(widths_poly) <= 44.5  # 40 px * s, s in U(1, 1.1)
    assert max(widths_box) > 50  # corners of a box rotated by up to 45 degrees


def test_polygon_dataset_through_the_training_pipeline(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), np.full((60, 80, 3), 40 * i, np.uint8))
        (tmp_path / "labels" / f"{i}.txt").write_text(
            "0 0.2 0.2 0.6 0.2 0.6 0.7 0.4 0.9 0.2 0.7\n1 0.5 0.5 0.9 0.5 0.7 0.9\n"
        )
    ds = check_dataset(load_dataset(tmp_path), decode=False).dataset
    assert all(r.segments is not None for r in ds.images)
    data = YoloDataset(ds.images, 64, Hyp(mixup=1.0), seed=0)
    for i in range(3):
        s = data[(i, 0)]
        assert s.image.shape == (3, 64, 64) and s.counts.input == s.counts.kept + s.counts.lost
        assert ((s.targets[:, 2:] >= 0) & (s.targets[:, 2:] <= 1)).all()


def test_sampler_shards_for_distributed_training() -> None:
    from core.data.loader import EpochSampler

    shards = []
    for rank in range(3):
        sampler = EpochSampler(10, shuffle=True, seed=1, num_replicas=3, rank=rank)
        sampler.set_epoch(4)
        shards.append([i for i, epoch in sampler if epoch == 4])
        assert len(sampler) == 4 == len(shards[-1])
    assert sorted(set(sum(shards, []))) == list(range(10))  # every image, 2 repeated to pad 10 -> 12
