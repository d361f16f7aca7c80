"""One inverse letterbox mapping (letterboxed input pixels -> original pixels) for the predictor and for ``val``.

The letterbox shifts the pixels by the INTEGER padding ``round(d - 0.1)``; mapping back with the unrounded half pad
(the official ``scale_coords``, and our ``val`` before) puts boxes up to 0.5 input pixels off when the padding is
odd, so the same image gave different boxes through the predictor and through evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.letterbox import letterbox as data_letterbox
from core.data.letterbox import pad_offsets, unletterbox_boxes
from core.data.types import DetectionDataset, ImageRecord
from core.eval.evaluator import evaluate
from core.eval.evaluator import to_original as val_to_original
from core.inference import Predictor, letterbox_geometry, well_conditioned_
from core.models import build_model, get_spec, scale_width

NAMES = ["cat", "dog", "bird", "fish"]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))


def test_pad_offsets_are_where_letterbox_puts_the_pixels() -> None:
    img = np.full((101, 160, 3), 7, dtype=np.uint8)
    img[0, 0] = (255, 0, 0)  # the top-left original pixel
    for new_shape, half_pads in ((160, (0.0, 29.5)), ((160, 192), (16.0, 29.5)), ((128, 161), (0.5, 13.5))):
        out, _, (dw, dh) = data_letterbox(img, new_shape, auto=False, scaleup=False)
        assert (dw, dh) == half_pads
        left, top = pad_offsets(dw, dh)
        assert out[top, left].tolist() == [255, 0, 0]
        assert (top == 0 or out[top - 1, left].tolist() == [114] * 3) and (left == 0 or out[top, left - 1, 1] == 114)
    assert pad_offsets(29.5, 0.5) == (29, 0) and pad_offsets(14.0, 3.5) == (14, 3)


@pytest.mark.parametrize("as_numpy", [False, True])
def test_unletterbox_boxes_inverts_the_forward_mapping_and_keeps_extra_columns(as_numpy: bool) -> None:
    ratio, pad, shape = (0.8, 0.79), (3, 29), (101, 160)  # per-axis ratios (rounded sizes), (left, top)
    orig = np.array([[10.0, 20.0, 150.0, 90.0, 0.7, 2.0], [0.0, 0.0, 160.0, 101.0, 0.3, 1.0]])
    boxed = orig.copy()
    boxed[:, [0, 2]] = boxed[:, [0, 2]] * ratio[0] + pad[0]
    boxed[:, [1, 3]] = boxed[:, [1, 3]] * ratio[1] + pad[1]
    given = boxed if as_numpy else torch.from_numpy(boxed)
    back = unletterbox_boxes(given, ratio, pad, shape)
    assert type(back) is type(given) and back is not given
    np.testing.assert_allclose(np.asarray(back), orig, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(given), boxed)  # the input is not changed
    outside = unletterbox_boxes(np.array([[-50.0, -50.0, 500.0, 500.0]]), ratio, pad, shape)
    assert outside.tolist() == [[0.0, 0.0, 160.0, 101.0]]
    assert unletterbox_boxes(np.array([[-50.0, 0, 0, 0]]), ratio, pad, shape, clip=False)[0, 0] < 0


def test_val_and_predictor_mappings_agree_for_the_same_geometry() -> None:
    """The loader's ``shapes`` entry and the predictor's LetterboxInfo of one image map boxes identically."""
    h0, w0 = 101, 160
    img = _image(h0, w0)
    _, (rw, rh), (dw, dh) = data_letterbox(img, 160, auto=False, scaleup=False)
    shapes = ((h0, w0), ((1.0, 1.0), (dw, dh)))  # what the val pipeline records (no long-side resize at 160)
    info = letterbox_geometry((h0, w0), 160, auto=False)
    assert info.pad == pad_offsets(dw, dh) == (0, 29) and dh == 29.5
    det = torch.tensor([[20.0, 40.0, 100.0, 120.0, 0.9, 1.0], [0.0, 29.0, 160.0, 130.0, 0.5, 3.0]])
    via_val = val_to_original(det, shapes)
    via_predictor = info.to_original(det[:, :4])
    torch.testing.assert_close(via_val[:, :4], via_predictor, rtol=0, atol=0)
    torch.testing.assert_close(via_val[:, 4:], det[:, 4:])
    assert via_val[1, :4].tolist() == [0.0, 0.0, 160.0, 101.0]  # the image edges map to the original edges


def test_same_image_gives_the_same_boxes_through_val_and_the_predictor(tmp_path: Path) -> None:
    """An image whose letterbox has an odd vertical padding (101 px high at 160: 59 px, 29 above, 30 below),
    through ``evaluate`` (val loader, square input) and through the Predictor (square input): same boxes."""
    torch.manual_seed(0)
    model = well_conditioned_(build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 4, class_names=NAMES), 0, 1.0)
    model.eval()
    path = tmp_path / "odd.png"
    Image.fromarray(_image(101, 160, seed=3)).save(path)
    rec = ImageRecord(path, 160, 101, np.array([[20.0, 10.0, 90.0, 80.0]]), np.array([1]), "val", "odd")
    dataset = DetectionDataset(tmp_path, "yolo", tuple(NAMES), (rec,))
    from core.data.loader import create_val_loader

    loader = create_val_loader(dataset, 160, batch_size=1, workers=0, split="val", rect=False)
    result = evaluate(model, dataset, "val", img_size=160, loader=loader, fuse=True)
    val = sorted((d["bbox"], d["score"], d["category_id"] - 1) for d in result.detections)

    predictor = Predictor(model, device="cpu", img_size=160, rect=False, check=False, channels_last=False)
    [dets] = predictor(path, conf=0.001, iou=0.65, multi_label=True)
    pred = sorted((d["bbox"], d["score"], d["category_id"]) for d in dets.to_coco(1))
    assert len(val) == len(pred) > 10
    val_boxes = np.array([b for b, _, _ in val])
    pred_boxes = np.array([b for b, _, _ in pred])
    np.testing.assert_allclose(val_boxes, pred_boxes, atol=2e-3)  # COCO records round to 3 decimals
    assert [c for _, _, c in val] == [c for _, _, c in pred]
    np.testing.assert_allclose([s for _, s, _ in val], [s for _, s, _ in pred], atol=2e-5)
