"""Predictor: letterbox rules, inputs of every kind, NMS options, mapping back to original pixels, detect CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint.io import save_checkpoint
from core.cli import main
from core.conformance.forward import load_reference_weights
from core.device import DeviceError, select_device
from core.inference import (
    ImageReadError,
    Predictor,
    draw_detections,
    letterbox,
    letterbox_geometry,
    load_inputs,
    read_image,
    well_conditioned_,
)
from core.models import build_model, get_spec, scale_width
from core.nms import NmsConfig
from tests.conftest import shared_path

NAMES = ["cat", "dog", "bird", "fish"]


def _model(name: str = "yolov7-tiny") -> torch.nn.Module:
    model = build_model(scale_width(get_spec(name), 0.125), len(NAMES), class_names=NAMES)
    return well_conditioned_(model, head_gain=1.0).eval()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(_model(), device="cpu", img_size=128, nms=NmsConfig(conf=0.3), batch_size=3)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))


# -- letterbox ----------------------------------------------------------------------------------------------------
def test_letterbox_geometry_follows_the_official_rules() -> None:
    # horses.jpg (773x512) at 320: FACTS.md 1e and the conformance README
    square = letterbox_geometry((512, 773), 320, auto=False, stride=32)
    assert square.shape == (320, 320) and square.resized == (212, 320) and square.pad == (0, 54)
    assert letterbox_geometry((512, 773), 320, auto=True, stride=32).shape == (224, 320)
    odd = letterbox_geometry((100, 150), 128, auto=False)  # resized 85x128, 43 px of padding split 21 / 22
    assert odd.resized == (85, 128) and odd.pad == (0, 21) and odd.shape == (128, 128)
    assert letterbox_geometry((50, 60), 128, auto=False, scaleup=False).resized == (50, 60)


def test_letterbox_pads_with_114_and_matches_the_conformance_input() -> None:
    data = np.load(shared_path("yolov7", "conformance", "tiny_forward_kaiming.npz"))
    ref = data["input_letterboxed_bgr_uint8"]
    assert (ref[:54] == 114).all() and (ref[266:] == 114).all() and not (ref[54:266] == 114).all()
    same, info = letterbox(ref, 320, auto=False)  # already letterboxed: nothing to do
    assert np.array_equal(same, ref) and info.pad == (0, 0)
    img = _image(100, 150)
    out, info = letterbox(img, 128, auto=False)
    assert out.shape == (128, 128, 3) and (out[:21] == 114).all() and (out[21 + 85 :] == 114).all()


def test_geometry_agrees_with_the_pixels_for_many_shapes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        size, auto, scaleup = int(rng.choice([64, 96, 128])), bool(rng.integers(2)), bool(rng.integers(2))
        img = np.zeros((h, w, 3), dtype=np.uint8)
        out, info = letterbox(img, size, auto=auto, scaleup=scaleup, stride=32)
        assert out.shape[:2] == info.shape
        left, top = info.pad
        content = (out != 114).any(axis=2)  # the black image inside the grey padding
        ys, xs = np.nonzero(content)
        assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (
            top,
            left,
            top + info.resized[0],
            left + info.resized[1],
        )


def test_to_original_is_the_exact_inverse_and_clips() -> None:
    info = letterbox_geometry((100, 150), 128, auto=True, stride=32)
    orig = torch.tensor([[10.0, 20.0, 60.0, 90.0], [0.0, 0.0, 150.0, 100.0]])
    rw, rh = info.ratio
    boxed = orig.clone()
    boxed[:, [0, 2]] = boxed[:, [0, 2]] * rw + info.pad[0]
    boxed[:, [1, 3]] = boxed[:, [1, 3]] * rh + info.pad[1]
    torch.testing.assert_close(info.to_original(boxed), orig)
    outside = torch.tensor([[-20.0, -5.0, 500.0, 300.0]])
    assert info.to_original(outside).tolist() == [[0.0, 0.0, 150.0, 100.0]]


# -- inputs -------------------------------------------------------------------------------------------------------
def test_every_kind_of_input_gives_the_same_result(predictor: Predictor, tmp_path: Path) -> None:
    img = _image(90, 120)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(_image(70, 50, seed=1)).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    by_array = predictor(img)[0]
    assert len(by_array) > 0
    for other in (predictor(Image.fromarray(img))[0], predictor(tmp_path / "a.png")[0], predictor(str(tmp_path))[0]):
        assert torch.equal(other.labels, by_array.labels)
        torch.testing.assert_close(other.boxes, by_array.boxes)
    assert [d.source for d in predictor(tmp_path)] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    batch = predictor(np.stack([img, img]))
    assert len(batch) == 2 and torch.equal(batch[1].labels, by_array.labels)


def test_batches_of_mixed_sizes_keep_order_and_equal_single_results(predictor: Predictor) -> None:
    images = [_image(90, 120, 0), _image(128, 64, 1), _image(90, 120, 2), _image(40, 40, 3), _image(90, 120, 4)]
    together = predictor(images)
    assert [d.image_size for d in together] == [im.shape[:2] for im in images]
    for im, det in zip(images, together):
        alone = predictor(im)[0]
        assert torch.equal(alone.labels, det.labels)
        torch.testing.assert_close(alone.boxes, det.boxes, rtol=0, atol=1e-3)
    for det, im in zip(together, images):
        h, w = im.shape[:2]
        assert (det.boxes[:, 0::2] >= 0).all() and (det.boxes[:, 0::2] <= w).all()
        assert (det.boxes[:, 1::2] >= 0).all() and (det.boxes[:, 1::2] <= h).all()
        assert det.names == [NAMES[i] for i in det.labels.tolist()]
        assert (det.scores[:-1] >= det.scores[1:]).all()


def test_nms_options(predictor: Predictor) -> None:
    img = _image(96, 128, 5)
    base = predictor(img, conf=0.2)[0]
    assert predictor(img, max_det=3)[0].labels.numel() == 3
    only = predictor(img, conf=0.2, classes=[1, 3])[0]
    assert set(only.labels.tolist()) <= {1, 3} and len(only) > 0
    assert len(predictor(img, conf=0.99)[0]) <= len(base)
    multi = predictor(img, conf=0.2, multi_label=True)[0]
    assert len(multi) >= len(base)
    agnostic = predictor(img, conf=0.2, agnostic=True)[0]
    assert len(agnostic) <= len(base)
    d = base.to_dict()
    assert set(d) == {"boxes", "scores", "labels"} and d["labels"].dtype == torch.int64


def test_predictor_equals_the_official_pipeline_on_conformance_weights() -> None:
    """Letterboxed conformance image in, the official fused model's NMS rows out (same rows, classes, boxes)."""
    data = np.load(shared_path("yolov7", "conformance", "tiny_forward_kaiming.npz"))
    model = build_model("yolov7-tiny", 80)
    model.load_state_dict(load_reference_weights(data), strict=True)
    pred = Predictor(model, device="cpu", img_size=320, rect=False)
    assert pred.deploy_check is not None and pred.deploy_check.passed
    rgb = np.ascontiguousarray(data["input_letterboxed_bgr_uint8"][:, :, ::-1])
    x, _ = pred.preprocess(load_inputs(rgb))
    assert torch.equal(x, torch.from_numpy(data["input"]))
    det = pred(rgb)[0]
    ref = torch.from_numpy(data["nms_conf0.25_iou0.45_fused"])
    assert len(det) == len(ref) == 300
    assert torch.equal(det.labels, ref[:, 5].long())
    torch.testing.assert_close(det.boxes, ref[:, :4].clamp(0, 320), rtol=0, atol=1e-2)
    torch.testing.assert_close(det.scores, ref[:, 4], rtol=0, atol=1e-5)


def test_bf16_precision_is_close_to_fp32() -> None:
    model = _model()
    fp32 = Predictor(model, device="cpu", img_size=128, check=False)
    bf16 = Predictor(model, device="cpu", img_size=128, check=False, precision="bf16")
    x = fp32.preprocess(load_inputs(_image(128, 128, 3)))[0]
    a, b = fp32.infer(x), bf16.infer(x)
    assert b.dtype == torch.float32
    assert float((a[..., 4:] - b[..., 4:]).abs().max()) < 0.05
    with pytest.raises(ValueError, match="fp16"):
        Predictor(model, device="cpu", precision="fp16", check=False)


def test_the_callers_model_is_left_alone() -> None:
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pred = Predictor(model, device="cpu", img_size=64, check=False)
    assert model.training and not model.deploy and pred.model is not model and pred.model.deploy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    kept = Predictor(model, device="cpu", img_size=64, deploy=False)
    assert kept.deploy_check is None and not kept.model.deploy and model.training


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.fromarray(_image(40, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg").shape == (80, 40, 3)


def test_bad_inputs_give_clear_errors(predictor: Predictor, tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        predictor(tmp_path / "broken.jpg")
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        predictor(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="folder contains no images"):
        predictor(tmp_path / "empty")
    with pytest.raises(ImageReadError, match="uint8"):
        predictor(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ImageReadError, match="shape"):
        predictor(np.zeros((10, 10, 5), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="unsupported type"):
        predictor([42])


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            select_device("cuda:0")


def test_draw_detections_marks_boxes(predictor: Predictor) -> None:
    img = np.full((120, 160, 3), 255, dtype=np.uint8)
    det = predictor(_image(120, 160))[0]
    det.boxes = torch.tensor([[20.0, 40.0, 100.0, 110.0]])
    det.scores, det.labels = torch.tensor([0.9]), torch.tensor([1])
    out = np.asarray(draw_detections(img, det))
    assert out.shape == img.shape and (out != 255).any(axis=2)[60, 20]  # the left edge of the box
    assert (out[5:35, 20:100] != 255).any()  # the tag above the box


# -- detect CLI ---------------------------------------------------------------------------------------------------
def test_detect_cli_writes_images_json_and_coco(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "m.pt"
    save_checkpoint(weights, _model())
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_image(90, 120)).save(src / "17.png")
    Image.fromarray(_image(60, 100, 1)).save(src / "photo.jpg")
    (src / "bad.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    code = main(["detect", "--weights", str(weights), str(src), "--out", str(out), "--img", "128", "--conf", "0.3"])
    captured = capsys.readouterr()
    assert code == 1 and "bad.png" in captured.err  # one unreadable image: reported, the others done
    assert (out / "17.png").is_file() and (out / "photo.jpg").is_file()
    record = json.loads((out / "17.json").read_text())
    assert record["width"] == 120 and record["height"] == 90 and record["image_id"] == 17
    first = record["detections"][0]
    assert set(first) == {"box_xyxy", "score", "label", "name"} and first["name"] in NAMES
    coco = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in coco} <= {17, 2} and len(coco) == sum(
        len(json.loads((out / f"{s}.json").read_text())["detections"]) for s in ("17", "photo")
    )
    x, y, w, h = coco[0]["bbox"]
    assert w >= 0 and h >= 0 and set(coco[0]) == {"image_id", "category_id", "bbox", "score"}
    images = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in images] == ["17.png", "photo.jpg"]


def test_detect_cli_bad_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["detect", "--weights", str(tmp_path / "nope.pt"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "nope.pt" in capsys.readouterr().err
