"""The FiftyOne bridge against a real FiftyOne with its real MongoDB (no mock).

Every test session gets its own database folder (``FIFTYONE_DATABASE_DIR`` under pytest's tmp, set before FiftyOne
is imported) so tests never share state with a user's datasets or with another session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.services.fiftyone_model import (
    disagreement,
    heatmap_size,
    make_variants,
    predict_with_parts,
    run_name,
)
from app.services.fiftyone_views import BridgeError
from core.checkpoint.io import load_model, save_checkpoint
from core.data import check_dataset, coco_category_id, coco_image_id, load_dataset, make_demo_dataset, to_coco_dict
from core.eval import evaluate_coco
from core.explore import explore_image
from core.inference import Predictor, well_conditioned_
from core.models import build_model, get_spec, scale_width
from core.nms import NmsConfig

REPO = Path(__file__).resolve().parents[1]
DEMO_CKPT = REPO / "assets" / "demo_yolov7-tiny_aux.pt"
NAMES = ["circle", "square", "triangle", "cross"]  # the demo data's classes
BCCD_NAMES = ["RBC", "WBC", "Platelets"]
CONF = 0.001  # low, so that even an untrained checkpoint leaves predictions to evaluate


def tiny_checkpoint(path: Path, names: list[str], img: int = 128) -> Path:
    """A thin yolov7-tiny with aux head and well-spread scores (it predicts boxes without training)."""
    torch.manual_seed(0)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.25), len(names), class_names=names, aux=True)
    well_conditioned_(model, head_gain=1.0).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, model, train={"img": img})


@pytest.fixture(scope="session")
def fo(tmp_path_factory):
    """FiftyOne with a database of this test session only (env set before the first import)."""
    root = tmp_path_factory.mktemp("fiftyone")
    if "fiftyone" in sys.modules:  # imported earlier in this process: it must already use a temporary folder
        fo = sys.modules["fiftyone"]
        assert "pytest" in str(fo.config.database_dir), "fiftyone was imported with a non-temporary database"
        return fo
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    os.environ.update(
        FIFTYONE_DATABASE_DIR=str(root / "db"),
        FIFTYONE_DEFAULT_DATASET_DIR=str(root / "media"),
        FIFTYONE_DO_NOT_TRACK="true",
        FIFTYONE_DATABASE_VALIDATION="false",
        FIFTYONE_SHOW_PROGRESS_BARS="false",
    )
    return pytest.importorskip("fiftyone", reason="FiftyOne is not installed (pip install -e '.[dev]' installs it)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("fo_demo")
    data = make_demo_dataset(root / "demo", n_images=12, img_size=128)
    tiny = tiny_checkpoint(root / "ckpt" / "tiny.pt", NAMES)
    return data, tiny


@pytest.fixture(scope="module")
def built(fo, demo):
    """The demo data with the shipped demo checkpoint and a tiny one (training form; deploy: the re-run test)."""
    from app.fiftyone_bridge import to_fiftyone

    data, tiny = demo
    result = to_fiftyone(data, [DEMO_CKPT, tiny], name="demo", conf=CONF)
    return result, fo.load_dataset("demo")


def _pixels(det, w: int, h: int) -> list[float]:
    x, y, bw, bh = det.bounding_box
    return [x * w, y * h, (x + bw) * w, (y + bh) * h]


# -- plain parts (no FiftyOne) ------------------------------------------------------------------------------------
def test_variant_names(tmp_path):
    a = tmp_path / "runs" / "exp3" / "weights" / "best.pt"
    b = tmp_path / "runs" / "exp3" / "weights" / "last.pt"
    c = tmp_path / "yolov7-tiny.pt"
    for p in (a, b, c):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert [run_name(p) for p in (a, b, c)] == ["exp3", "exp3_last", "yolov7_tiny"]
    fields = [v.field for v in make_variants([a, c, c], ["training", "deploy", "onnx"])]
    assert fields[:3] == ["pred_exp3", "pred_exp3_deploy", "pred_exp3_onnx"]
    assert fields[6:] == ["pred_yolov7_tiny_2", "pred_yolov7_tiny_2_deploy", "pred_yolov7_tiny_2_onnx"]
    with pytest.raises(BridgeError, match="not found"):
        make_variants([tmp_path / "nope.pt"], ["training"])
    with pytest.raises(BridgeError, match="unknown form"):
        make_variants([a], ["tflite"])


def test_predictions_with_parts_equal_the_predictor(demo):
    """Same boxes, scores and labels as Predictor(...)(paths); objectness x class probability = score."""
    data, tiny = demo
    paths = sorted((Path(data).parent / "images" / "val").glob("*.jpg"))
    predictor = Predictor(load_model(tiny).model, img_size=128, deploy=False)
    nms = NmsConfig(conf=0.01, iou=0.45, max_det=100)
    ours = predict_with_parts(predictor, paths, nms)
    ref = predictor(paths, conf=0.01, iou=0.45, max_det=100)
    assert sum(len(p.detections) for p in ours) > 0
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p.detections.boxes, r.boxes)
        torch.testing.assert_close(p.detections.scores, r.scores)
        assert p.detections.labels.tolist() == r.labels.tolist()
        np.testing.assert_allclose(p.objectness * p.class_prob, r.scores.numpy(), rtol=1e-5, atol=1e-7)
        assert np.all((p.objectness > 0) & (p.objectness <= 1) & (p.class_prob > 0) & (p.class_prob <= 1))
    assert disagreement(ref[0], ref[0]) == 0


def test_heatmap_size_keeps_aspect():
    assert heatmap_size(640, 480) == (640, 480)
    assert heatmap_size(4000, 3000) == (1024, 768)


# -- the dataset in FiftyOne --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_samples_boxes_splits_equal_the_source(built, demo):
    result, dataset = built
    source = check_dataset(load_dataset(demo[0])).dataset
    assert len(dataset) == len(source.images) == result.samples == 12
    assert dataset.count("ground_truth.detections") == source.num_boxes == result.boxes
    by_path = {s.filepath: s for s in dataset}
    for rec in source.images:
        s = by_path[str(rec.path)]
        assert rec.split in s.tags and s.split == rec.split
        gt = s.ground_truth.detections
        assert [d.label for d in gt] == [source.class_names[c] for c in rec.classes]
        np.testing.assert_allclose([_pixels(d, rec.width, rec.height) for d in gt], rec.boxes, atol=1e-6)
    assert dataset.count_sample_tags() == {k: v for k, v in source.split_counts().items()}
    assert result.variants == ["pred_demo_yolov7_tiny_aux", "pred_tiny"]
    for f in result.variants:  # confidence = objectness x class probability on every stored prediction
        conf, obj, prob = (np.asarray(dataset.values(f"{f}.detections.{k}", unwind=True), dtype=float)
                           for k in ("confidence", "objectness", "class_prob"))  # fmt: skip
        np.testing.assert_allclose(conf, obj * prob, rtol=1e-4, atol=1e-6)
    assert {"fp_tiny", "fn_tiny", "likely_missing", "likely_wrong", "no_positive", "disagreement"} <= set(
        dataset.list_saved_views()
    )
    assert dataset.has_brain_run("mistakenness") and dataset.has_sample_field("possible_missing")
    status = dataset.count_values("pred_demo_yolov7_tiny_aux.detections.errors_eval")  # the likely-missing matching
    assert set(status) <= {"tp", "fp"} and sum(status.values()) == dataset.count("pred_demo_yolov7_tiny_aux.detections")


@pytest.mark.slow
def test_evaluation_equals_pycocotools(built, demo, fo):
    """FiftyOne's COCO mAP of each stored prediction field = core.eval (pycocotools) on the same boxes."""
    from app.services.fiftyone_views import evaluate_variant

    result, dataset = built
    source = check_dataset(load_dataset(demo[0])).dataset
    gt = to_coco_dict(source)
    index = {str(r.path): k for k, r in enumerate(source.images)}
    sizes = {str(r.path): (r.width, r.height) for r in source.images}
    # also a field with many true positives: the ground truth jittered, with random scores and some labels swapped
    rng = np.random.default_rng(0)
    for s in dataset.iter_samples(autosave=True):
        dets = []
        for d in s.ground_truth.detections:
            x, y, w, h = d.bounding_box
            box = [x + rng.normal(0, 0.02) * w, y + rng.normal(0, 0.02) * h, w * rng.uniform(0.85, 1.15), h]
            label = d.label if rng.random() > 0.15 else NAMES[rng.integers(len(NAMES))]
            dets.append(fo.Detection(label=label, bounding_box=box, confidence=float(rng.random())))
        dets.append(fo.Detection(label="cross", bounding_box=[0.1, 0.1, 0.2, 0.2], confidence=float(rng.random())))
        s["pred_synthetic"] = fo.Detections(detections=dets)
    synthetic = evaluate_variant(dataset, "pred_synthetic", "eval_synthetic").to_dict()
    assert synthetic["mAP"] > 0.2 and synthetic["tp"] > 0
    compared = []
    for field, ev in [*result.evaluation.items(), ("pred_synthetic", synthetic)]:
        labels, confs = (
            dataset.values(f"{field}.detections.label", unwind=True),
            dataset.values(f"{field}.detections.confidence", unwind=True),
        )
        if len(set(zip(labels, confs))) < len(confs):  # tied scores (an untrained model): AP depends on the tie order
            continue
        compared.append(field)
        coco = []
        for fp, dets in zip(*dataset.values(["filepath", f"{field}.detections"])):
            w, h = sizes[fp]
            for d in dets or []:
                x1, y1, x2, y2 = _pixels(d, w, h)
                cat = coco_category_id(NAMES.index(d.label))
                coco.append({"image_id": coco_image_id(index[fp]), "category_id": cat,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d.confidence})  # fmt: skip
        ref = evaluate_coco(gt, coco)
        assert ev["mAP"] == pytest.approx(ref.map, abs=1e-3), field
        for name, ap in ev["per_class_AP"].items():
            assert ap == pytest.approx(ref.per_class_ap[name], abs=1e-3), (field, name)
    assert "pred_synthetic" in compared, compared


@pytest.mark.slow
def test_assignment_attributes_equal_core_and_heatmaps_align(built, demo):
    result, dataset = built
    from app.services.detect import checkpoint_img_size

    loaded = load_model(DEMO_CKPT)
    model, img = loaded.model.eval(), checkpoint_img_size(loaded.checkpoint)  # the size the bridge uses
    checked = 0
    for s in dataset.iter_samples():
        gt = s.ground_truth.detections
        w, h = s.metadata.width, s.metadata.height
        boxes = np.asarray([_pixels(d, w, h) for d in gt]).reshape(-1, 4)
        exp = explore_image(model, s.filepath, boxes, [NAMES.index(d.label) for d in gt], img_size=img)
        names = [lv.name for lv in exp.levels]
        for d, row in zip(gt, exp.box_summaries()):
            fine, coarse = row["fine"], row["coarse"]
            assert [d[f"fine_{n}"] for n in names] == fine["positives_per_level"]
            assert [d[f"coarse_{n}"] for n in names] == coarse["positives_per_level"]
            assert (d.fine_total, d.coarse_total) == (fine["positives"], coarse["positives"])
            assert (d.dynamic_k_fine, d.dynamic_k_coarse) == (fine["dynamic_k"], coarse["dynamic_k"])
            assert d.no_positive == fine["none"]
            checked += 1
        assert s.num_no_positive == sum(bool(d.no_positive) for d in gt)
        for f in ("lead_objectness", "aux_objectness"):  # the demo checkpoint has an aux head: both maps
            with Image.open(s[f].map_path) as im:
                assert im.size == (w, h)
                assert im.mode == "L"
    assert checked == dataset.count("ground_truth.detections")


@pytest.mark.slow
def test_rerun_updates_in_place(built, demo, fo):
    from app.fiftyone_bridge import to_fiftyone

    result, dataset = built
    ids = sorted(dataset.values("id"))
    again = to_fiftyone(demo[0], [demo[1]], name="demo", forms=("deploy",), conf=CONF)
    dataset.reload()
    assert (again.added, again.updated, again.removed) == (0, 12, 0)
    assert again.variants == ["pred_tiny_deploy"] and dataset.count("pred_tiny_deploy.detections") > 0
    assert dataset.has_sample_field("pred_tiny")  # an earlier variant stays
    # each field says which backend made it: training in PyTorch, deploy on the backend auto chose
    deploy, training = dataset.get_field("pred_tiny_deploy"), dataset.get_field("pred_tiny")
    assert training.info["backend"] == "torch (cpu fp32)" and training.info["form"] == "training"
    assert deploy.info["backend"].endswith(", auto)") and deploy.info["backend"] in deploy.description
    assert dataset.info["yolov7_studio"]["backends"] == {"pred_tiny_deploy": deploy.info["backend"]}
    assert sorted(dataset.values("id")) == ids
    assert dataset.count("ground_truth.detections") == result.boxes
    assert len(dataset.values("filepath")) == len(set(dataset.values("filepath")))


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_classes_by_name_or_clear_error(fo, demo, tmp_path):
    from app.fiftyone_bridge import to_fiftyone

    data, _ = demo
    partial = tiny_checkpoint(tmp_path / "partial.pt", ["square", "circle", "hexagon", "cross"])
    notes: list[str] = []
    res = to_fiftyone(data, [partial], name="partial", conf=CONF, log=notes.append)
    assert any("matched by name" in n and "hexagon" in n and "triangle" in n for n in notes)
    dataset = fo.load_dataset("partial")
    labels = set(dataset.distinct("pred_partial.detections.label"))
    assert labels <= {"square", "circle", "hexagon", "cross"}
    assert res.samples == len(dataset) == 12
    seen = set()
    for s in dataset:  # a class the model lacks gets no assignment attributes; the others keep theirs
        for d in s.ground_truth.detections:
            assert (getattr(d, "fine_total", None) is None) == (d.label == "triangle"), d.label
            seen.add(d.label)
    assert "triangle" in seen
    other = tiny_checkpoint(tmp_path / "other.pt", ["RBC", "WBC", "Platelets"])
    with pytest.raises(BridgeError, match=r"other\.pt.*share no name"):
        to_fiftyone(data, [other], name="other")


@pytest.mark.slow
def test_missing_image_and_bad_paths(fo, demo, tmp_path):
    from app.fiftyone_bridge import to_fiftyone
    from core.data import convert_dataset

    data, tiny = demo
    voc, _ = convert_dataset(data, "voc", tmp_path / "voc")
    gone = sorted((Path(voc) / "JPEGImages").glob("*.jpg"))[0]
    gone.unlink()
    res = to_fiftyone(voc, [tiny], name="missing", conf=CONF)
    assert res.samples == 11 and len(res.left_out) == 1 and gone.stem in res.left_out[0]
    assert gone.stem in res.summary()
    with pytest.raises(BridgeError, match="dataset not found"):
        to_fiftyone(tmp_path / "nowhere", [tiny])
    with pytest.raises(BridgeError, match="checkpoint not found"):
        to_fiftyone(data, [tmp_path / "none.pt"])
    with pytest.raises(BridgeError, match="no split 'dev'"):
        to_fiftyone(data, [tiny], split="dev")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_unreachable_database_is_a_clear_message(demo, tmp_path):
    data, tiny = demo
    env = dict(os.environ, FIFTYONE_DATABASE_URI=f"mongodb://127.0.0.1:{_free_port()}/?serverSelectionTimeoutMS=1500",
               FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_DEFAULT_DATASET_DIR=str(tmp_path))  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "fiftyone",
        "--data",
        str(data),
        "--weights",
        str(tiny),
        "--max-images",
        "1",
    ]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "cannot reach FiftyOne's database" in out.stderr and "127.0.0.1" in out.stderr
    assert "Traceback" not in out.stderr


# -- BCCD (../shared) -----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.shared
def test_bccd_few_images(fo, bccd_root, tmp_path):
    from app.fiftyone_bridge import to_fiftyone

    ckpt = tiny_checkpoint(tmp_path / "bccd_tiny.pt", BCCD_NAMES, img=160)
    res = to_fiftyone(bccd_root, [ckpt], name="bccd", split="val", max_images=4, conf=CONF)
    dataset = fo.load_dataset("bccd")
    source = check_dataset(load_dataset(bccd_root)).dataset
    recs = {str(r.path): r for r in source.split("val")}
    assert len(dataset) == res.samples == 4
    for s in dataset:
        rec = recs[s.filepath]
        assert [d.label for d in s.ground_truth.detections] == [source.class_names[c] for c in rec.classes]
        assert "val" in s.tags
        with Image.open(s.aux_objectness.map_path) as im:  # 640x480 images: the heatmap has their aspect
            assert im.size[0] * rec.height == im.size[1] * rec.width
    assert res.evaluation["pred_bccd_tiny"]["mAP"] >= 0


# -- the App ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.browser
def test_app_answers_and_shows_the_dataset(built, demo, tmp_path):
    """``yolov7-studio fiftyone --launch`` on a free port: prints its URL, the App answers HTTP 200, and a headless
    Chromium shows the dataset (12 samples, its label fields; the screenshot is saved under tmp to look at)."""
    import urllib.request

    data, tiny = demo
    port = _free_port()
    cmd = [sys.executable, "-m", "app.cli", "fiftyone", "--data", str(data), "--weights", str(tiny), "--name", "demo",
           "--conf", str(CONF), "--launch", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = None, []
        deadline = time.monotonic() + 600
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("FiftyOne App: "):
                url = line.split()[2]
        assert url is not None and url.startswith(f"http://127.0.0.1:{port}/"), "".join(lines[-30:])
        status = None
        for _ in range(60):
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(2)
        assert status == 200
        if Path("/usr/bin/chromium").exists():
            from playwright.sync_api import sync_playwright

            shot = tmp_path / "fiftyone_app.png"
            args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run"]  # fmt: skip
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(url, timeout=120_000)
                page.get_by_text("12 samples").first.wait_for(timeout=180_000)  # the grid of the dataset's images
                page.wait_for_timeout(5000)
                page.screenshot(path=str(shot))
                body = page.inner_text("body")
                browser.close()
            assert "ground_truth" in body and "pred_tiny" in body and "lead_objectness" in body
            assert shot.stat().st_size > 10_000
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
