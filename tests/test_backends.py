"""Predictor backends: ONNX Runtime and OpenVINO give PyTorch's detections; the export cache; auto and fallbacks."""

from __future__ import annotations

import copy
import importlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx", reason="the runtime backends need the 'export' extra")
pytest.importorskip("onnxruntime", reason="the runtime backends need the 'export' extra")

from core.checkpoint.io import save_checkpoint  # noqa: E402
from core.cli import main  # noqa: E402
from core.inference import Predictor, probe_image, well_conditioned_  # noqa: E402
from core.inference import backends as B  # noqa: E402
from core.models import build_model, get_spec, scale_width  # noqa: E402
from core.nms import NmsConfig  # noqa: E402

NAMES = ["cat", "dog", "bird", "fish"]
SHAPES = [(90, 120), (128, 64), (100, 100), (40, 160)]
RUNTIMES = ["onnxruntime", "openvino"]


def _model(seed: int = 0) -> torch.nn.Module:
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), len(NAMES), class_names=NAMES)
    return well_conditioned_(model, seed=seed, head_gain=1.0).eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))


def _needs(backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino", reason="the OpenVINO backend needs the 'openvino' extra")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [_image(h, w, k) for k, (h, w) in enumerate(SHAPES)]


@pytest.fixture(scope="module")
def reference(model: torch.nn.Module, images: list[np.ndarray]) -> list:
    return list(Predictor(model, device="cpu", img_size=128, nms=NmsConfig(conf=0.3), batch_size=3)(images))


def _same_detections(got: list, want: list, img_size: int = 128) -> None:
    assert [len(d) for d in got] == [len(d) for d in want] and sum(len(d) for d in want) > 0
    for a, b in zip(got, want):
        h, w = b.image_size
        scale = max(h, w) / img_size  # 1e-2 network pixels in original pixels
        assert torch.equal(a.labels, b.labels)
        assert float((a.boxes - b.boxes).abs().max()) <= 1e-2 * max(scale, 1.0)
        assert float((a.scores - b.scores).abs().max()) <= 1e-4


@pytest.mark.parametrize("backend", RUNTIMES)
def test_runtime_backend_gives_the_torch_detections(
    backend: str, model: torch.nn.Module, cache: Path, images: list[np.ndarray], reference: list
) -> None:
    _needs(backend)
    predictor = Predictor(model, img_size=128, nms=NmsConfig(conf=0.3), batch_size=3, backend=backend, cache_dir=cache)
    assert predictor.backend == backend and predictor.device.type == "cpu"
    out = predictor(images)
    assert out.backend == backend and out.timing["images"] == len(images)
    _same_detections(list(out), reference)
    # per-call NMS overrides still apply (the runtime returns the decoded output, NMS stays ours)
    strict = predictor(images, conf=0.6, classes=[1])
    assert all(set(d.labels.tolist()) <= {1} and (d.scores > 0.6).all() for d in strict)
    clone = copy.deepcopy(predictor)  # e.g. a UI's per-session state: the session is opened again
    assert clone.backend == backend
    _same_detections(list(clone(images)), reference)
    record = json.loads(predictor.export_path.with_suffix(".json").read_text())
    assert record["checks"][backend]["passed"] and "PASSED" in record["checks"][backend]["text"]


def test_cache_is_keyed_by_checkpoint_content_and_never_stale(tmp_path: Path) -> None:
    weights, cache = tmp_path / "m.pt", tmp_path / "cache"
    save_checkpoint(weights, _model(seed=0))
    first = Predictor(weights, img_size=96, backend="onnxruntime", cache_dir=cache).export_path
    assert first is not None and first.is_file() and first.parent == cache / "onnx"
    mtime = first.stat().st_mtime_ns
    again = Predictor(weights, img_size=96, backend="onnxruntime", cache_dir=cache).export_path
    assert again == first and first.stat().st_mtime_ns == mtime  # same content: reused, not re-exported
    # same path, new content (a fine-tune overwrote best.pt): a new key, the old graph is not used
    save_checkpoint(weights, _model(seed=1))
    changed = Predictor(weights, img_size=96, backend="onnxruntime", cache_dir=cache)
    assert changed.export_path != first
    ref = Predictor(weights, device="cpu", img_size=96)
    x = probe_image(96, seed=3)
    np.testing.assert_allclose(changed.infer(x).numpy(), ref.infer(x).numpy(), atol=1e-2)
    # other size -> other key; a graph whose sidecar does not carry its key is rebuilt, never trusted
    assert Predictor(weights, img_size=64, backend="onnxruntime", cache_dir=cache).export_path != changed.export_path
    assert changed.export_path is not None
    sidecar = changed.export_path.with_suffix(".json")
    sidecar.write_text(json.dumps({"key": "something else", "checks": {"onnxruntime": {"passed": True}}}))
    changed.export_path.write_bytes(b"not an onnx file")
    rebuilt = Predictor(weights, img_size=96, backend="onnxruntime", cache_dir=cache)
    assert rebuilt.export_path == changed.export_path
    np.testing.assert_allclose(rebuilt.infer(x).numpy(), ref.infer(x).numpy(), atol=1e-2)


def test_cache_key_follows_content_not_identity(model: torch.nn.Module) -> None:
    twin = copy.deepcopy(model)
    assert B.cache_key(twin, 128) == B.cache_key(model, 128)
    assert B.cache_key(model, 128) != B.cache_key(model, 160)
    with torch.no_grad():
        next(twin.parameters()).view(-1)[0] += 1e-3
    assert B.cache_key(twin, 128) != B.cache_key(model, 128)


def test_cache_dir_default_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("YOLOV7_STUDIO_CACHE", str(tmp_path / "env"))
    assert B.cache_dir() == tmp_path / "env" and B.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("YOLOV7_STUDIO_CACHE")
    assert B.cache_dir() == Path.home() / ".cache" / "yolov7-studio"


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` fail to import in the backend selection, as if not installed."""
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> object:
        if name in modules:
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(B.importlib, "import_module", fake)


def test_auto_picks_the_first_installed_runtime_on_cpu(model: torch.nn.Module, cache: Path) -> None:
    want = next(b for b in B.CPU_PREFERENCE if B.missing_runtime(b) is None)
    predictor = Predictor(model, device="cpu", img_size=128, backend="auto", cache_dir=cache)
    assert predictor.backend == want and predictor.backend in B.BACKENDS
    assert B.resolve_backend("auto", torch.device("cuda")) == ("torch", [])  # CUDA: PyTorch, no runtime checked


@pytest.mark.parametrize(
    ("hidden", "expected"), [(("onnxruntime",), "openvino"), (("onnxruntime", "openvino"), "torch")], ids=["ort", "all"]
)
def test_auto_falls_back_when_a_runtime_is_missing(
    hidden: tuple[str, ...],
    expected: str,
    model: torch.nn.Module,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    images: list[np.ndarray],
    reference: list,
) -> None:
    _needs(expected)
    _hide(monkeypatch, *hidden)
    with caplog.at_level(logging.WARNING):
        predictor = Predictor(
            model, device="cpu", img_size=128, nms=NmsConfig(conf=0.3), backend="auto", cache_dir=cache
        )
    assert predictor.backend == expected
    assert any("onnxruntime is not installed" in note for note in predictor.backend_notes)
    if expected == "torch":
        assert "onnxruntime is not installed" in caplog.text
    out = predictor(images)
    assert out.backend == expected
    _same_detections(list(out), reference)


def test_explicit_missing_runtime_is_a_clear_error(
    model: torch.nn.Module, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide(monkeypatch, "openvino")
    with pytest.raises(B.BackendError, match=r"openvino.*pip install 'yolov7-studio\[openvino\]'"):
        Predictor(model, img_size=128, backend="openvino", cache_dir=cache)
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        Predictor(model, img_size=128, backend="tensorrt", cache_dir=cache)


def test_auto_skips_a_runtime_whose_graph_fails_its_check(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.export import OnnxCheck

    monkeypatch.setattr(B, "check_runner", lambda *a, **k: OnnxCheck([[1, 3, 8, 8]], max_box_px=9.0, passed=False))
    _hide(monkeypatch, "openvino")
    predictor = Predictor(model, device="cpu", img_size=128, backend="auto", cache_dir=tmp_path)
    assert predictor.backend == "torch" and any("failed its check" in n for n in predictor.backend_notes)
    with pytest.raises(B.BackendError, match="failed its check"):
        Predictor(model, img_size=128, backend="onnxruntime", cache_dir=tmp_path)


def test_backend_network_for_evaluation(model: torch.nn.Module, cache: Path) -> None:
    net, backend, _ = B.backend_network(model, "onnxruntime", torch.device("cpu"), 128, directory=cache)
    assert backend == "onnxruntime" and isinstance(net, B.RuntimeNetwork)
    x = probe_image((64, 128), 2, seed=5)
    from core.inference import convert_for_deploy

    with torch.no_grad():
        ref = convert_for_deploy(model, check=False).model.eval()(x)
    out = net(x)
    assert out.shape == ref.shape
    assert float((out[..., :4] - ref[..., :4]).abs().max()) <= 1e-2
    assert float((out[..., 4:] - ref[..., 4:]).abs().max()) <= 1e-4
    same, name, _ = B.backend_network(model, "torch", torch.device("cpu"), 128)
    assert same is model and name == "torch"


def test_detect_cli_backend_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "m.pt"
    save_checkpoint(weights, _model())
    src = tmp_path / "in"
    src.mkdir()
    for k, (h, w) in enumerate(SHAPES[:2]):
        Image.fromarray(_image(h, w, k)).save(src / f"im{k}.png")
    records = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        args = ["detect", "--weights", str(weights), str(src), "--out", str(out), "--img", "128", "--conf", "0.3"]
        code = main([*args, "--backend", backend, "--cache-dir", str(tmp_path / "cache"), "--no-images"])
        printed = capsys.readouterr().out
        assert code == 0 and f"backend: {backend}" in printed
        records[backend] = [json.loads((out / f"im{k}.json").read_text())["detections"] for k in range(2)]
    for got, want in zip(records["onnxruntime"], records["torch"]):
        assert [d["label"] for d in got] == [d["label"] for d in want] and len(want) > 0
        for a, b in zip(got, want):
            assert np.allclose(a["box_xyxy"], b["box_xyxy"], atol=2e-2) and abs(a["score"] - b["score"]) <= 1e-4
    with pytest.raises(SystemExit):
        main(["detect", "--weights", str(weights), str(src), "--out", str(tmp_path / "x"), "--backend", "nope"])


def test_val_cli_backend_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from core.data.demo import ensure_demo_dataset
    from core.data.load import load_dataset

    data = ensure_demo_dataset(tmp_path / "demo", n_images=12, img_size=64, seed=1)
    names = list(load_dataset(data).class_names)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), len(names), class_names=names)
    weights = tmp_path / "m.pt"
    save_checkpoint(weights, well_conditioned_(model, head_gain=1.0).eval())
    stats = {}
    for backend in ("torch", "onnxruntime"):
        args = ["val", "--data", str(data), "--weights", str(weights), "--split", "train", "--img", "64"]
        assert main([*args, "--device", "cpu", "--backend", backend, "--json", "--workers", "0"]) == 0
        stats[backend] = json.loads(capsys.readouterr().out)
    assert stats["onnxruntime"]["boxes"] == stats["torch"]["boxes"] > 0
    for key, value in stats["torch"]["coco"].items():
        assert stats["onnxruntime"]["coco"][key] == pytest.approx(value, abs=1e-3), key
