"""Library calls are safe from a server's request threads: one shared model, predictions and explorations from
several threads at once give the results of one call at a time, and no call changes process-wide state (the
model's train/eval mode, denormal flushing, global RNGs, the environment)."""

from __future__ import annotations

import copy
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.explore import assignment_stats, explore_image
from core.inference import Predictor, flush_denormals, well_conditioned_
from core.inference.predictor import _denormals_flushed
from core.models import build_model, get_spec, scale_width
from core.nms import NmsConfig

NAMES = ["red", "green", "speck"]
BOXES = np.array([[20, 10, 70, 50], [80, 40, 140, 95]], dtype=np.float64)
CLASSES = np.array([0, 1])


def _model() -> torch.nn.Module:
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 3, aux=True, class_names=NAMES)
    return well_conditioned_(model, seed=0, head_gain=1.0).train()  # spread scores: detections to compare


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR)).copy()
    img[10:50, 20:70] = (220, 40, 40)
    return img


IMAGES = [_image(100, 150, 0), _image(120, 90, 1), _image(96, 96, 2), _image(70, 160, 3)]


def _predict(predictor: Predictor, k: int) -> tuple[Any, ...]:
    dets = predictor(IMAGES[k])
    return dets, dict(dets.timing), predictor.timing  # the thread's own last call


def _explore(model: torch.nn.Module, k: int) -> Any:
    return explore_image(model, IMAGES[k], BOXES, CLASSES, img_size=96)


def _same_detections(a: Any, b: Any) -> None:
    assert len(a) == len(b) == 1 and len(a[0]) == len(b[0])
    torch.testing.assert_close(a[0].boxes, b[0].boxes, rtol=0, atol=1e-4)
    torch.testing.assert_close(a[0].scores, b[0].scores, rtol=0, atol=1e-6)
    assert torch.equal(a[0].labels, b[0].labels)


def _same_exploration(a: Any, b: Any) -> None:
    for la, lb in zip(a.levels, b.levels):
        np.testing.assert_allclose(la.lead_obj, lb.lead_obj, rtol=0, atol=1e-6)
        np.testing.assert_allclose(la.aux_obj, lb.aux_obj, rtol=0, atol=1e-6)
    assert a.box_summaries() == b.box_summaries()


def test_predictions_and_explorations_from_threads_equal_one_at_a_time() -> None:
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor(model, device="cpu", img_size=96, nms=NmsConfig(conf=0.05))
    sequential_pred = [_predict(predictor, k)[0] for k in range(len(IMAGES))]
    sequential_exp = [_explore(model, k) for k in range(len(IMAGES))]
    assert sum(len(d[0]) for d in sequential_pred) > 0

    # a watcher sees every train/eval switch of the shared model while the threads run
    stop, switched = threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            if not all(m.training for m in model.modules()):
                switched.append(True)

    watcher = threading.Thread(target=watch)
    watcher.start()
    jobs = [("predict", k) for k in range(len(IMAGES))] + [("explore", k) for k in range(len(IMAGES))]
    jobs = jobs * 3
    random.Random(0).shuffle(jobs)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                pool.submit(_predict, predictor, k) if kind == "predict" else pool.submit(_explore, model, k)
                for kind, k in jobs
            ]
            results = [f.result() for f in futures]
    finally:
        stop.set()
        watcher.join()
    assert not switched, "the shared model was switched out of training mode while other threads used it"
    twin = copy.deepcopy(predictor)  # e.g. a UI's per-session state: the per-thread timings stay behind
    assert twin.timing == {} and len(twin(IMAGES[0])[0]) == len(sequential_pred[0][0])
    for (kind, k), result in zip(jobs, results):
        if kind == "predict":
            dets, timing, thread_timing = result
            _same_detections(dets, sequential_pred[k])
            assert timing["images"] == 1.0 and timing["inference_ms"] > 0
            assert thread_timing == timing  # Predictor.timing is per thread: this thread's own last call
        else:
            _same_exploration(result, sequential_exp[k])
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():  # BatchNorm statistics were never updated
        assert torch.equal(v, state[k]), k


def test_library_calls_leave_process_wide_state_alone(tmp_path: Path) -> None:
    """After predictions, explorations and assignment statistics, the global RNGs, the environment, grad mode and
    the thread count are what they were before."""
    model = _model()
    from core.data import check_dataset, load_dataset, make_demo_dataset

    data = check_dataset(load_dataset(make_demo_dataset(tmp_path / "demo", n_images=4, img_size=96)), decode=False)
    small = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), data.dataset.num_classes, aux=True)
    # building the deploy network draws its (then overwritten) initial weights from the global torch RNG, as any
    # model construction does; the per-request calls below draw nothing
    predictor = Predictor(model, device="cpu", img_size=96)
    rng_before = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    env_before, threads_before = dict(os.environ), torch.get_num_threads()
    predictor(IMAGES[:2])
    explore_image(model, Image.fromarray(IMAGES[0]), BOXES, CLASSES, img_size=96)
    assignment_stats(small, data.dataset, "all", img_size=96, batch_size=2)
    assert torch.equal(torch.get_rng_state(), rng_before[0])
    np_state = np.random.get_state()
    assert np_state[0] == rng_before[1][0] and np.array_equal(np_state[1], rng_before[1][1])
    assert random.getstate() == rng_before[2]
    assert dict(os.environ) == env_before and torch.get_num_threads() == threads_before
    assert torch.is_grad_enabled()


def _in_thread(fn: Any) -> Any:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.parametrize("flushed_before", [False, True])
def test_predictor_flushes_denormals_only_during_its_calls(flushed_before: bool) -> None:
    """Denormal flushing is a per-thread CPU setting: on during the call (the network sees it), restored after;
    constructing a predictor changes nothing. Runs in fresh threads so other tests' settings do not matter."""
    model = _model()

    def scenario() -> tuple[bool, bool, list[bool], bool]:
        torch.set_flush_denormal(flushed_before)
        predictor = Predictor(model, device="cpu", img_size=96, check=False)
        after_init = _denormals_flushed()
        seen: list[bool] = []
        predictor.model.model[0].register_forward_hook(lambda m, i, o: seen.append(_denormals_flushed()))
        predictor(IMAGES[0])
        after_call = _denormals_flushed()
        with flush_denormals(False):
            in_disabled_block = _denormals_flushed()
        return after_init, after_call, seen, in_disabled_block

    after_init, after_call, seen, in_disabled_block = _in_thread(scenario)
    assert after_init == flushed_before and after_call == flushed_before
    assert seen == [True]
    assert in_disabled_block == flushed_before  # flush_denormals(False) changes nothing
    assert _in_thread(lambda: Predictor(model, device="cpu", img_size=96, check=False, flush_denormal=False)(
        IMAGES[0]) is not None)  # fmt: skip


def test_figure_export_hands_kaleido_the_browser_without_touching_the_environment(monkeypatch, tmp_path) -> None:
    import kaleido
    import plotly.graph_objects as go

    import core.data.figures as figures
    from core.explore.export import write_pngs

    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(figures.shutil, "which", lambda name: "/opt/fake/chromium" if name == "chromium" else None)
    calls: list[tuple[list, dict]] = []
    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", lambda specs, kopts: calls.append((specs, kopts)))
    env_before = dict(os.environ)
    fig = go.Figure(go.Bar(x=[1, 2], y=[3, 4]), layout={"width": 300, "height": 200})
    assert figures.ensure_browser_path() == "/opt/fake/chromium"
    assert write_pngs([fig], [tmp_path / "a.png"]) is None
    assert figures.write_pngs([fig, fig], [tmp_path / "b.png", tmp_path / "c.png"], [400, 500], [100, 120]) is None
    assert dict(os.environ) == env_before and "BROWSER_PATH" not in os.environ
    assert [k["path"] for _, k in calls] == ["/opt/fake/chromium"] * 2
    assert [(s["path"].name, s["opts"]["width"], s["opts"]["height"]) for s in calls[0][0]] == [("a.png", 300, 200)]
    assert [(s["path"].name, s["opts"]["width"]) for s in calls[1][0]] == [("b.png", 400), ("c.png", 500)]
    monkeypatch.setenv("BROWSER_PATH", "/usr/local/bin/my-chrome")  # the user's choice wins
    assert figures.ensure_browser_path() == "/usr/local/bin/my-chrome"
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setattr(figures.shutil, "which", lambda name: None)
    assert "no Chrome/Chromium found" in (write_pngs([fig], [tmp_path / "d.png"]) or "")
