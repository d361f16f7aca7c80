"""Study folders in the front ends (app.services.study_view) without a browser; ``/open_study`` and the FiftyOne
buttons on a launched studio (gradio_client); the dashboard's Compare page with a study (AppTest).

The study folders are written by hand in the agreed format (study.json, table.md, objectness.png, runs/<name>/ run
directories written with ``core.train.RunDir``): the format is the contract between the study command and the UIs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.services import fiftyone_launch as fol
from app.services import study_view as sv
from app.workspace import Workspace
from core.train import RunDir
from tests.test_dashboard import app_test, charts, frame, texts
from tests.test_dashboard import demo_copy as _demo_copy

CONDITIONS = ["none", "independent", "lead-guided", "coarse-to-fine"]
# AP/AP50 mean and std (fractions) per condition; the paper's numbers for three of them
SUMMARY = {
    "none": (0.20, 0.010, 0.40, 0.020),
    "independent": (0.22, 0.012, 0.43, 0.015),
    "lead-guided": (0.25, 0.005, 0.47, 0.010),
    "coarse-to-fine": (0.26, 0.020, 0.48, 0.030),
}
PAPER = {"none": (0.502, 0.687), "independent": (0.510, 0.695), "coarse-to-fine": (0.513, 0.699)}


def write_assignment_study(folder: Path, *, live: str | None = None) -> Path:
    """A 4-condition x 2-seed study; ``live``: the name of one run whose run directory says it is running."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for c in CONDITIONS:
        for seed in (0, 1):
            name = f"{c}_s{seed}"
            ap, _, ap50, _ = SUMMARY[c]
            done = name != live
            runs.append(
                {
                    "name": name, "condition": c, "seed": seed, "run_dir": f"runs/{name}",
                    "status": "finished" if done else "pending",
                    "metrics": {"AP": ap + 0.01 * seed, "AP50": ap50, "AP75": ap / 2, "APs": 0.0, "APm": ap,
                                "APl": ap} if done else None,
                }
            )  # fmt: skip
            if name == live:
                RunDir(folder / "runs" / name).create().write_status("running", epoch=2, epochs=5)
    summary = []
    for c in CONDITIONS:
        ap, ap_std, ap50, ap50_std = SUMMARY[c]
        entry: dict[str, Any] = {"condition": c, "n": 2}
        for m, mean, std in (("AP", ap, ap_std), ("AP50", ap50, ap50_std), ("AP75", ap / 2, 0.0)):
            entry[f"{m}_mean"], entry[f"{m}_std"] = mean, std
        for m in ("APs", "APm", "APl"):
            entry[f"{m}_mean"], entry[f"{m}_std"] = ap, 0.0
        summary.append(entry)
    paper = [
        {"condition": c, "AP": a, "AP50": b, "AP75": None, "source": "YOLOv7 paper, Table 8 (model YOLOv7)"}
        for c, (a, b) in PAPER.items()
    ]
    doc = {
        "kind": "assignment", "version": 1, "created": "2026-12-04T23:00:00+00:00",
        "settings": {"data": "demo", "model": "yolov7-tiny", "width": 0.25, "epochs": 5, "img": 160, "batch": 8,
                     "seeds": [0, 1], "strategies": CONDITIONS[1:], "aux_wiring": "top-down", "recipe": "small",
                     "split": "test"},
        "runs": runs, "summary": summary, "paper": paper, "figure": "objectness.png", "table": "table.md",
    }  # fmt: skip
    (folder / "study.json").write_text(json.dumps(doc))
    (folder / "table.md").write_text("| condition | AP |\n|---|---|\n")
    Image.new("RGB", (96, 48), (200, 40, 40)).save(folder / "objectness.png")
    return folder


def write_scaling_study(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"variant": v, "depth": d, "width": w, "params": p, "gflops": g, "channel_ratios": {"P3/P4": 0.5}, "metrics": m}
        for v, d, w, p, g, m in (
            ("compound", 1.5, 1.25, 60e6, 180.0, None),
            ("base", 1.0, 1.0, 36.9e6, 104.7, {"AP": 0.3, "AP50": 0.5}),
            ("width-only", 1.0, 1.25, 57e6, 163.0, None),
            ("depth-only", 1.5, 1.0, 45e6, 130.0, None),
        )
    ]
    doc = {"kind": "scaling", "version": 1, "settings": {"model": "yolov7", "depth": 1.5, "width": 1.25},
           "rows": rows, "table": "table.md"}  # fmt: skip
    (folder / "study.json").write_text(json.dumps(doc))
    (folder / "table.md").write_text("| variant |\n")
    return folder


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / ".demo_run_seeded").parent.mkdir(parents=True)
    (root / ".demo_run_seeded").touch()
    return Workspace(root, allowed_roots=[tmp_path])


# -- the service -----------------------------------------------------------------------------------------------------
def test_assignment_study_table_chart_figure_and_live_states(ws: Workspace) -> None:
    write_assignment_study(ws.root / "studies" / "abl", live="coarse-to-fine_s1")
    view = sv.open_study(ws, "studies/abl")
    assert view.kind == "assignment" and view.id == "studies/abl" and view.path == ws.root / "studies" / "abl"
    assert view.headers[:4] == ["condition", "runs", "AP (%)", "AP50 (%)"] and view.headers[-3:] == [
        "paper AP",
        "paper AP50",
        "paper AP75",
    ]
    table = {row[0]: row for row in view.rows}
    assert [row[0] for row in view.rows] == CONDITIONS  # the paper's order, baseline first
    assert table["coarse-to-fine"][2:4] == ["26.0 ± 2.0", "48.0 ± 3.0"]
    assert table["coarse-to-fine"][-3:] == ["51.3", "69.9", "–"]
    assert table["lead-guided"][-3:] == ["–", "–", "–"]  # no paper number for it in this file
    # the chart: our means with the spread as error bars, the paper's values as markers, in percent
    bars = [t for t in view.figure.data if t.type == "bar"]
    marks = [t for t in view.figure.data if t.type == "scatter"]
    assert len(bars) == 2 and len(marks) == 2
    assert list(bars[0].x) == CONDITIONS
    assert list(bars[0].y) == pytest.approx([100 * SUMMARY[c][0] for c in CONDITIONS])
    assert list(bars[0].error_y.array) == pytest.approx([100 * SUMMARY[c][1] for c in CONDITIONS])
    assert list(bars[1].error_y.array) == pytest.approx([100 * SUMMARY[c][3] for c in CONDITIONS])
    assert marks[0].y[3] == pytest.approx(51.3) and marks[0].y[2] is None
    assert view.image == ws.root / "studies" / "abl" / "objectness.png"
    # per-run status: the live run directory wins over study.json's "pending"
    runs = {r[0]: r for r in view.run_rows}
    assert len(runs) == 8
    assert runs["coarse-to-fine_s1"][3:5] == ["running", "2/5"]
    assert runs["none_s1"][3] == "finished" and runs["none_s1"][5] == pytest.approx(21.0)
    assert view.record["live_status"]["coarse-to-fine_s1"] == "running"
    assert "8 runs (7 finished, 1 running)" in view.summary and "Table 8" in view.summary
    assert "Best mean AP: **coarse-to-fine**" in view.summary


def test_scaling_study_table_and_chart(ws: Workspace) -> None:
    write_scaling_study(ws.runs_dir / "scale")
    view = sv.open_study(ws, str(ws.runs_dir / "scale"))
    assert view.kind == "scaling" and view.id == "runs/scale" and view.image is None and view.run_rows == []
    assert [r[0] for r in view.rows] == ["base", "width-only", "depth-only", "compound"]
    assert view.headers[-2:] == ["AP (%)", "AP50 (%)"]
    assert view.rows[0][3:5] == [36.9, 104.7] and view.rows[0][-2:] == [30.0, 50.0]
    assert view.rows[3][-2:] == [None, None] and view.rows[3][5] == "P3/P4 0.50"
    params, gflops = view.figure.data
    assert list(params.y) == pytest.approx([36.9, 57.0, 45.0, 60.0]) and list(gflops.y)[0] == pytest.approx(104.7)


def test_studies_are_found_and_bad_folders_are_clear_messages(ws: Workspace, tmp_path: Path) -> None:
    write_assignment_study(ws.root / "studies" / "abl")
    write_scaling_study(ws.runs_dir / "group" / "scale")  # depth 2 under runs/
    write_assignment_study(ws.runs_dir / "a" / "b" / "too_deep")
    ids = [ident for _, ident in sv.study_choices(ws)]
    assert sorted(ids) == ["runs/group/scale", "studies/abl"]
    labels = dict((i, lb) for lb, i in sv.study_choices(ws))
    assert labels["runs/group/scale"] == "runs/group/scale (scaling)"
    # a study.json path opens its folder
    assert sv.open_study(ws, str(ws.root / "studies" / "abl" / "study.json")).id == "studies/abl"

    with pytest.raises(sv.StudyError, match="nowhere: no such folder"):
        sv.open_study(ws, "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(sv.StudyError, match=rf"{empty}.*no study\.json|not a study|study\.json"):
        sv.open_study(ws, str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "study.json").write_text("{not json")
    with pytest.raises(sv.StudyError, match=r"broken/study\.json"):
        sv.open_study(ws, str(broken))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "study.json").write_text(json.dumps({"kind": "mystery", "version": 1}))
    with pytest.raises(sv.StudyError, match=r"odd/study\.json"):
        sv.open_study(ws, str(odd))
    with pytest.raises(sv.StudyError, match="outside the folders"):
        sv.open_study(ws, "/etc")
    with pytest.raises(sv.StudyError, match="no study"):
        sv.open_study(ws, "  ")


def test_a_study_without_figure_or_paper_still_opens(ws: Workspace) -> None:
    folder = write_assignment_study(ws.root / "studies" / "early", live="none_s0")
    (folder / "objectness.png").unlink()
    doc = json.loads((folder / "study.json").read_text())
    doc["paper"] = []
    (folder / "study.json").write_text(json.dumps(doc))
    view = sv.open_study(ws, "studies/early")
    assert view.image is None and any("objectness" in n for n in view.notes)
    assert [t.type for t in view.figure.data] == ["bar", "bar"]
    assert view.rows[0][-3:] == ["–", "–", "–"]


# -- the studio (gradio_client) --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_open_study_endpoint_and_fiftyone_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/open_study answers table, figure, image and JSON; without FiftyOne the button is hidden and
    /open_in_fiftyone says how to install it."""
    from gradio_client import Client

    from app.studio.app import launch
    from tests.studio_server import free_port

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fiftyone" else real_find_spec(name, *a)
    )
    assert not fol.available()
    root = tmp_path / "ws"
    write_assignment_study(root / "studies" / "abl", live="none_s1")
    demo = launch(root, port=free_port(), block=False, allowed_roots=[tmp_path])
    try:
        buttons = {c["props"].get("value"): c["props"] for c in demo.config["components"] if c.get("type") == "button"}
        assert buttons["Open in FiftyOne"]["visible"] is False and buttons["Stop FiftyOne"]["visible"] is False
        client = Client(demo.local_url, verbose=False)
        summary, table, figure, image, record, runs = client.predict("studies/abl", api_name="/open_study")
        assert "Assignment study" in summary and "1 running" in summary
        assert table["headers"][0] == "condition" and [r[0] for r in table["data"]] == CONDITIONS
        assert json.loads(figure["plot"])["data"][0]["x"] == CONDITIONS
        assert Path(image).is_file()
        with Image.open(image) as im:
            assert im.size == (96, 48)
        assert record["kind"] == "assignment" and record["live_status"]["none_s1"] == "running"
        assert len(runs["data"]) == 8
        with pytest.raises(Exception, match="not installed.*pip install -e .\\[fiftyone\\]"):
            client.predict(["demo"], "demo", "test", api_name="/open_in_fiftyone")
    finally:
        demo.close()


# -- the dashboard (AppTest) -----------------------------------------------------------------------------------------
demo_copy = _demo_copy  # the dashboard tests' fixture (the demo dataset, generated once per module)


@pytest.fixture
def dash_ws(tmp_path: Path, demo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    root = tmp_path / "ws"
    (root / "datasets").mkdir(parents=True)
    shutil.copytree(demo_copy, root / "datasets" / "demo")
    (root / ".demo_run_seeded").touch()
    monkeypatch.setenv("YOLOV7_DASHBOARD_WORKSPACE", str(root))
    monkeypatch.delenv("YOLOV7_DASHBOARD_RUNS", raising=False)
    return Workspace(root)


def test_dashboard_compare_page_opens_studies(dash_ws: Workspace, tmp_path: Path) -> None:
    write_assignment_study(dash_ws.root / "studies" / "abl", live="lead-guided_s0")
    write_scaling_study(dash_ws.runs_dir / "scale")
    at = app_test("compare")
    assert "No run has finished an epoch yet" in texts(at)  # the runs tab has nothing; the studies tab does
    pick = at.selectbox(key="study_pick")
    assert sorted(pick.options) == ["runs/scale (scaling)", "studies/abl (assignment)"]
    pick.select("studies/abl").run()
    assert not at.exception, [e.value for e in at.exception]
    fig = json.loads(charts(at)[0].proto.spec)
    bars = [t for t in fig["data"] if t["type"] == "bar"]
    assert bars[0]["x"] == CONDITIONS and bars[0]["error_y"]["array"] == pytest.approx([1.0, 1.2, 0.5, 2.0])
    assert frame(at, "paper AP").set_index("condition").loc["coarse-to-fine", "AP (%)"] == "26.0 ± 2.0"
    runs = frame(at, "status").set_index("run")
    assert runs.loc["lead-guided_s0", "status"] == "running" and runs.loc["none_s0", "status"] == "finished"
    assert len(at.get("image")) == 1  # the objectness figure
    # the run finishes: the page shows it without a restart (cache keyed on the files' mtimes)
    RunDir(dash_ws.root / "studies" / "abl" / "runs" / "lead-guided_s0").write_status("finished", epoch=5, epochs=5)
    at.button(key="study_refresh").click().run()
    assert frame(at, "status").set_index("run").loc["lead-guided_s0", "status"] == "finished"
    # a scaling study; then a bad path typed by hand is a warning naming it
    at.selectbox(key="study_pick").select("runs/scale").run()
    assert frame(at, "GFLOPs")["variant"].tolist() == ["base", "width-only", "depth-only", "compound"]
    missing = dash_ws.root / "studies" / "missing"
    at.text_input(key="study_path").input(str(missing)).run()
    assert f"{missing}: no such folder" in texts(at)
    at.text_input(key="study_path").input(str(tmp_path)).run()
    assert f"{tmp_path}: outside the folders" in texts(at)


def test_dashboard_fiftyone_tab_without_the_extra(dash_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fiftyone" else real_find_spec(name, *a)
    )
    at = app_test("compare")
    assert "pip install -e .[fiftyone]" in texts(at)
    assert not [b for b in at.button if b.key == "fo_open"]


def test_a_real_scaling_study_with_the_papers_numbers(ws: Workspace) -> None:
    """A study written by core.study.scaling_study opens with its rows, the paper's Table 3 beside them."""
    from core.study import scaling_study

    doc = scaling_study("yolov7", 1.5, 1.25, img=128, num_classes=4, out=ws.root / "studies" / "scale")
    view = sv.open_study(ws, "studies/scale")
    assert [r[0] for r in view.rows] == ["base", "width-only", "depth-only", "compound"]
    by_variant = {r["variant"]: r for r in doc["rows"]}
    col = view.headers.index
    for row in view.rows:
        assert row[col("params (M)")] == round(by_variant[row[0]]["params"] / 1e6, 3)
        assert row[col("max ratio change vs base")] == pytest.approx(by_variant[row[0]]["max_ratio_change_vs_base"])
    compound = view.rows[3]
    assert compound[col("paper params (M)")] == 71.3 and compound[col("paper AP")] == 52.9
    assert [t.type for t in view.figure.data] == ["bar", "scatter", "bar", "scatter"]
    assert "Scaling study" in view.summary


@pytest.mark.slow
def test_a_real_assignment_study(ws: Workspace, tmp_path: Path) -> None:
    """A 1-epoch study made by core.study.run_assignment_study (tiny, as its own test) opens with its numbers."""
    from core.data import make_demo_dataset
    from core.study import run_assignment_study

    data = make_demo_dataset(tmp_path / "demo", n_images=16, img_size=96)
    fast = {"workers": 0, "progress": False, "plots": "none", "nbs": 4, "eval_conf": 0.01}
    doc = run_assignment_study(data, "yolov7-tiny", out=ws.root / "studies" / "real", epochs=1, img=64, batch=4,
                               width=0.25, strategies=["none", "coarse-to-fine"], seeds=1, recipe="official",
                               train_overrides=fast, log=lambda _m: None)  # fmt: skip
    assert [ident for _, ident in sv.study_choices(ws)] == ["studies/real"]
    view = sv.open_study(ws, "studies/real")
    assert [r[0] for r in view.rows] == ["none", "coarse-to-fine"]
    summary = {s["condition"]: s for s in doc["summary"]}
    bars = [t for t in view.figure.data if t.type == "bar"]
    assert list(bars[0].y) == pytest.approx([100 * summary[c]["AP_mean"] for c in ("none", "coarse-to-fine")])
    assert [r[3] for r in view.run_rows] == ["finished", "finished"] and [r[4] for r in view.run_rows] == ["1/1"] * 2
    assert view.image is not None and view.image.is_file()
    with Image.open(view.image) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    paper = {p["condition"]: p for p in doc["paper"]}
    col = view.headers.index("paper AP")
    assert view.rows[1][col] == f"{100 * paper['coarse-to-fine']['AP']:.1f}"
