"""ONNX export of the fused deploy form, run in onnxruntime and compared with PyTorch (with and without NMS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra")
pytest.importorskip("onnxruntime", reason="ONNX export checks need the 'export' extra")

from core.checkpoint.io import save_checkpoint  # noqa: E402
from core.cli import main  # noqa: E402
from core.conformance.forward import load_reference_weights  # noqa: E402
from core.export import export_onnx, onnx_session, verify_onnx  # noqa: E402
from core.inference import probe_image, well_conditioned_  # noqa: E402
from core.models import build_model, get_spec, reparameterize, scale_width  # noqa: E402
from core.nms import NmsConfig, non_max_suppression  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    m = build_model(scale_width(get_spec("yolov7"), 0.125), 6, class_names=[f"c{i}" for i in range(6)])
    return well_conditioned_(m, head_gain=1.0).eval()


def test_plain_export_matches_pytorch(model: torch.nn.Module, tmp_path: Path) -> None:
    path = export_onnx(model, tmp_path / "m.onnx", img_size=96)
    session = onnx_session(path)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["names"]) == [f"c{i}" for i in range(6)] and json.loads(meta["img_size"]) == [96, 96]
    x = probe_image(96, seed=4)
    (out,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = reparameterize(model)(x)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out[..., :4], ref[..., :4].numpy(), rtol=0, atol=1e-2)
    np.testing.assert_allclose(out[..., 4:], ref[..., 4:].numpy(), rtol=0, atol=1e-4)
    # the graph is the fused deploy form: no BatchNorm, one conv per RepConv
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops


@pytest.mark.parametrize(
    "cfg",
    [
        NmsConfig(conf=0.25, iou=0.45),
        NmsConfig(conf=0.01, iou=0.65, multi_label=True, max_det=100),
        NmsConfig(conf=0.2, iou=0.5, agnostic=True, classes=(0, 2, 5)),
    ],
    ids=["detect", "multi-label", "agnostic-classes"],
)
def test_dynamic_export_with_nms_gives_the_same_detections(
    model: torch.nn.Module, tmp_path: Path, cfg: NmsConfig
) -> None:
    path = export_onnx(model, tmp_path / "nms.onnx", img_size=64, dynamic=True, nms=cfg)
    inputs = [probe_image(64, seed=1), probe_image((96, 128), batch=2, seed=2)]
    check = verify_onnx(path, model, nms=cfg, inputs=inputs)
    assert check.passed, check.to_text()
    assert len(check.detections) == 3 and sum(check.detections) > 0
    num, dets = onnx_session(path).run(None, {"images": inputs[1].numpy()})
    assert num.dtype == np.int64 and dets.shape == (2, cfg.max_det, 6)
    assert (dets[0, num[0] :] == 0).all()  # padding rows are zero


def test_nms_export_on_conformance_weights_equals_official_detections(tmp_path: Path) -> None:
    data = np.load(shared_path("yolov7", "conformance", "tiny_forward_kaiming.npz"))
    model = build_model("yolov7-tiny", 80)
    model.load_state_dict(load_reference_weights(data), strict=True)
    cfg = NmsConfig(conf=0.25, iou=0.45)
    path = export_onnx(model.eval(), tmp_path / "tiny.onnx", img_size=320, nms=cfg)
    x = torch.from_numpy(np.array(data["input"]))
    num, dets = onnx_session(path).run(None, {"images": x.numpy()})
    ref = data["nms_conf0.25_iou0.45_fused"]
    got = dets[0, : num[0]]
    assert got.shape == ref.shape and np.array_equal(got[:, 5], ref[:, 5])
    np.testing.assert_allclose(got[:, :4], ref[:, :4], rtol=0, atol=1e-2)
    np.testing.assert_allclose(got[:, 4], ref[:, 4], rtol=0, atol=1e-5)
    with torch.no_grad():
        ours = non_max_suppression(reparameterize(model)(x), 0.25, 0.45)[0].numpy()
    np.testing.assert_allclose(got, ours, rtol=0, atol=1e-2)


def test_single_class_fixed_batch_export(tmp_path: Path) -> None:
    one = well_conditioned_(build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 1), head_gain=1.0).eval()
    cfg = NmsConfig(conf=0.2)
    path = export_onnx(one, tmp_path / "one.onnx", img_size=64, batch=2, nms=cfg)
    check = verify_onnx(path, one, nms=cfg)  # default input: the file's fixed batch of 2
    assert check.passed and len(check.detections) == 2, check.to_text()


def test_export_cli(model: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "m.pt"
    save_checkpoint(weights, model)
    out = tmp_path / "m.onnx"
    assert main(["export", str(weights), "--format", "onnx", "--img", "64", "--nms", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "PASSED" in text and "detections" in text
    assert main(["export", str(weights), "--img", "64", "--dynamic"]) == 0
    assert weights.with_suffix(".onnx").is_file()
    assert main(["export", str(weights), "--img", "70"]) == 1  # not a multiple of the stride
    assert "multiple" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_export_cli_int8_is_gated_on_map_and_openvino_ir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from core.data.demo import ensure_demo_dataset

    data = ensure_demo_dataset(tmp_path / "demo", n_images=20, img_size=64, seed=0)
    from core.data.load import load_dataset

    names = list(load_dataset(data).class_names)
    model = well_conditioned_(build_model(scale_width(get_spec("yolov7-tiny"), 0.125), len(names), class_names=names))
    weights = tmp_path / "m.pt"
    save_checkpoint(weights, model.eval())
    out = tmp_path / "m_int8.onnx"
    args = ["export", str(weights), "--img", "64", "--int8", "--data", str(data), "--calib", "8", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "calibrating on 8 training images" in text and "mAP50-95 in onnxruntime: fp32" in text
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ int8
    (x,) = onnx_session(out).run(None, {"images": probe_image((64, 96), 2).numpy()})  # dynamic shapes
    assert x.shape[0] == 2 and np.isfinite(x).all()
    # a drop larger than allowed: not offered, nothing written
    rejected = tmp_path / "rejected.onnx"
    assert main([*args[:-1], str(rejected), "--max-drop", "-1"]) == 1
    assert not rejected.exists() and "int8 not offered" in capsys.readouterr().err
    assert main(["export", str(weights), "--int8"]) == 2  # no --data
    assert "--int8 needs --data" in capsys.readouterr().err
    pytest.importorskip("openvino", reason="the OpenVINO IR needs the 'openvino' extra")
    xml = tmp_path / "m.xml"
    assert main(["export", str(weights), "--format", "openvino", "--img", "64", "--dynamic", "--out", str(xml)]) == 0
    text = capsys.readouterr().out
    assert xml.is_file() and xml.with_suffix(".bin").is_file() and "openvino check" in text and "PASSED" in text
