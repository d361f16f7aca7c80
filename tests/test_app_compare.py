"""The Compare service (app.services.compare) without a browser; /compare via gradio_client on a launched studio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.modelcache import ModelCache
from app.services import compare as svc
from app.workspace import Workspace
from core.checkpoint.io import load_model
from core.data import load_dataset
from core.eval import evaluate
from core.models import reparameterize
from core.models.profile import count_gflops, count_params
from tests.test_app_detect import IMG, NAMES, make_workspace, studio, tiny_checkpoint  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="module")
def result(ws: Workspace) -> svc.CompareOutput:
    steps: list[tuple[float, str]] = []
    out = svc.compare(
        ws,
        ModelCache(),
        ["run:tiny"],
        forms=["training", "deploy"],
        dataset="upload:tiny",
        split="test",
        runs=3,
        progress=lambda f, m: steps.append((f, m)),
    )
    out.record["progress"] = steps
    return out


def test_metrics_equal_core_eval_for_the_same_checkpoint(ws: Workspace, result: svc.CompareOutput) -> None:
    loaded = load_model(ws.checkpoint("run:tiny").path)
    data = load_dataset(ws.dataset("upload:tiny").path)
    assert [m["label"] for m in result.models] == ["run:tiny (training)", "run:tiny (deploy)"]
    for m, fuse in zip(result.models, (False, True)):
        want = evaluate(loaded.model.eval(), data, "test", img_size=IMG, batch_size=svc.EVAL_BATCH_SIZE, fuse=fuse)
        assert m["map50"] == pytest.approx(want.coco.map50, abs=1e-12)
        assert m["map"] == pytest.approx(want.coco.map, abs=1e-12)
        assert m["per_class_ap"] == pytest.approx(want.coco.per_class_ap, abs=1e-12)
        assert m["per_class_ap50"] == pytest.approx(want.coco.per_class_ap50, abs=1e-12)
        assert m["num_images"] == len(data.split("test")) and m["img_size"] == IMG
        assert set(m["per_class_ap"]) == set(NAMES)


def test_parameters_gflops_and_latency(ws: Workspace, result: svc.CompareOutput) -> None:
    model = load_model(ws.checkpoint("run:tiny").path).model.eval()
    deploy = reparameterize(model)
    training, fused = result.models
    assert training["params"] == count_params(model) > fused["params"] == count_params(deploy)  # aux head dropped
    assert fused["gflops"] == pytest.approx(count_gflops(deploy, IMG), rel=1e-3)
    assert training["gflops"] == pytest.approx(count_gflops(model, IMG, aux=False), rel=1e-3)
    for m in result.models:
        assert len(m["latency_runs_ms"]) == 3 and m["latency_ms"] == pytest.approx(
            sorted(m["latency_runs_ms"])[1], abs=0.01
        )
    assert [row[:2] for row in result.summary_rows] == [["run:tiny", "training"], ["run:tiny", "deploy"]]
    assert len(result.summary_rows[0]) == len(svc.SUMMARY_HEADERS)
    backend = svc.SUMMARY_HEADERS.index("backend")  # the backend that ran, from the predictor
    assert [row[backend] for row in result.summary_rows] == [m["backend"] for m in result.models]
    assert result.summary_rows[0][backend].startswith("torch")  # the training form always runs in PyTorch


def test_side_by_side_table_figure_and_progress(result: svc.CompareOutput) -> None:
    assert len(result.images) == 2
    assert result.images[0][0].size == result.images[1][0].size
    assert result.images[0][1].startswith("run:tiny (training):")
    assert [row[0] for row in result.class_rows] == NAMES
    assert len(result.class_headers) == 1 + 2 * 2
    traces = result.figure.data
    assert len(traces) == 4 and list(traces[0].x) == ["all (mAP)", *NAMES]
    assert traces[0].y[0] == pytest.approx(result.models[0]["map"])
    fractions = [f for f, _ in result.record["progress"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    json.dumps({k: v for k, v in result.record.items() if k != "progress"})  # plain data


def test_results_are_cached_in_memory_and_on_disk(ws: Workspace, result: svc.CompareOutput) -> None:
    files = list((ws.root / "cache" / "compare").glob("*.json"))
    assert len(files) == 2
    again = svc.compare(ws, ModelCache(), "run:tiny", forms="training,deploy", dataset="upload:tiny", runs=1)
    assert [m["cached"] for m in again.models] == [True, True]
    svc._memo.clear()  # a restarted studio reads the files
    record, hit = svc.evaluate_model(ws, ModelCache(), "run:tiny", "deploy", "upload:tiny", "test")
    assert hit and record["map"] == result.models[1]["map"]


def test_bad_requests_give_clear_messages(ws: Workspace, tmp_path: Path) -> None:
    cache = ModelCache()
    with pytest.raises(svc.CompareError, match="pick at least one checkpoint"):
        svc.compare(ws, cache, [], dataset="upload:tiny")
    with pytest.raises(svc.CompareError, match="unknown checkpoint 'run:missing'"):
        svc.compare(ws, cache, ["run:missing"], dataset="upload:tiny", split="test")
    with pytest.raises(svc.CompareError, match="no split 'holdout'.*train, val, test"):
        svc.compare(ws, cache, ["run:tiny"], dataset="upload:tiny", split="holdout")
    with pytest.raises(svc.CompareError, match="unknown form 'onnx'"):
        svc.compare(ws, cache, ["run:tiny"], forms=["onnx"], dataset="upload:tiny", split="test")
    with pytest.raises(svc.CompareError, match="unknown dataset 'upload:nothing'"):
        svc.compare(ws, cache, ["run:tiny"], dataset="upload:nothing")
    tiny_checkpoint(ws.run_dir("two") / "weights" / "best.pt", names=["cat", "dog"])
    with pytest.raises(svc.CompareError, match=r"run:two: the model has 2 classes \(cat, dog\).*4"):
        svc.compare(ws, cache, ["run:two"], dataset="upload:tiny", split="test")
    assert svc.split_choices(ws, cache, "upload:tiny")[0] == "test"


@pytest.mark.slow
def test_compare_endpoint_on_the_demo_split(studio) -> None:  # noqa: F811 (the fixture)
    from gradio_client import Client

    url, ws = studio
    client = Client(url, verbose=False)
    summary, plot, table, gallery, per_class, record = client.predict(
        ["run:tiny"], ["training", "deploy"], "demo", "test", api_name="/compare"
    )
    assert "demo / test" in summary and "30 images" in summary
    assert [row[:2] for row in table["data"]] == [["run:tiny", "training"], ["run:tiny", "deploy"]]
    assert len(gallery) == 2 and all(Path(item["image"]).is_file() for item in gallery)
    assert [row[0] for row in per_class["data"]] == NAMES
    assert plot["type"] == "plotly"
    want, _ = svc.evaluate_model(ws, ModelCache(), "run:tiny", "deploy", "demo", "test")
    assert record["models"][1]["map"] == want["map"] and record["models"][1]["per_class_ap"] == want["per_class_ap"]
