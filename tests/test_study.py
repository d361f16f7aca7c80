"""The paper's studies (issue 16): the assignment study end to end on tiny data, its resumability and inputs;
the scaling study's numbers; study.json validation; the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.data.demo import make_demo_dataset
from core.models import get_spec
from core.study import (
    CONDITIONS,
    PAPER_ASSIGNMENT,
    list_studies,
    load_study,
    parse_seeds,
    run_assignment_study,
    scaling_study,
)
from core.study.assignment import _run_state, check_conditions
from core.study.store import METRIC_KEYS, write_study
from core.study.table import summarize

REPO = Path(__file__).resolve().parents[1]
FAST = {"workers": 0, "progress": False, "plots": "none", "nbs": 4, "eval_conf": 0.01}


def _conditions() -> list[str]:
    """none + the official strategy, plus lead-guided where the engine has TrainConfig.assign."""
    try:
        return check_conditions(["none", "coarse-to-fine", "lead-guided"])
    except ValueError:
        return ["none", "coarse-to-fine"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=16, img_size=96).parent


@pytest.fixture(scope="module")
def study(demo: Path, tmp_path_factory) -> tuple[Path, dict, list[str]]:
    out = tmp_path_factory.mktemp("studies") / "tiny"
    lines: list[str] = []
    result = run_assignment_study(demo, "yolov7-tiny", out=out, epochs=1, img=64, batch=4, width=0.25,
                                  strategies=_conditions(), seeds=1, recipe="official", train_overrides=FAST,
                                  log=lines.append)  # fmt: skip
    return out, result, lines


@pytest.mark.slow
def test_assignment_study_writes_runs_table_and_figure(study) -> None:
    out, result, _lines = study
    conds = _conditions()
    loaded = load_study(out)
    assert loaded["kind"] == "assignment" and loaded["state"] == "finished"
    assert loaded["settings"]["strategies"] == conds and loaded["settings"]["seeds"] == [0]
    assert [r["name"] for r in loaded["runs"]] == [f"{c}_s0" for c in conds]
    for run in loaded["runs"]:
        assert run["status"] == "finished" and run["metrics"]["split"] == "test"
        for k in METRIC_KEYS:
            assert -1 <= run["metrics"][k] <= 1
        run_dir = out / run["run_dir"]
        assert (run_dir / "config.json").is_file() and (run_dir / "weights" / "last.pt").is_file()
        cfg = json.loads((run_dir / "config.json").read_text())["config"]
        assert cfg["aux"] is (run["condition"] != "none") and cfg["seed"] == 0 and cfg["img"] == 64
        if "assign" in cfg and run["condition"] != "none":
            assert cfg["assign"] == run["condition"]
    assert [s["condition"] for s in loaded["summary"]] == conds
    assert all(s["n"] == 1 and s["AP_std"] is None for s in loaded["summary"])
    assert {p["condition"] for p in loaded["paper"]} == set(conds)
    table = (out / "table.md").read_text()
    for c in conds:
        assert f"| {c} | 1 |" in table
    assert "Table 6" in table and "YOLOv7-E6" in table
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["condition"] for r in rows] == conds
    assert float(rows[0]["paper_AP"]) == PAPER_ASSIGNMENT["none"].AP
    assert loaded["figure"] == "objectness.png"
    assert (out / "objectness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "objectness.html").read_text()
    assert "no auxiliary head" in html and "coarse-to-fine" in html
    assert out in list_studies(out.parent)


@pytest.mark.slow
def test_assignment_study_is_resumable(study, demo: Path) -> None:
    out, result, _ = study
    runs = out / "runs"
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    lines: list[str] = []
    again = run_assignment_study(demo, "yolov7-tiny", out=out, epochs=1, img=64, batch=4, width=0.25,
                                 strategies=_conditions(), seeds=1, recipe="official", train_overrides=FAST,
                                 figure=False, log=lines.append)  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == stamps  # nothing retrained
    assert not any(": training (" in m or ": resuming (" in m for m in lines)
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in result["runs"]]
    with pytest.raises(ValueError, match="other settings.*epochs"):
        run_assignment_study(demo, "yolov7-tiny", out=out, epochs=2, img=64, batch=4, width=0.25,
                             strategies=["none"], recipe="official", train_overrides=FAST)  # fmt: skip


def test_run_state_decides_what_is_retrained(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _run_state(run) == "new"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(b"x")
    (run / "status.json").write_text(json.dumps({"state": "stopped", "message": "stopped by SIGINT"}))
    assert _run_state(run) == "resume"
    (run / "status.json").write_text(json.dumps({"state": "stopped", "message": "stopped after max_steps=3"}))
    assert _run_state(run) == "finished"
    (run / "status.json").write_text(json.dumps({"state": "failed", "message": "boom"}))
    assert _run_state(run) == "resume"
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    assert _run_state(run) == "finished"


def test_bad_input_gives_clear_messages(tmp_path: Path, demo: Path, capsys) -> None:
    with pytest.raises(ValueError, match="nowhere: no such dataset"):
        run_assignment_study(tmp_path / "nowhere", out=tmp_path / "s")
    with pytest.raises(ValueError, match="unknown strategy 'best': choose from none, independent"):
        run_assignment_study(demo, out=tmp_path / "s", strategies=["none", "best"])
    with pytest.raises(ValueError, match="unknown model 'yolov9'"):
        run_assignment_study(demo, "yolov9", out=tmp_path / "s")
    with pytest.raises(ValueError, match="'seed' is set by the study"):
        run_assignment_study(demo, out=tmp_path / "s", train_overrides={"seed": 3})
    assert not (tmp_path / "s").exists()  # nothing written for refused input
    rc = main(["study", "assignment", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")])
    assert rc == 2 and "no such dataset" in capsys.readouterr().err
    rc = main(["study", "assignment", "--data", str(demo), "--out", str(tmp_path / "s"), "--strategies", "magic"])
    assert rc == 2 and "unknown strategy 'magic'" in capsys.readouterr().err


def test_seeds_and_summary_spread() -> None:
    assert parse_seeds(3) == [0, 1, 2] and parse_seeds([4, 2, 4]) == [4, 2]
    with pytest.raises(ValueError, match="seeds"):
        parse_seeds(0)
    m = [dict.fromkeys(METRIC_KEYS, v) | {"APl": -1.0} for v in (0.2, 0.4, 0.3)]
    runs = [{"condition": "none", "metrics": x} for x in m] + [{"condition": "independent", "metrics": None}]
    none, ind = summarize(runs, ["none", "independent"])
    assert none["n"] == 3 and none["AP_mean"] == pytest.approx(0.3)
    assert none["AP_std"] == pytest.approx(statistics.stdev([0.2, 0.4, 0.3]))
    assert none["APl_mean"] is None  # pycocotools' -1 (no large objects) is undefined, not zero
    assert ind["n"] == 0 and ind["AP_mean"] is None


def test_paper_numbers_cite_their_tables() -> None:
    assert set(PAPER_ASSIGNMENT) == set(CONDITIONS)
    assert PAPER_ASSIGNMENT["none"].AP == 0.556 and PAPER_ASSIGNMENT["coarse-to-fine"].AP75 == 0.611
    assert "Table 6" in PAPER_ASSIGNMENT["lead-guided"].source and "YOLOv7-E6" in PAPER_ASSIGNMENT["none"].source
    assert "Table 7" in PAPER_ASSIGNMENT["coarse-to-fine-bounded"].source


def test_load_study_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"study\.json missing"):
        load_study(tmp_path)
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"study\.json: not a readable"):
        load_study(tmp_path)
    good = {"kind": "assignment", "version": 1, "settings": {}, "runs": [
        {"name": "none_s0", "condition": "none", "seed": 0, "run_dir": "runs/none_s0", "status": "pending",
         "metrics": None}]}  # fmt: skip
    write_study(tmp_path, good)
    assert load_study(tmp_path / "study.json")["folder"] == str(tmp_path.resolve())
    write_study(tmp_path, good | {"runs": [good["runs"][0] | {"status": "done"}]})
    with pytest.raises(ValueError, match="unknown status 'done'"):
        load_study(tmp_path)
    write_study(tmp_path, good | {"kind": "other"})
    with pytest.raises(ValueError, match="unknown kind"):
        load_study(tmp_path)
    assert list_studies(tmp_path / "missing") == []


def test_scaling_study_numbers_and_ratio_argument(tmp_path: Path) -> None:
    study = scaling_study("yolov7", 1.5, 1.25, out=tmp_path)
    rows = {r["variant"]: r for r in load_study(tmp_path)["rows"]}
    assert list(rows) == ["base", "width-only", "depth-only", "compound"]
    p = {k: r["params"] for k, r in rows.items()}
    assert p["base"] == pytest.approx(36.9e6, rel=0.01)  # the paper's yolov7 (deploy form)
    assert p["base"] < p["depth-only"] < p["compound"] and p["base"] < p["width-only"]
    assert rows["base"]["gflops"] == pytest.approx(104.7, rel=0.01)
    change = {k: r["max_ratio_change_vs_base"] for k, r in rows.items()}
    # depth-only: 6 instead of 4 chain convs -> the transition reads 5/4 of its channels; compound widens it to match
    assert change["depth-only"] == pytest.approx(0.25) and change["compound"] == 0 and change["width-only"] == 0
    b1 = {k: r["blocks"]["backbone.1"] for k, r in rows.items()}
    neck = {k: r["channel_ratios"]["neck_td.1"] for k, r in rows.items()}  # ELAN-H: 4 chain outputs + 2 branches
    assert neck == {"base": 4.0, "width-only": 4.0, "depth-only": 5.0, "compound": 4.0}
    assert (b1["base"]["transition_in"], b1["base"]["out"]) == (256, 256)
    assert (b1["depth-only"]["transition_in"], b1["depth-only"]["out"]) == (320, 256)
    assert (b1["compound"]["transition_in"], b1["compound"]["out"]) == (320, 320)
    assert b1["compound"]["transition_in"] == get_spec("yolov7x").backbone[0].out  # compound backbone = yolov7x's
    assert "| compound | 1.5 | 1.25 |" in (tmp_path / "table.md").read_text()
    assert study["paper"][3]["row"] == "compound (v7-X)"


def test_cli_scaling_smoke() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "core", "study", "scaling", "--model", "yolov7-tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| depth-only | 1.5 | 1 |" in proc.stdout and "Table 3" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "core", "study", "scaling", "--model", "nope"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr


def test_cli_passes_bf16_and_other_run_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`study assignment --bf16 --max-steps N` reaches every run's TrainConfig through train_overrides."""
    import core.study

    seen: dict = {}

    def fake(data, model, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.update(kw, data=data, model=model)
        return {"runs": [], "summary": [], "state": "finished"}

    monkeypatch.setattr(core.study, "run_assignment_study", fake)
    main(["study", "assignment", "--data", str(tmp_path), "--out", str(tmp_path / "s"), "--bf16", "--max-steps", "3"])
    assert seen["train_overrides"]["bf16"] is True and seen["train_overrides"]["max_steps"] == 3
    seen.clear()
    main(["study", "assignment", "--data", str(tmp_path), "--out", str(tmp_path / "s")])
    assert "bf16" not in seen["train_overrides"]
