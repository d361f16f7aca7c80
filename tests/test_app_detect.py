"""The Detect service (app.services.detect) without a browser; /detect via gradio_client on a launched studio."""

from __future__ import annotations

import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from app.modelcache import ModelCache
from app.services import detect as svc
from app.workspace import Workspace
from core.checkpoint.io import save_checkpoint
from core.data import make_demo_dataset
from core.inference import Detections, Predictor, read_image, well_conditioned_
from core.inference import backends as B
from core.models import build_model, get_spec, scale_width

NAMES = ["circle", "square", "triangle", "cross"]  # the demo dataset's classes
IMG = 96  # the tiny checkpoint's stored training size


def tiny_checkpoint(path: Path, names: list[str] = NAMES, img: int = IMG) -> Path:
    """A thin yolov7-tiny with the aux head and well-spread scores, saved with its training size."""
    torch.manual_seed(0)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.25), len(names), class_names=names, aux=True)
    well_conditioned_(model, head_gain=1.0).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, model, train={"img": img})


def make_workspace(root: Path) -> Workspace:
    """A workspace with run ``tiny`` (checkpoint ``run:tiny``) and a small demo-style dataset ``upload:tiny``."""
    ws = Workspace(root)
    tiny_checkpoint(ws.run_dir("tiny") / "weights" / "best.pt")
    make_demo_dataset(ws.datasets_dir / "tiny", n_images=30, img_size=IMG)
    return ws


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A .pt whose unpickling would call ``os.system`` (creating ``marker``) if anything ran it."""

    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Exploit(), "epoch": 1}, path)
    return path


def test_images(ws: Workspace, n: int = 3) -> list[Path]:
    return sorted((ws.datasets_dir / "tiny" / "images" / "test").glob("*.jpg"))[:n]


test_images.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="module")
def cache() -> ModelCache:
    return ModelCache()


def _same(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=0))


def _same_set(got: Detections, ref: Detections, atol: float) -> bool:
    """Equal detections in any order (near-equal scores of an untrained model may swap places between backends)."""
    if len(got) != len(ref):
        return False
    for box, label in zip(got.boxes, got.labels):
        near = (ref.boxes - box).abs().amax(dim=1) <= atol
        if not bool((near & (ref.labels == label)).any()):
            return False
    return True


def test_image_size_comes_from_the_checkpoint() -> None:
    assert svc.checkpoint_img_size({"train": {"img": 256}}) == 256
    assert svc.checkpoint_img_size({"train": {"config": {"img": 320}, "epoch": 3}}) == 320
    assert svc.checkpoint_img_size({"train": None}) == 640
    assert svc.checkpoint_img_size({}) == 640
    assert svc.checkpoint_img_size(None) == 640


@pytest.mark.parametrize("form", ["deploy", "training"])
def test_detections_equal_a_direct_predictor_call(ws: Workspace, cache: ModelCache, form: str) -> None:
    """Same detections as PyTorch's predictor of that form (the deploy form may run in a CPU runtime)."""
    images = test_images(ws)
    out = svc.detect(ws, cache, [str(p) for p in images], checkpoint="run:tiny", form=form, conf=0.2, max_det=50)
    direct = Predictor(ws.checkpoint("run:tiny").path, img_size=IMG, deploy=form == "deploy")
    want = direct([str(p) for p in images], conf=0.2, iou=0.45, max_det=50)
    assert out.record["img_size"] == IMG and out.record["form"] == form
    assert sum(len(d) for d in want) > 0, "the test model should detect something"
    runtime = svc.get_predictor(ws, cache, "run:tiny", form).backend != "torch"
    for got, ref in zip(out.detections, want):
        assert _same(got.boxes, ref.boxes, 1e-2 if runtime else 1e-4)
        assert _same(got.scores, ref.scores, 1e-4 if runtime else 1e-6)
        assert torch.equal(got.labels, ref.labels)
    assert len(out.rows) == sum(len(d) for d in want)
    assert [im.size for im in out.annotated] == [read_image(p).shape[1::-1] for p in images]
    assert out.latency_ms > 0


def test_json_output_is_well_formed(ws: Workspace, cache: ModelCache) -> None:
    images = test_images(ws, 2)
    out = svc.detect(ws, cache, [str(p) for p in images], checkpoint="run:tiny", conf=0.2, iou=0.5, max_det=7)
    assert out.json_path is not None and out.json_path.parent == ws.tmp_dir / "detect"
    doc = json.loads(out.json_path.read_text())
    assert doc == json.loads(json.dumps(out.record))
    assert doc["checkpoint"] == "run:tiny" and doc["form"] == "deploy" and doc["img_size"] == IMG
    assert doc["settings"] == {"conf": 0.2, "iou": 0.5, "max_det": 7, "classes": None}
    assert doc["class_names"] == NAMES and doc["latency_ms"] > 0
    predictor = svc.get_predictor(ws, cache, "run:tiny", "deploy")
    assert doc["backend"] == svc.backend_name(predictor) and doc["backend"].split()[0] == predictor.backend
    assert doc["backend_notes"] == predictor.backend_notes
    assert [im["source"] for im in doc["images"]] == [p.name for p in images]
    total = 0
    for im in doc["images"]:
        assert len(im["detections"]) <= 7
        scores = [d["score"] for d in im["detections"]]
        assert scores == sorted(scores, reverse=True)
        for d in im["detections"]:
            x1, y1, x2, y2 = d["box_xyxy"]
            assert 0 <= x1 <= x2 <= im["width"] and 0 <= y1 <= y2 <= im["height"]
            assert 0.2 < d["score"] <= 1 and d["name"] == NAMES[d["label"]]
        total += len(im["detections"])
    assert total == len(out.rows) > 0


def test_class_filter_and_settings(ws: Workspace, cache: ModelCache) -> None:
    path = str(test_images(ws, 1)[0])
    everything = svc.detect(ws, cache, path, checkpoint="run:tiny", conf=0.05, save_json=False)
    present = sorted(set(everything.detections[0].labels.tolist()))
    assert present, "the test model should detect something at conf 0.05"
    keep = NAMES[present[0]]
    only = svc.detect(ws, cache, path, checkpoint="run:tiny", conf=0.05, classes=[keep], save_json=False)
    assert set(only.detections[0].labels.tolist()) == {present[0]}
    assert svc.class_filter("square, 3", NAMES) == [1, 3]
    with pytest.raises(svc.DetectError, match="unknown class 'horse'.*circle, square"):
        svc.detect(ws, cache, path, checkpoint="run:tiny", classes=["horse"])
    with pytest.raises(svc.DetectError, match="outside"):
        svc.detect(ws, cache, path, checkpoint="run:tiny", conf=1.5)
    with pytest.raises(svc.DetectError, match="unknown checkpoint 'run:nope'"):
        svc.detect(ws, cache, path, checkpoint="run:nope")
    with pytest.raises(svc.DetectError, match="unknown form 'tensorrt'"):
        svc.detect(ws, cache, path, checkpoint="run:tiny", form="tensorrt")
    with pytest.raises(svc.DetectError, match="no image"):
        svc.detect(ws, cache, [], checkpoint="run:tiny")


def test_corrupt_image_gives_an_error_naming_the_file(ws: Workspace, cache: ModelCache, tmp_path: Path) -> None:
    garbage = tmp_path / "holiday_photo.jpg"
    garbage.write_bytes(b"this is not an image at all")
    good = test_images(ws, 1)[0]
    truncated = tmp_path / "cut_short.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    for bad in (garbage, truncated):
        with pytest.raises(svc.DetectError, match=bad.name) as info:
            svc.detect(ws, cache, [str(good), str(bad)], checkpoint="run:tiny")
        assert str(tmp_path) not in str(info.value)  # the name the user knows, not a server path
    assert len(svc.detect(ws, cache, str(good), checkpoint="run:tiny", save_json=False).detections) == 1


def test_hostile_checkpoint_upload_is_refused_and_detect_keeps_working(
    ws: Workspace, cache: ModelCache, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    evil = hostile_checkpoint(tmp_path / "yolov7_official.pt", marker)
    before = [e.id for e in ws.list_checkpoints()]
    with pytest.raises(svc.DetectError, match=r"yolov7_official\.pt: refused") as info:
        svc.add_checkpoint(ws, evil)
    assert "system" in str(info.value)  # says what was refused
    assert not marker.exists()
    assert [e.id for e in ws.list_checkpoints()] == before
    assert not list(ws.checkpoints_dir.glob("yolov7_official*")) and not list(ws.checkpoints_dir.glob(".*"))
    with pytest.raises(svc.DetectError, match="not a checkpoint"):
        svc.add_checkpoint(ws, tmp_path / "notes.txt")
    # a good upload is listed under its name and detects
    good = tiny_checkpoint(tmp_path / "mine.pt", img=64)
    entry = svc.add_checkpoint(ws, good)
    assert entry.id == "upload:mine.pt" and entry.id in [e.id for e in ws.list_checkpoints()]
    out = svc.detect(ws, cache, str(test_images(ws, 1)[0]), checkpoint=entry.id, save_json=False)
    assert out.record["img_size"] == 64


def test_official_yolov7_upload_goes_through_the_safe_loader_and_detects(
    ws: Workspace, cache: ModelCache, tmp_path: Path
) -> None:
    from tests.official_format import write_official

    model = well_conditioned_(build_model("yolov7-tiny", 3, class_names=["a", "b", "c"]), head_gain=1.0).eval()
    official = write_official(tmp_path / "yolov7-tiny.pt", model, "stripped")
    entry = svc.add_checkpoint(ws, official)
    assert entry.id == "upload:yolov7-tiny.pt"
    # the training form (PyTorch): a full-size model at 640 px; exporting it for the deploy form's runtime would
    # double this test's time, and the deploy form's backends are tested on the small checkpoint above
    image = str(test_images(ws, 1)[0])
    out = svc.detect(ws, cache, image, checkpoint=entry.id, form="training", conf=0.1, save_json=False)
    assert out.record["img_size"] == 640 and "official" in out.record["model"]  # no stored training size
    want = Predictor(official, img_size=640, deploy=False)(image, conf=0.1)[0]
    assert len(want) > 0 and _same_set(out.detections[0], want, 1e-4)


def _installed_runtime() -> str:
    """The backend ``auto`` picks here: PyTorch on CUDA, else the first installed CPU runtime, else PyTorch."""
    if torch.cuda.is_available():
        return "torch"
    return next(b for b in B.CPU_PREFERENCE if b == "torch" or B.missing_runtime(b) is None)


def _auto_name(predictor: Predictor) -> str:
    where = f"{predictor.device} {predictor.precision}" if predictor.backend == "torch" else "CPU"
    return f"{predictor.backend} ({where}, auto)"


def test_deploy_form_runs_on_the_backend_auto_chose(ws: Workspace, cache: ModelCache) -> None:
    """The deploy form is ``auto``: the report names the backend the predictor ran (not a guess from the form)."""
    images = [str(p) for p in test_images(ws, 3)]
    out = svc.detect(ws, cache, images, checkpoint="run:tiny", form="deploy", conf=0.2, save_json=False)
    predictor = svc.get_predictor(ws, cache, "run:tiny", "deploy")
    assert predictor.backend == _installed_runtime()
    assert predictor(images[0]).backend == predictor.backend  # what a call reports it ran
    assert out.record["backend"] == _auto_name(predictor) == svc.backend_name(predictor)
    assert f"deploy form on **{predictor.backend_label}**, chosen by auto" in out.summary
    training = svc.get_predictor(ws, cache, "run:tiny", "training")
    assert training.backend == "torch"
    assert svc.backend_name(training) == f"torch ({training.device} {training.precision})"
    # the explicit ONNX Runtime form: same detections as the torch deploy form
    pytest.importorskip("onnxruntime", reason="the [export] extra (onnx, onnxruntime) is not installed")
    onnx = svc.get_predictor(ws, cache, "run:tiny", "onnx")
    assert onnx.backend == "onnxruntime" and svc.backend_name(onnx) == "onnxruntime (CPU)"
    got = svc.detect(ws, cache, images, checkpoint="run:tiny", form="onnx", conf=0.2, save_json=False)
    ref = Predictor(ws.checkpoint("run:tiny").path, img_size=IMG)(images, conf=0.2)  # PyTorch deploy form
    assert got.record["backend"] == "onnxruntime (CPU)" and "on **ONNX Runtime (CPU)**" in got.summary
    assert sum(len(d) for d in ref) > 0
    for g, r in zip(got.detections, ref):
        assert torch.equal(g.labels, r.labels)
        assert _same(g.boxes, r.boxes, 1e-2)
        assert _same(g.scores, r.scores, 1e-4)


def test_export_cache_is_in_the_workspace_and_reused(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime", reason="the [export] extra (onnx, onnxruntime) is not installed")
    import core.export

    exports: list[str] = []
    real = core.export.export_onnx

    def counting(*args: object, **kwargs: object) -> object:
        exports.append(str(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(core.export, "export_onnx", counting)
    first = svc.get_predictor(ws, ModelCache(), "run:tiny", "onnx")
    path = first.export_path
    assert path is not None and path.is_file() and path.parent == svc.cache_dir(ws) / "onnx" and ws.inside(path)
    stamp, made = path.stat().st_mtime_ns, len(exports)
    assert made <= 1  # 0 when an earlier test of this module exported it already
    again = svc.get_predictor(ws, ModelCache(), "run:tiny", "onnx")  # a new cache: a new predictor, same file
    assert again is not first and again.export_path == path
    assert len(exports) == made and path.stat().st_mtime_ns == stamp
    if _installed_runtime() == "onnxruntime":  # auto runs the same exported graph
        auto = svc.get_predictor(ws, ModelCache(), "run:tiny", "deploy")
        assert auto.export_path == path and len(exports) == made


def test_missing_runtimes_fall_back_to_torch_and_say_so(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(backend: str) -> str | None:
        return None if backend == "torch" else f"{backend} is not installed (test); pip install it"

    monkeypatch.setattr(B, "missing_runtime", missing)
    cache = ModelCache()
    images = [str(p) for p in test_images(ws, 3)]
    out = svc.detect(ws, cache, images, checkpoint="run:tiny", form="deploy", conf=0.2, save_json=False)
    assert out.record["backend"] == "torch (cpu fp32, auto)"
    assert any("onnxruntime is not installed" in n for n in out.record["backend_notes"])
    assert "on **PyTorch cpu fp32**, chosen by auto (skipped onnxruntime: onnxruntime is not installed" in out.summary
    want = Predictor(ws.checkpoint("run:tiny").path, img_size=IMG)(images, conf=0.2)
    for got, ref in zip(out.detections, want):
        assert _same(got.boxes, ref.boxes, 1e-4) and torch.equal(got.labels, ref.labels)
    # an explicitly chosen runtime that is missing is a clear message naming the checkpoint, not a fallback
    with pytest.raises(svc.DetectError, match=r"best\.pt: the onnx form cannot run here: .*onnxruntime is not"):
        svc.detect(ws, cache, images[0], checkpoint="run:tiny", form="onnx")
    if "openvino" in svc.FORMS:
        with pytest.raises(svc.DetectError, match=r"best\.pt: the openvino form cannot run here"):
            svc.get_predictor(ws, cache, "run:tiny", "openvino")


def test_openvino_is_offered_where_it_is_installed() -> None:
    installed = importlib.util.find_spec("openvino") is not None
    assert ("openvino" in svc.FORMS) == installed == (svc.FORM_BACKENDS.get("openvino") == "openvino")
    assert svc.FORM_BACKENDS["deploy"] == "auto" and svc.FORM_BACKENDS["onnx"] == "onnxruntime"
    assert set(svc.FORMS) == set(svc.FORM_BACKENDS)


def test_predictors_are_shared_through_the_cache(ws: Workspace) -> None:
    cache = ModelCache()
    first = svc.get_predictor(ws, cache, "run:tiny", "deploy")
    assert svc.get_predictor(ws, cache, "run:tiny", "deploy") is first
    assert svc.get_predictor(ws, cache, "run:tiny", "training") is not first
    with ThreadPoolExecutor(4) as pool:
        outs = list(
            pool.map(
                lambda p: svc.detect(ws, cache, p, checkpoint="run:tiny", save_json=False),
                [str(p) for p in test_images(ws, 3)] * 2,
            )
        )
    for a, b in zip(outs[:3], outs[3:]):
        assert torch.equal(a.detections[0].boxes, b.detections[0].boxes)


# -- against a launched studio ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    """The studio served in this process on a free port, with run ``tiny`` in its workspace."""
    from app.studio.app import launch
    from tests.studio_server import free_port

    root = tmp_path_factory.mktemp("studio_ws")
    make_workspace(root)
    demo = launch(root, port=free_port(), block=False)
    try:
        yield demo.local_url, Workspace(root)
    finally:
        demo.close()


@pytest.mark.slow
def test_detect_endpoint_with_only_the_image_and_under_load(studio, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    url, ws = studio
    images = sorted((ws.demo_dataset_dir / "images" / "test").glob("*.jpg"))[:10]
    client = Client(url, verbose=False)
    image, gallery, table, summary, record, json_file = client.predict(handle_file(str(images[0])), api_name="/detect")
    assert Path(image).is_file() and Path(json_file).is_file()
    assert record["checkpoint"] == "demo" and record["form"] == "deploy"
    assert record["backend"].startswith(_installed_runtime()) and record["backend"].endswith(", auto)")
    assert "chosen by auto" in summary
    assert record["settings"] == {"conf": 0.25, "iou": 0.45, "max_det": 300, "classes": None}
    assert record["images"][0]["source"] == images[0].name
    assert json.loads(Path(json_file).read_text()) == record
    assert table["headers"] == svc.TABLE_HEADERS and len(table["data"]) == len(record["images"][0]["detections"])
    assert " ms" in summary

    def one(path: Path) -> dict:
        return Client(url, verbose=False).predict(
            handle_file(str(path)), "run:tiny", "deploy", 0.2, api_name="/detect"
        )[4]

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(one, p) for p in images]
        errors = [f.exception() for f in futures if f.exception() is not None]
        assert errors == []
        results = [f.result() for f in futures]
    assert [r["images"][0]["source"] for r in results] == [p.name for p in images]
    cache = ModelCache()
    for path, got in zip(images, results):  # each answer belongs to its own request
        want = svc.detect(ws, cache, str(path), checkpoint="run:tiny", conf=0.2, save_json=False).record
        assert got["images"] == json.loads(json.dumps(want["images"]))

    # a corrupt image is answered with a message naming it (not Gradio's generic error)
    broken = tmp_path / "holiday_photo.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(Exception, match=r"holiday_photo\.jpg: not an image"):
        client.predict(handle_file(str(broken)), api_name="/detect")

    # a hostile upload is refused with a message, and the studio keeps serving
    marker = tmp_path / "PWNED"
    evil = hostile_checkpoint(tmp_path / "evil.pt", marker)
    _, message, _ = client.predict(handle_file(str(evil)), api_name="/upload_checkpoint")
    assert "refused" in message and "evil.pt" in message and not marker.exists()
    assert client.predict(handle_file(str(images[1])), api_name="/detect")[4]["images"][0]["source"] == images[1].name
