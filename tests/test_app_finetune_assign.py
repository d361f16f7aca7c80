"""Label assignment in the no-code fine-tune (issue 16) and the start-checkpoint suggestion (issue 18).

``TrainRequest``'s ``assign`` / ``assign_bound`` / ``aux_wiring``: validation, the ``train`` flags, old queue files;
the form helper; the suggestion line; one real 2-step job (yolov7-tiny at width 0.25, 64 px, 12 images) whose run
records both options; ``/start_training`` through gradio_client and the dashboard's Launch page through AppTest
(both with a stand-in running job, so requests wait in the queue and nothing trains).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from app.jobs import JobError, JobRunner, TrainRequest
from app.modelcache import ModelCache
from app.services import training as T
from app.workspace import Workspace
from core.data import load_dataset
from core.data.demo import make_demo_dataset
from core.train import RunDir
from core.train.config import SMALL_DATASET_IMAGES

TINY = {
    "dataset": "upload:tiny", "variant": "yolov7-tiny", "aux": True, "checkpoint": None, "epochs": 1, "img": 64,
    "batch": 4, "width": 0.25, "workers": 0,
}  # fmt: skip
# the command line of a default request before these options existed: it must not change
OLD_ARGS = (
    "train --data d.yaml --model yolov7-tiny --out r --name r --aux --epochs 30 --img 320 --batch 16 --workers 2 "
    "--device auto --no-progress --weights w.pt --optimizer adamw --set lr0=0.002 --nbs 16 --warmup-min-iters 100 "
    "--close-mosaic 6"
)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path / "ws", allowed_roots=[tmp_path])
    make_demo_dataset(w.datasets_dir / "tiny", n_images=12, img_size=96)
    return w


def _args(req: TrainRequest) -> str:
    return " ".join(req.to_args(Path("d.yaml"), Path("w.pt"), Path("r")))


def _busy(ws: Workspace) -> None:
    """A run that this (alive) process claims to be training: the runner queues every request behind it."""
    RunDir(ws.runs_dir / "busy").create().write_status("running", epoch=0, epochs=5)


# -- the request ---------------------------------------------------------------------------------------------------
def test_defaults_keep_the_old_command_line_and_old_queue_files_load() -> None:
    req = TrainRequest()
    assert (req.assign, req.assign_bound, req.aux_wiring) == ("coarse-to-fine", None, "top-down")
    assert _args(req) == OLD_ARGS
    old_entry = {k: v for k, v in req.to_dict().items() if k not in ("assign", "assign_bound", "aux_wiring")}
    loaded = TrainRequest.from_dict(old_entry)  # a queue file written before these fields
    loaded.validate()
    assert loaded == req and _args(loaded) == OLD_ARGS


def test_new_options_become_train_flags() -> None:
    req = TrainRequest(assign="independent", aux_wiring="partial", checkpoint=None)
    req.validate()
    assert _args(req).replace(" --weights w.pt", "") == OLD_ARGS.replace(
        "--no-progress", "--no-progress --assign independent --aux-wiring partial"
    ).replace(" --weights w.pt", "")
    bounded = TrainRequest(assign="coarse-to-fine-bounded", assign_bound=1.5)
    bounded.validate()
    args = bounded.to_args(Path("d.yaml"), None, Path("r"))
    assert args[args.index("--assign") + 1] == "coarse-to-fine-bounded"
    assert args[args.index("--assign-bound") + 1] == "1.5" and "--aux-wiring" not in args
    no_bound = TrainRequest(assign="coarse-to-fine-bounded").to_args(Path("d"), None, Path("r"))
    assert "--assign-bound" not in no_bound  # the CLI's default, core.loss.DEFAULT_BOUND
    assert "--assign" in TrainRequest(assign="lead-guided").to_args(Path("d"), None, Path("r"))
    # a start checkpoint may be rewired: partial with a checkpoint is not refused here
    TrainRequest(checkpoint="demo", variant="yolov7-w6", aux_wiring="partial").validate()


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"assign": "magic"}, ["unknown assignment strategy 'magic'", "independent, lead-guided, coarse-to-fine, "]),
        ({"aux_wiring": "sideways"}, ["unknown auxiliary-head wiring 'sideways'", "top-down, partial"]),
        ({"aux": False, "aux_wiring": "partial"}, ["auxiliary head is off"]),
        ({"aux": False, "assign": "independent"}, ["auxiliary head is off"]),
        ({"checkpoint": None, "variant": "yolov7-e6e", "aux_wiring": "partial"}, ["P5 models", "yolov7-e6e"]),
        ({"assign": "coarse-to-fine-bounded", "assign_bound": -1.0}, ["must be a number >= 0"]),
        ({"assign": "coarse-to-fine-bounded", "assign_bound": float("nan")}, ["must be a number >= 0"]),
        ({"assign": "coarse-to-fine-bounded", "assign_bound": "2"}, ["must be a number >= 0"]),
        ({"assign_bound": 1.0}, ["no effect", "coarse-to-fine-bounded"]),
    ],
)
def test_bad_assignment_options_are_refused_before_anything_is_queued(
    ws: Workspace, bad: dict, words: list[str]
) -> None:
    with pytest.raises(JobError) as info:
        TrainRequest(**bad).validate()
    assert all(w in str(info.value) for w in words), str(info.value)
    runner = JobRunner(ws, poll_interval=None, threads=1)
    try:
        with pytest.raises(JobError):
            runner.start({**TINY, **bad})
        assert runner.queue() == [] and ws.list_runs() == []
    finally:
        runner.close()


def test_form_passes_the_options_only_with_the_aux_head() -> None:
    base = ("upload:x", "demo", False, "yolov7-tiny", True, 5, 320, 8, "small-data", "r")
    assert T.request_from_form(*base) == T.request_from_form(*base, "coarse-to-fine", 2.0, "top-down")
    assert "assign" not in T.request_from_form(*base)  # an old caller's request is what it was
    full = T.request_from_form(*base, "coarse-to-fine-bounded", 1.0, "partial")
    assert (full["assign"], full["assign_bound"], full["aux_wiring"]) == ("coarse-to-fine-bounded", 1.0, "partial")
    assert "assign_bound" not in T.request_from_form(*base, "independent", 3.0, "top-down")  # only for bounded
    assert "assign_bound" not in T.request_from_form(*base, "coarse-to-fine-bounded", None, "top-down")
    off = T.request_from_form(*base[:4], False, *base[5:], "independent", 1.0, "partial")
    assert not {"assign", "assign_bound", "aux_wiring"} & set(off)  # greyed out without the aux head
    TrainRequest.from_dict(full).validate()
    with pytest.raises(ValueError, match="the bound must be a number"):
        T.request_from_form(*base, "coarse-to-fine-bounded", "strong", "top-down")


# -- the start-checkpoint suggestion (issue 18) ----------------------------------------------------------------------
def test_suggestion_for_a_small_from_scratch_dataset_only(ws: Workspace) -> None:
    cache = ModelCache(max_entries=2)
    n_train = len(load_dataset(ws.dataset("upload:tiny").path).split("train"))
    assert 0 < n_train < SMALL_DATASET_IMAGES
    text = T.suggestion_for_form(ws, cache, "upload:tiny", "scratch", False)
    assert "start from a checkpoint: the demo checkpoint or an uploaded official yolov7-tiny.pt" in text
    assert f"From scratch, {n_train} training images reach only low accuracy in few epochs" in text
    assert T.suggestion_for_form(ws, cache, "upload:tiny", "demo", True) == text  # the box overrides the picker
    assert T.suggestion_for_form(ws, cache, "upload:tiny", "", False) == text  # no checkpoint picked
    assert T.suggestion_for_form(ws, cache, "upload:tiny", "demo", False) == ""  # a start checkpoint
    assert T.suggestion_for_form(ws, cache, "upload:nope", "scratch", False) == ""  # unreadable: no claim
    assert T.start_suggestion(SMALL_DATASET_IMAGES, True) == "" and T.start_suggestion(10, False) == ""
    assert "10 training images" in T.start_suggestion(10, True)


# -- a real job ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_real_job_with_independent_assignment_and_partial_wiring(ws: Workspace) -> None:
    runner = JobRunner(ws, poll_interval=None, threads=1)
    try:
        st = runner.start({**TINY, "name": "indep", "max_steps": 2, "assign": "independent", "aux_wiring": "partial"})
        job = json.loads((ws.runs_dir / "indep" / "job.json").read_text())
        assert job["request"]["assign"] == "independent" and job["request"]["aux_wiring"] == "partial"
        t0 = time.time()
        while (st := runner.status("indep"))["state"] not in ("finished", "stopped", "failed", "died"):
            runner.poll()
            assert time.time() - t0 < 420, f"still {st['state']}: {st['log_tail']}"
            time.sleep(1.0)
        assert st["state"] == "stopped" and "max_steps=2" in st["message"], st["log_tail"]  # how max_steps ends
        assert st["files"]["last"].endswith("weights/last.pt")
    finally:
        for j in runner.list_jobs():
            if j["state"] in ("starting", "running"):
                runner.kill(j["name"])
        runner.close()
    config = json.loads((ws.runs_dir / "indep" / "config.json").read_text())
    assert config["config"]["assign"] == "independent" and config["config"]["aux_wiring"] == "partial"
    assert config["assign"]["strategy"] == "independent" and config["assign"]["aux_wiring"] == "partial"
    assert config["assign"]["aux"] is True
    assert "independent" in (ws.runs_dir / "indep" / "train.log").read_text()


# -- the front ends --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_start_training_endpoint_takes_the_new_options_last(ws: Workspace) -> None:
    from gradio_client import Client

    from app.studio.app import launch

    _busy(ws)
    demo = launch(ws.root, port=_free_port(), block=False)
    try:
        client = Client(demo.local_url, verbose=False)
        params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_training"]
        names = [p["parameter_name"] for p in params["parameters"]]
        assert names[-3:] == ["assign", "assign_bound", "aux_wiring"] and names[:2] == ["dataset", "checkpoint"]
        assert all(p["parameter_has_default"] for p in params["parameters"][-3:])
        form = {
            "dataset": "upload:tiny", "checkpoint": "scratch", "from_scratch": False, "variant": "yolov7-tiny",
            "aux": True, "epochs": 1, "img": 64, "batch": 4, "recipe": "small-data",
        }  # fmt: skip
        old = client.predict(**form, name="old-caller", api_name="/start_training")  # without the new parameters
        new = client.predict(
            **form, name="new-caller", assign="coarse-to-fine-bounded", assign_bound=0.5, aux_wiring="partial",
            api_name="/start_training",
        )  # fmt: skip
        assert old["state"] == new["state"] == "queued"
        with pytest.raises(Exception, match="P5 models"):
            client.predict(
                **{**form, "variant": "yolov7-w6"}, name="p6", aux_wiring="partial", api_name="/start_training"
            )
        queued = {e["name"]: e["request"] for e in JobRunner(ws, poll_interval=None).queue()}
        assert set(queued) == {"old-caller", "new-caller"}
        assert queued["old-caller"]["assign"] == "coarse-to-fine" and queued["old-caller"]["assign_bound"] is None
        assert queued["old-caller"]["aux_wiring"] == "top-down"
        assert (queued["new-caller"]["assign"], queued["new-caller"]["assign_bound"]) == ("coarse-to-fine-bounded", 0.5)
        assert queued["new-caller"]["aux_wiring"] == "partial"
    finally:
        demo.close()


def test_dashboard_launch_page_sets_the_options_and_suggests_a_checkpoint(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("YOLOV7_DASHBOARD_WORKSPACE", str(ws.root))
    monkeypatch.delenv("YOLOV7_DASHBOARD_RUNS", raising=False)
    (ws.root / ".demo_run_seeded").touch()
    _busy(ws)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app/dashboard/app.py"), default_timeout=300)
    at.run()
    at.switch_page("views/launch.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.warning  # the demo checkpoint is the default start: no suggestion
    at.selectbox(key="ln_dataset").select("tiny (uploaded)").run()
    at.checkbox(key="ln_scratch").check().run()
    assert any("start from a checkpoint" in w.value for w in at.warning)
    assert "ln_assign_bound" not in [n.key for n in at.number_input]  # only for the bounded strategy
    at.radio(key="ln_assign").set_value("coarse-to-fine-bounded").run()
    at.number_input(key="ln_assign_bound").set_value(0.5)
    at.radio(key="ln_aux_wiring").set_value("partial")
    at.text_input(key="ln_name").input("assigned")
    at.button(key="ln_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    request = json.loads(next(ws.queue_dir.glob("*-assigned.json")).read_text())["request"]
    assert request["checkpoint"] is None and request["dataset"] == "upload:tiny"
    assert (request["assign"], request["assign_bound"], request["aux_wiring"]) == (
        "coarse-to-fine-bounded",
        0.5,
        "partial",
    )
    at.checkbox(key="ln_aux").uncheck().run()
    assert at.radio(key="ln_assign").disabled and at.radio(key="ln_aux_wiring").disabled
    at.checkbox(key="ln_scratch").uncheck().run()
    assert not at.warning  # a start checkpoint again: the suggestion goes
