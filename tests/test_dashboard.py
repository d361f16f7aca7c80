"""The Streamlit dashboard: its data functions, and every page through ``streamlit.testing.v1.AppTest``.

Runs are fake run directories written with ``core.train.RunDir``'s own writers (status.json, results.csv rows) in
a temporary workspace holding a copy of the demo dataset; one slow test trains for real through the job runner.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.dashboard.cli import command
from app.services import dashboard_datasets as DD
from app.services import dashboard_runs as R
from app.workspace import Workspace
from core.train import RunDir

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "dashboard" / "app.py"
CLASSES = ("circle", "square", "triangle", "cross")
TIMEOUT = 300  # first runs import torch and build figures on a shared 2-core machine


# -- fixtures --
@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset, generated once per module (copied into each test's workspace)."""
    ws = Workspace(tmp_path_factory.mktemp("demo_ws"))
    ws.ensure_demo()
    return ws.demo_dataset_dir


@pytest.fixture
def ws(tmp_path: Path, demo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    root = tmp_path / "ws"
    (root / "datasets").mkdir(parents=True)
    shutil.copytree(demo_copy, root / "datasets" / "demo")
    (root / ".demo_run_seeded").touch()  # these tests count runs: no copy of the shipped demo run
    monkeypatch.setenv("YOLOV7_DASHBOARD_WORKSPACE", str(root))
    monkeypatch.delenv("YOLOV7_DASHBOARD_RUNS", raising=False)
    return Workspace(root)


def row(epoch: int, quality: float, nc: int = 4) -> dict[str, Any]:
    """One results.csv row as training writes it (lead and aux losses, lr, P/R, mAPs, per-class AP)."""
    r: dict[str, Any] = {
        "epoch": epoch, "box": 0.1 / epoch, "obj": 0.02, "cls": 0.03, "aux_box": 0.04 / epoch, "aux_obj": 0.01,
        "aux_cls": 0.01, "total": 0.2 / epoch, "lr0": 0.01 / epoch, "lr1": 0.01 / epoch, "lr2": 0.05 / epoch,
        "precision": 0.5, "recall": 0.4, "mAP50": round(quality * epoch, 4), "mAP50-95": round(quality * epoch / 2, 4),
    }  # fmt: skip
    for k, c in enumerate(CLASSES[:nc]):
        r[f"AP50/{c}"] = round(quality * epoch * (k + 1) / nc, 4)
        r[f"AP50-95/{c}"] = round(quality * epoch * (k + 1) / (2 * nc), 4)
    return r


def make_run(
    root: Path, name: str, epochs_done: int, *, state: str = "finished", quality: float = 0.1, epochs: int = 5,
    model: str = "yolov7-tiny", status: bool = True, latency: float | None = None,
) -> RunDir:  # fmt: skip
    run = RunDir(root / name).create()
    config = {
        "config": {"model": model, "width": 0.25, "aux": True, "epochs": epochs, "data": "/x/demo/data.yaml"},
        "hyp": {"lr0": 0.01, "mosaic": 1.0},
        "model": {"name": model, "aux": True, "num_classes": 4, "class_names": list(CLASSES)},
    }
    run.config.write_text(json.dumps(config))
    for e in range(1, epochs_done + 1):
        run.append_result(row(e, quality))
    if status:
        run.write_status(state, epoch=epochs_done, epochs=epochs, message="done" if state == "finished" else "")
    if latency is not None:
        (run.root / "metrics.json").write_text(json.dumps({"speed_ms_per_image": {"inference": latency}}))
    run.log(f"epoch {epochs_done}/{epochs} done")
    return run


def app_test(page: str | None = None) -> Any:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: Any) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [c.value for c in at.caption] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def metrics(at: Any) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: Any, column: str) -> Any:
    """The first table on the page with this column (st.dataframe keeps no key without selections)."""
    for df in at.dataframe:
        value = df.value
        if column in value.columns or column == value.index.name:
            return value
    raise AssertionError(f"no table with a {column!r} column")


def charts(at: Any) -> list[Any]:
    return list(at.get("plotly_chart"))


# -- data functions --
def test_summary_equals_results_csv(tmp_path: Path) -> None:
    make_run(tmp_path, "a", 4, quality=0.1, latency=3.0)
    refs, problems = R.find_runs(tmp_path, [])
    assert problems == [] and [r.name for r in refs] == ["a"]
    s = R.summarize(refs[0])
    rows = RunDir(tmp_path / "a").read_results()
    best = max(rows, key=lambda r: 0.1 * r["mAP50"] + 0.9 * r["mAP50-95"])
    assert (s.best_map50, s.best_map, s.best_epoch) == (best["mAP50"], best["mAP50-95"], 4)
    assert (s.state, s.epoch, s.epochs, s.model, s.dataset, s.latency_ms) == (
        "finished", 4, 5, "yolov7-tiny ×0.25 +aux", "demo", 3.0
    )  # fmt: skip
    table = R.summary_row(s)
    assert table["epochs"] == "4/5" and table["problems"] == ""
    assert R.deploy_params("yolov7-tiny", 1.0, 4) == R.deploy_params("yolov7-tiny", 1.0, 4) > 5_000_000


def test_signature_changes_when_the_run_writes(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", 2, state="running")
    before = R.signature(run.root)
    time.sleep(0.01)
    run.append_result(row(3, 0.1))
    assert R.signature(run.root) != before


def test_bad_run_folders_are_problems_not_exceptions(tmp_path: Path) -> None:
    run = make_run(tmp_path, "cut", 3)
    text = run.results.read_text()
    run.results.write_text(text[: len(text) - 40])  # the last row cut short
    make_run(tmp_path, "nostatus", 2, status=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "status.json").write_text("{not json")
    refs, problems = R.find_runs(tmp_path, [tmp_path / "missing"])
    assert problems == [f"{tmp_path / 'missing'}: no such folder (given with --runs)"]
    by = {r.name: R.summarize(r) for r in refs}
    assert by["cut"].epoch == 3 and any("results.csv line 4: cut short" in p for p in by["cut"].problems)
    rows, _ = R.read_results(tmp_path / "cut")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert any(p.startswith("status.json: missing") for p in by["nostatus"].problems)
    assert by["nostatus"].state == "unknown" and by["nostatus"].best_epoch == 2
    assert any(p.startswith("status.json: unreadable") for p in by["junk"].problems)


def test_compare_tables(tmp_path: Path) -> None:
    for name, q in (("a", 0.1), ("b", 0.15)):
        make_run(tmp_path, name, 3, quality=q)
    runs = {n: R.read_results(tmp_path / n)[0] for n in ("a", "b")}
    table = R.per_class_table(runs, "AP50-95")
    assert [t["class"] for t in table] == list(CLASSES)
    assert all(t["best run"] == "b" for t in table)
    assert table[3]["b"] == pytest.approx(0.15 * 3 * 4 / 8, abs=1e-4)
    assert R.best_epochs(runs)[1] == {"run": "b", "best epoch": 3, "mAP50": 0.45, "mAP50-95": 0.225, "epochs run": 3}
    fig = R.compare_curves(runs, "mAP50-95", {"a": 3, "b": 3})
    assert [t.name for t in fig.data if t.mode == "lines"] == ["a", "b"]


def test_dataset_path_and_sample_filters(ws: Workspace) -> None:
    with pytest.raises(DD.DataError, match="no such file or folder"):
        DD.check(ws, "path:/nowhere/data.yaml")
    ds = DD.load(ws, "demo")
    names = list(ds.class_names)
    squares = DD.filter_images(list(ds.images), names, classes=["square"], split="val")
    assert squares and all(r.split == "val" and 1 in r.classes.tolist() for r in squares)
    img = DD.draw_sample(squares[0], names, size=128)
    assert max(img.size) == 128


def test_cli_command_binds_localhost() -> None:
    import argparse

    from app.cli import main  # noqa: F401 - the command is registered there

    args = argparse.Namespace(workspace="w", runs=["r1"], host="127.0.0.1", port=8601)
    cmd = command(args)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and cmd[cmd.index("--server.port") + 1] == "8601"
    assert cmd[cmd.index("--workspace") + 1] == str(Path("w").resolve())
    assert cmd[-1] == str(Path("r1").resolve())


# -- pages (AppTest) --
def test_runs_page_table_and_run_page(ws: Workspace) -> None:
    make_run(ws.runs_dir, "alpha", 3, quality=0.1)
    make_run(ws.runs_dir, "beta", 5, quality=0.12, latency=4.0)
    make_run(ws.runs_dir, "gamma", 2, quality=0.05, state="stopped")
    at = app_test()
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["alpha", "beta", "gamma"]
    assert dict(zip(table["run"], table["state"], strict=True)) == {
        "alpha": "finished", "beta": "finished", "gamma": "stopped"
    }  # fmt: skip
    beta = table[table["run"] == "beta"].iloc[0]
    assert beta["best mAP50"] == pytest.approx(0.6) and beta["best epoch"] == 5 and beta["epochs"] == "5/5"
    at.selectbox(key="run_pick").select("alpha").run()
    last = RunDir(ws.runs_dir / "alpha").read_results()[-1]
    m = metrics(at)
    assert m["epoch"] == "3/5" and m["state"] == "finished"
    assert m["mAP50 (last evaluation)"] == f"{last['mAP50']:.4f}"
    assert m["mAP50-95 (last evaluation)"] == f"{last['mAP50-95']:.4f}"
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in charts(at)]
    assert any("lead head solid" in t for t in titles) and "learning rate per epoch" in titles
    assert any("per-class AP" in t for t in titles)
    assert "epoch 3/5 done" in "\n".join(c.value for c in at.code)
    assert at.json, "hyperparameters and resolved config"


def test_runs_page_follows_a_run_that_progresses(ws: Workspace) -> None:
    run = make_run(ws.runs_dir, "live", 2, state="running", epochs=10)
    at = app_test()
    assert metrics(at)["epoch"] == "2/10" and metrics(at)["state"] == "running"
    assert at.button(key="stop_run")  # a live run has its Stop button
    # another process appends the next epoch, as the trainer does
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from core.train import RunDir; from tests.test_dashboard import "
        "row; RunDir(sys.argv[2]).append_result(row(3, 0.1))"
    )
    subprocess.run([sys.executable, "-c", code, str(REPO), str(run.root)], check=True, timeout=120)
    at.run()  # the fragment's refresh tick
    m = metrics(at)
    assert m["epoch"] == "3/10" and m["mAP50 (last evaluation)"] == f"{0.3:.4f}"


def test_runs_page_stop_button_uses_the_job_runner(ws: Workspace) -> None:
    run = make_run(ws.runs_dir, "live", 1, state="running", epochs=10)
    at = app_test()
    at.button(key="stop_run").click().run()
    assert not at.exception
    assert run.stop_requested()  # the STOP file the trainer honours


def test_runs_page_shows_died_and_bad_runs(ws: Workspace) -> None:
    dead = make_run(ws.runs_dir, "dead", 2, state="running")
    status = json.loads(dead.status_file.read_text())
    status.update(pid=2**22 + 12345, heartbeat=time.time() - 3600)
    dead.status_file.write_text(json.dumps(status))
    cut = make_run(ws.runs_dir, "cut", 3)
    cut.results.write_text(cut.results.read_text()[:-40])
    make_run(ws.runs_dir, "nostatus", 2, status=False)
    at = app_test()
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["dead", "state"] == "died"
    assert "results.csv line 4: cut short" in table.loc["cut", "problems"]
    assert table.loc["nostatus", "problems"].startswith("status.json: missing")
    at.selectbox(key="run_pick").select("cut").run()
    assert not at.exception and "results.csv line 4" in texts(at)
    assert metrics(at)["epoch"] == "2/5"
    at.selectbox(key="run_pick").select("nostatus").run()
    assert not at.exception and metrics(at)["state"] == "unknown"


def test_runs_page_shows_extra_run_folders(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    make_run(elsewhere, "ext1", 2)
    make_run(elsewhere, "ext2", 3)
    make_run(ws.runs_dir, "own", 1)
    monkeypatch.setenv("YOLOV7_DASHBOARD_RUNS", os.pathsep.join([str(elsewhere), str(tmp_path / "gone")]))
    at = app_test()
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["elsewhere/ext1", "elsewhere/ext2", "own"]
    assert f"{tmp_path / 'gone'}: no such folder (given with --runs)" in texts(at)
    at.selectbox(key="run_pick").select("elsewhere/ext2").run()
    assert metrics(at)["epoch"] == "3/5"


def test_runs_page_objectness_slider(ws: Workspace) -> None:
    """Objectness snapshots (``--objectness-every``) show as one figure with a slider over the epochs."""
    from core.explore import explore_image, write_snapshot
    from core.models import build_model, get_spec, scale_width

    run = make_run(ws.runs_dir, "snaps", 2)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.25), 4, aux=True).eval()
    rec = DD.load(ws, "demo").split("val")[0]
    (run.root / "objectness").mkdir()
    for epoch in (0, 2):
        exp = explore_image(model, rec.path, rec.boxes, rec.classes, img_size=64)
        write_snapshot(exp, run.root / "objectness" / f"epoch_{epoch:03d}.npz", epoch)
    at = app_test()
    at.selectbox(key="run_pick").select("snaps").run()
    assert not at.exception
    spec = json.loads(next(c for c in charts(at) if c.key == "convergence").proto.spec)
    steps = spec["layout"]["sliders"][0]["steps"]
    assert len(steps) == 2 and [s["label"] for s in steps][-1].endswith("2")


def test_runs_page_empty_workspace(ws: Workspace) -> None:
    at = app_test()
    assert "No runs yet" in texts(at)


def test_compare_page(ws: Workspace) -> None:
    make_run(ws.runs_dir, "small", 3, quality=0.1, latency=2.0)
    make_run(ws.runs_dir, "big", 3, quality=0.15, latency=6.0, model="yolov7")
    at = app_test("compare")
    assert set(at.multiselect(key="compare_runs").value) == {"small", "big"}
    figs = charts(at)
    assert len(figs) == 2
    tradeoff = json.loads(figs[1].proto.spec)
    points = {t["name"]: (t["x"][0], t["y"][0], t["marker"]["size"][0]) for t in tradeoff["data"]}
    assert points["yolov7 ×0.25 +aux"][:2] == (6.0, pytest.approx(0.225))
    assert points["yolov7 ×0.25 +aux"][2] > points["yolov7-tiny ×0.25 +aux"][2]  # more parameters, bigger bubble
    best = frame(at, "best epoch").set_index("run")
    assert best.loc["big", "best epoch"] == 3 and best.loc["big", "mAP50-95"] == pytest.approx(0.225)
    per_class = frame(at, "best run")
    assert list(per_class.index) == list(CLASSES) and set(per_class["best run"]) == {"big"}
    at.selectbox(key="compare_curve").select("aux_box").run()
    assert json.loads(charts(at)[0].proto.spec)["layout"]["title"]["text"] == R.CURVES["aux_box"]


def test_datasets_page_demo_and_bad_path(ws: Workspace) -> None:
    at = app_test("datasets")
    assert "demo" in at.markdown[0].value and "images" in at.markdown[0].value
    assert len(charts(at)) >= 4  # classes, boxes per image, box sizes vs anchors, levels
    assert frame(at, "BPR")["BPR"].between(0, 1).all()
    assert len(at.image) >= 1  # sample grid and augmentation preview
    labels = {m.label for m in at.metric}
    assert {"labels in", "labels out", "lost"} <= labels
    at.multiselect(key="grid_classes").select("cross").run()
    assert not at.exception
    at.text_input(key="dataset_path").input(str(ws.root / "no_such_dataset")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{ws.root / 'no_such_dataset'}: no such file or folder"]


def test_assignments_page_corrupt_checkpoint(ws: Workspace) -> None:
    (ws.checkpoints_dir / "broken.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    at = app_test("assignments")
    options = at.selectbox(key="as_checkpoint").options
    broken = next(o for o in options if o.startswith("broken.pt"))
    at.selectbox(key="as_checkpoint").select(broken).run()
    assert not at.exception
    assert any("broken.pt" in e.value for e in at.error)


@pytest.mark.slow
def test_assignments_page_statistics(ws: Workspace) -> None:
    at = app_test("assignments")
    at.number_input(key="as_max_images").set_value(10).run()
    at.button(key="as_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "10 images" in texts(at) and len(charts(at)) == 3
    groups = frame(at, "fine / box")
    assert {"all", "class", "size"} == set(groups["group"])


def test_launch_page_queues_behind_a_running_job(ws: Workspace) -> None:
    make_run(ws.runs_dir, "busy", 1, state="running")  # this process, alive: the runner waits for it
    at = app_test("launch")
    at.text_input(key="ln_name").input("next")
    at.number_input(key="ln_epochs").set_value(2)
    at.button[0].click().run()  # the form's submit button: the form's values go in together
    assert not at.exception
    assert "next: queued at position 1" in texts(at)
    queue = frame(at, "position")
    assert list(queue["run"]) == ["busy", "next"] and list(queue["position"]) == ["now", "1"]
    request = json.loads(next(ws.queue_dir.glob("*-next.json")).read_text())["request"]
    assert request["epochs"] == 2 and request["checkpoint"] == "demo" and request["name"] == "next"
    at.selectbox(key="ln_stop").select("next").run()
    at.button(key="ln_stop_btn").click().run()
    assert not list(ws.queue_dir.glob("*-next.json"))
    at.text_input(key="ln_name").input("bad name!")
    at.button[0].click().run()
    assert any("invalid run name" in e.value for e in at.error)


@pytest.mark.slow
def test_real_training_shows_on_the_dashboard(ws: Workspace) -> None:
    """A tiny real run through the job runner: the Runs page follows it to ``finished`` with results.csv's mAP."""
    from app.jobs import JobRunner

    jobs = JobRunner(ws, poll_interval=None, threads=1)
    jobs.start({"name": "real", "checkpoint": None, "epochs": 1, "img": 64, "batch": 16, "width": 0.25, "workers": 0})
    at = app_test()
    assert at.selectbox(key="run_pick").value == "real"
    deadline = time.time() + 900
    while jobs.state("real") in ("queued", "starting", "running") and time.time() < deadline:
        time.sleep(3)
    assert jobs.state("real") == "finished", jobs.status("real")["log_tail"]
    at.run()
    rows = RunDir(ws.runs_dir / "real").read_results()
    assert metrics(at)["state"] == "finished" and metrics(at)["epoch"] == "1/1" and len(rows) == 1
    assert metrics(at)["mAP50 (last evaluation)"] == f"{rows[-1]['mAP50']:.4f}"
    assert os.path.exists(ws.runs_dir / "real" / "weights" / "last.pt")
