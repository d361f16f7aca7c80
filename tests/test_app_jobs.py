"""The job runner (app.jobs) and the Fine-tune tab's helpers (app.services.training), without a browser.

Real training processes run yolov7-tiny at width 0.25 on a 12-image demo dataset at 64 px (marked slow); the
queue, state and refusal logic is also tested with stand-in processes that only sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.jobs import JobError, JobRunner, TrainRequest, format_eta
from app.services import training as T
from app.workspace import Workspace
from core.data.demo import make_demo_dataset

TINY = {
    "dataset": "upload:tiny",
    "variant": "yolov7-tiny",
    "aux": True,
    "checkpoint": None,
    "epochs": 1,
    "img": 64,
    "batch": 4,
    "width": 0.25,
    "workers": 0,
}
ENDED = ("finished", "stopped", "failed", "died")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path / "ws", allowed_roots=[tmp_path])
    make_demo_dataset(w.datasets_dir / "tiny", n_images=12, img_size=96)
    return w


@pytest.fixture
def runners():
    """Runners made by a test; their training processes are killed at the end."""
    made: list[JobRunner] = []
    yield made
    for r in made:
        r.close()
        for job in r.list_jobs():
            if job["state"] in ("starting", "running"):
                r.kill(job["name"])


def _runner(ws: Workspace, runners: list[JobRunner]) -> JobRunner:
    r = JobRunner(ws, poll_interval=None, threads=1)
    runners.append(r)
    return r


def _wait(runner: JobRunner, name: str, states: tuple[str, ...], timeout: float = 420.0) -> dict:
    t0 = time.time()
    while True:
        runner.poll()
        st = runner.status(name)
        if st["state"] in states:
            return st
        assert st["state"] not in tuple(s for s in ENDED if s not in states), st["log_tail"]
        assert time.time() - t0 < timeout, f"{name} still {st['state']} after {timeout} s: {st['log_tail']}"
        time.sleep(1.0)


def _sleeper(run_root: Path, seconds: int = 120) -> subprocess.Popen:
    """A stand-in training process: its command line names the run directory, as the runner's children do."""
    return subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep({seconds})", str(run_root)], start_new_session=True
    )


def _fake_running(ws: Workspace, name: str) -> subprocess.Popen:
    root = ws.runs_dir / name
    root.mkdir(parents=True)
    proc = _sleeper(root)
    (root / "job.json").write_text(json.dumps({"name": name, "pid": proc.pid, "request": TINY}))
    return proc


# -- requests ----------------------------------------------------------------------------------------------------
def test_request_flags_follow_the_recipe(tmp_path: Path) -> None:
    req = TrainRequest(epochs=50, img=320, batch=16, checkpoint="demo", recipe="small-data", aux=True)
    args = req.to_args(tmp_path / "data.yaml", tmp_path / "w.pt", tmp_path / "run")
    joined = " ".join(args)
    assert args[0] == "train" and "--aux" in args and "--weights" in args
    assert "--optimizer adamw --set lr0=0.002 --nbs 16 --warmup-min-iters 100 --close-mosaic 10" in joined
    official = TrainRequest(epochs=3, recipe="official", aux=False, checkpoint=None).to_args(
        tmp_path / "d", None, tmp_path / "r"
    )
    assert "--no-aux" in official and "--weights" not in official
    assert " ".join(official).endswith("--optimizer sgd --nbs 64 --warmup-min-iters 1000")
    assert "--close-mosaic" not in TrainRequest(epochs=4).to_args(tmp_path, None, tmp_path)  # 4 // 5 = 0


@pytest.mark.parametrize(
    "bad, word",
    [({"epochs": 0}, "epochs"), ({"img": 100}, "multiple of 32"), ({"recipe": "magic"}, "recipe"), ({"zz": 1}, "zz")],
)
def test_bad_requests_are_refused_with_a_reason(ws: Workspace, runners: list, bad: dict, word: str) -> None:
    r = _runner(ws, runners)
    with pytest.raises(JobError, match=word):
        r.start({**TINY, **bad})
    assert r.queue() == [] and ws.list_runs() == []


def test_unknown_dataset_or_checkpoint_is_refused(ws: Workspace, runners: list) -> None:
    r = _runner(ws, runners)
    with pytest.raises(JobError, match="unknown dataset"):
        r.start({**TINY, "dataset": "upload:nope"})
    with pytest.raises(JobError, match="unknown checkpoint"):
        r.start({**TINY, "checkpoint": "run:nope"})
    with pytest.raises(JobError, match="invalid run name"):
        r.start({**TINY, "name": "../escape"})
    assert r.queue() == [] and ws.list_runs() == []


# -- queue and states with stand-in processes ---------------------------------------------------------------------
def test_queue_is_fifo_on_disk_and_survives_a_new_runner(ws: Workspace, runners: list) -> None:
    busy = _fake_running(ws, "busy")
    try:
        r = _runner(ws, runners)
        assert r.state("busy") == "starting" and r.poll() == "busy"
        for i, name in enumerate(("x", "y", "z")):
            st = r.start({**TINY, "name": name})
            assert st["state"] == "queued" and st["queue_position"] == i + 1
        assert [f.name.split("-", 1)[1] for f in sorted(ws.queue_dir.glob("*.json"))] == ["x.json", "y.json", "z.json"]
        again = _runner(ws, runners)  # a studio restart: the queue is read back from disk
        assert [(e["name"], e["position"]) for e in again.queue()] == [("x", 1), ("y", 2), ("z", 3)]
        assert again.poll() == "busy" and again.queue_names() == ["x", "y", "z"]  # nothing starts while busy
        with pytest.raises(JobError, match="exists already"):
            again.start({**TINY, "name": "y"})
        auto = again.start({**TINY, "epochs": 2})  # no name: one is made up
        assert auto["name"].startswith("yolov7-tiny-tiny-") and auto["queue_position"] == 4
        assert again.start({**TINY, "epochs": 2})["name"] == auto["name"]  # a double click queues nothing more
        assert again.stop(auto["name"])["state"] == "cancelled"
        assert again.stop("y")["state"] == "cancelled"
        assert [(e["name"], e["position"]) for e in r.queue()] == [("x", 1), ("z", 2)]
        assert r.status("z")["queue_position"] == 2
        jobs = {j["name"]: j for j in r.list_jobs()}
        assert jobs["x"]["state"] == "queued" and jobs["busy"]["state"] == "starting"
        r.stop("x"), r.stop("z")
        assert r.queue() == []
    finally:
        busy.kill()
        busy.wait()
    assert r.state("busy") == "died"  # the process is gone without a final status
    assert r.poll() is None and ws.list_runs() == [ws.runs_dir / "busy"]


def test_dead_and_failed_processes_are_reported(ws: Workspace, runners: list) -> None:
    r = _runner(ws, runners)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    died = ws.runs_dir / "died"
    died.mkdir(parents=True)
    (died / "job.json").write_text(json.dumps({"name": "died", "pid": gone.pid, "request": TINY}))
    (died / "status.json").write_text(json.dumps({"state": "running", "pid": gone.pid, "epoch": 3, "epochs": 9}))
    st = r.status("died")
    assert st["state"] == "died" and "without a final status" in st["message"]
    foreign = ws.runs_dir / "cli_run"  # started from the command line: no job.json, only status.json
    foreign.mkdir()
    (foreign / "status.json").write_text(json.dumps({"state": "running", "pid": gone.pid, "updated": time.time()}))
    assert r.state("cli_run") == "died"
    failed = ws.runs_dir / "failed"
    failed.mkdir()
    (failed / "job.json").write_text(json.dumps({"name": "failed", "pid": gone.pid, "returncode": 2}))
    (failed / "process.log").write_text("Traceback ...\nerror: no such option --frobnicate\n")
    st = r.status("failed")
    assert st["state"] == "failed" and "--frobnicate" in st["log_tail"] and "exited with code 2" in st["message"]
    with pytest.raises(JobError, match="no run"):
        r.status("nope")
    with pytest.raises(JobError, match="no run"):
        r.stop("nope")


def test_refused_double_start_leaves_the_run_untouched(ws: Workspace, runners: list) -> None:
    root = ws.runs_dir / "done"
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "best.pt").write_bytes(b"weights")
    (root / "status.json").write_text(json.dumps({"state": "finished", "epoch": 1, "epochs": 1}))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    r = _runner(ws, runners)
    with pytest.raises(JobError, match="exists already"):
        r.start({**TINY, "name": "done"})
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()} == before
    assert r.queue() == [] and r.state("done") == "finished"
    assert "nothing to stop" in r.stop("done")["message"]


# -- helpers of the tab ---------------------------------------------------------------------------------------------
ROWS = [
    {"epoch": 1, "box": 0.1, "obj": 0.02, "cls": 0.03, "aux_box": 0.05, "aux_obj": 0.01, "aux_cls": 0.02,
     "mAP50": float("nan"), "mAP50-95": float("nan")},
    {"epoch": 2, "box": 0.08, "obj": 0.02, "cls": 0.02, "aux_box": 0.04, "aux_obj": 0.01, "aux_cls": 0.01,
     "mAP50": 0.5, "mAP50-95": 0.3, "AP50/a": 0.6, "AP50-95/a": 0.4, "AP50/b": float("nan"), "AP50-95/b": 0.1},
]  # fmt: skip


def test_figures_show_lead_and_aux_losses_map_and_per_class_ap() -> None:
    fig = T.losses_figure(ROWS, live={"box": 0.07, "aux_box": 0.03})
    names = [t.name for t in fig.data]
    assert {"lead box", "aux box", "lead obj", "aux obj", "lead cls", "aux cls"} <= set(names)
    assert [t.line.dash for t in fig.data if t.name == "aux box"] == ["dash"]
    live = [t for t in fig.data if t.name == "lead box (epoch in progress)"][0]
    assert list(live.x) == [3.0] and list(live.y) == [0.07]
    no_aux = T.losses_figure([{**r, "aux_box": 0, "aux_obj": 0, "aux_cls": 0} for r in ROWS])
    assert not any(t.name.startswith("aux") for t in no_aux.data)
    m = T.map_figure(ROWS)
    assert [t.name for t in m.data][:2] == ["mAP50", "mAP50-95"] and list(m.data[0].y) == [None, 0.5]
    assert T.per_class_ap(ROWS) == {"a": {"AP50": 0.6, "AP50-95": 0.4}, "b": {"AP50": None, "AP50-95": 0.1}}
    bars = T.per_class_figure(ROWS)
    assert list(bars.data[0].x) == ["a", "b"] and list(bars.data[1].y) == [0.4, 0.1]
    assert T.map_figure([]).layout.annotations[0].text == "no evaluation yet"
    assert T.losses_figure([]).layout.annotations[0].text == "no epoch finished yet"


def test_progress_text_and_eta() -> None:
    text = T.progress_text(
        {"name": "r", "state": "running", "epoch": 1, "epochs": 5, "step": 2, "steps": 3, "images_per_s": 12.5,
         "eta": format_eta(75), "metrics": {"mAP50": 0.5, "mAP50-95": 0.25}, "message": "epoch 2/5"}
    )  # fmt: skip
    assert "epoch 2/5" in text and "step 2/3" in text and "12.5 images/s" in text and "ETA 1m 15s" in text
    assert "mAP50 0.500" in text
    assert "position 2 in the queue" in T.progress_text({"name": "q", "state": "queued", "queue_position": 2})
    assert format_eta(3725) == "1h 02m" and format_eta(None) == ""


def test_export_deploy_and_onnx_are_checked_and_cached(tmp_path: Path) -> None:
    from core.checkpoint.io import save_checkpoint
    from core.models import build_model, get_spec, scale_width

    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.25), 2, aux=True, class_names=["a", "b"])
    run = tmp_path / "runs" / "r1"
    source = save_checkpoint(run / "weights" / "best.pt", model.eval())
    out = T.export_run(run, source, "deploy", img=64)
    assert out["passed"] and not out["cached"] and Path(out["path"]).is_file()
    assert "PASSED" in out["check"] and Path(out["path"]).name == "r1_deploy.pt"
    assert T.export_run(run, source, "deploy", img=64)["cached"]
    pytest.importorskip("onnxruntime", reason="ONNX export needs the 'export' extra")
    onnx = T.export_run(run, source, "onnx", img=64)
    assert onnx["passed"] and "PASSED" in onnx["check"] and "[1,3,64,64]" in onnx["check"]
    assert T.export_paths(run)["onnx"].is_file()
    with pytest.raises(ValueError, match="unknown download"):
        T.export_run(run, source, "tflite")


# -- real training processes ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_finetune_runs_to_finished_and_the_next_request_follows_then_stops(ws: Workspace, runners: list) -> None:
    r = _runner(ws, runners)
    first = r.start({**TINY, "name": "first"})
    assert first["state"] == "starting" and first["queue_position"] == 0
    second = r.start({**TINY, "name": "second", "epochs": 40, "checkpoint": None})
    assert second["state"] == "queued" and second["queue_position"] == 1
    assert (ws.runs_dir / "second").exists() is False  # waits in the queue, not in runs/
    with pytest.raises(JobError, match="exists already"):
        r.start({**TINY, "name": "first"})
    pid = r.status("first")["pid"]
    assert os.getsid(pid) == pid != os.getsid(0)  # its own session: the studio's Ctrl-C does not reach it
    done = _wait(r, "first", ("finished",))
    assert done["pid"] == pid and done["epoch"] == 1 and len(done["results"]) == 1
    assert done["files"]["best"].endswith("weights/best.pt") and done["results"][0]["mAP50"] is not None
    assert "aux_box" in done["results"][0] and done["metrics"]["mAP50"] is not None
    assert "run:first" in [c.id for c in ws.list_checkpoints()]
    running = _wait(r, "second", ("running",))
    assert running["queue_position"] == 0 and r.queue() == []

    # a studio restart: a new runner re-attaches to the running process and can stop it
    r.close()
    again = _runner(ws, runners)
    assert again.poll() == "second" and again.state("second") == "running"
    assert again.status("second")["pid"] == running["pid"]
    stopping = again.stop("second")
    assert stopping["state"] == "running" and (ws.runs_dir / "second" / "STOP").exists()
    ended = _wait(again, "second", ("stopped",))
    assert ended["files"]["last"].endswith("weights/last.pt") and "stop requested" in ended["message"]

    deploy = again.export("first", "deploy")
    assert deploy["passed"] and "PASSED" in deploy["check"]
    assert again.status("first")["files"]["deploy"] == deploy["path"]


@pytest.mark.slow
def test_a_run_on_a_bad_dataset_fails_with_its_log_tail(ws: Workspace, runners: list) -> None:
    broken = ws.datasets_dir / "broken"
    broken.mkdir()
    (broken / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a]\n")
    r = _runner(ws, runners)
    r.start({**TINY, "dataset": "upload:broken", "name": "bad"})
    st = _wait(r, "bad", ("failed",), timeout=240)
    assert "broken" in st["log_tail"] and st["message"]
    t0 = time.time()
    while (st := r.status("bad"))["returncode"] is None and time.time() - t0 < 60:
        r.poll()  # the process writes its final status, then exits
        time.sleep(0.5)
    assert st["returncode"] not in (None, 0) and st["state"] == "failed"


@pytest.mark.slow
def test_stop_while_starting_ends_stopped(ws: Workspace, runners: list) -> None:
    r = _runner(ws, runners)
    r.start({**TINY, "name": "early", "epochs": 30})
    assert r.stop("early")["state"] in ("starting", "running")  # before the trainer took its directory
    st = _wait(r, "early", ("stopped",))
    assert st["files"]["last"].endswith("weights/last.pt") and st["epoch"] < 30
