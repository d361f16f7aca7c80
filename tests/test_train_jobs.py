"""Training runs as jobs (issue 11): what a job runner relies on when it launches, stops, follows and resumes
``yolov7-studio train`` processes through their run directories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.checkpoint.io import read_checkpoint
from core.cli import build_parser, main
from core.data.demo import make_demo_dataset
from core.train import Hook, RunDir, TrainConfig, Trainer
from core.train.rundir import RunInUse


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    # 12 images: 10 train (3 steps of batch 4), 1 val, 1 test
    return make_demo_dataset(tmp_path_factory.mktemp("jobs") / "demo", n_images=12, img_size=96)


def _cfg(demo: Path, out: Path | str, **kw) -> TrainConfig:
    base = dict(
        data=str(demo), model="yolov7-tiny", width=0.25, out=str(out), epochs=1, img=64, batch=4, workers=0,
        nbs=4, progress=False, seed=1, eval_conf=0.01, plots="html", autoanchor=False, device="cpu",
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


# -- early stopping ---------------------------------------------------------------------------------------------
def test_patience_counts_only_evaluated_epochs(demo: Path, tmp_path: Path, monkeypatch) -> None:
    import core.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "fitness", lambda metrics: 0.5)  # improves once, then never again
    out = tmp_path / "patience"
    status = Trainer(_cfg(demo, out, epochs=7, eval_interval=3, patience=2)).fit()
    # evaluations after epochs 3 and 6: epoch 3 is the best, epoch 6 is 3 >= 2 epochs past it
    assert status["state"] == "finished" and status["message"].startswith("early stop"), status["message"]
    rows = RunDir(out).read_results()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in rows if r["mAP50"] == r["mAP50"]] == [3, 6]  # evaluated (not NaN)
    assert (out / "weights" / "best.pt").is_file()
    train = read_checkpoint(out / "weights" / "best.pt")["train"]
    assert (train["epoch"], train["best_epoch"]) == (3, 3)
    assert read_checkpoint(out / "weights" / "last.pt")["train"]["bad_epochs"] == 3


# -- refused launches ---------------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_refused_launch_leaves_the_existing_run_alone(demo: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "done"
    run = RunDir(out).create()
    run.append_result({"epoch": 1, "box": 0.1})
    run.write_status("finished", message="done", epoch=1)
    run.log("finished: done")
    before = _snapshot(out)
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_cfg(demo, out)).fit()
    assert _snapshot(out) == before
    # the same through the command line (a double click on Start in a UI)
    capsys.readouterr()
    assert main(["train", "--data", str(demo), "--out", str(out), "--device", "cpu", "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert RunDir(out).effective_state() == "finished"


def test_a_launch_into_a_directory_a_live_process_holds_is_refused(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    other = os.getppid()  # a live process that is not this one
    (out / ".lock").write_text(f"{other} {socket.gethostname()}\n")
    (out / "status.json").write_text(json.dumps({"state": "queued", "pid": other, "heartbeat": time.time()}))
    before = _snapshot(out)
    with pytest.raises(RunInUse, match=f"pid {other}"):
        Trainer(_cfg(demo, out)).fit()
    assert _snapshot(out) == before


def test_two_claims_one_winner_and_a_dead_owner_is_taken_over(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.root.mkdir()
    run.lock_file.write_text(f"{dead.pid} {socket.gethostname()}\n")
    run.claim()  # the owner is gone: taken over
    assert run.lock_file.read_text().split()[0] == str(os.getpid())
    run.release()
    assert not run.lock_file.exists()


class _StopAt(Hook):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iteration == self.iteration:
            self.trainer.run.request_stop("test")


# -- resume ---------------------------------------------------------------------------------------------------------
def test_resume_continues_in_the_directory_it_is_given(demo: Path, tmp_path: Path, monkeypatch) -> None:
    first, other = tmp_path / "first_cwd", tmp_path / "other_cwd"
    first.mkdir()
    other.mkdir()
    monkeypatch.chdir(first)
    st = Trainer(_cfg(demo, "runs/job", epochs=2), hooks=[_StopAt(4)]).fit()  # relative out; stopped in epoch 2
    assert st["state"] == "stopped"
    moved = tmp_path / "archive" / "job"
    moved.parent.mkdir()
    shutil.move(first / "runs" / "job", moved)
    monkeypatch.chdir(other)
    assert main(["train", "--resume", str(moved)]) == 0
    assert RunDir(moved).read_status()["state"] == "finished"
    assert [r["epoch"] for r in RunDir(moved).read_results()] == [1, 2]
    assert json.loads((moved / "config.json").read_text())["config"]["out"] == str(moved)
    assert read_checkpoint(moved / "weights" / "last.pt")["train"]["epoch"] == 2
    assert not (first / "runs" / "job").exists() and not (other / "runs").exists()


# -- stop requests during setup and evaluation -------------------------------------------------------------------
def test_stop_file_is_honoured_while_the_dataset_is_decoded(demo: Path, tmp_path: Path, monkeypatch) -> None:
    import core.data.check as check

    out = tmp_path / "setup_stop"
    original = check._check_image_file
    seen: list[dict] = []

    def slow_check(path):  # the user presses Stop while images are being decoded
        if not seen:
            time.sleep(0.5)
            seen.append(RunDir(out).read_status())
            RunDir(out).request_stop("test")
        return original(path)

    monkeypatch.setattr(check, "_check_image_file", slow_check)
    trainer = Trainer(_cfg(demo, out))
    trainer.heartbeat_s = 0.05
    status = trainer.fit()
    assert status["state"] == "stopped" and "setup" in status["message"], status["message"]
    assert not (out / "weights" / "last.pt").exists() and not (out / "results.csv").exists()
    # the heartbeat went on while the images were decoded
    assert seen[0]["state"] == "queued" and seen[0]["heartbeat"] > seen[0]["updated"]
    assert seen[0]["pid"] == os.getpid()


def test_stop_file_is_honoured_during_the_evaluation_and_resume_evaluates(
    demo: Path, tmp_path: Path, monkeypatch
) -> None:
    import core.data.loader as loader_module

    out = tmp_path / "eval_stop"
    original = loader_module.create_val_loader
    calls: list[int] = []

    def val_loader(*args, **kw):
        inner = original(*args, **kw)
        calls.append(1)

        class Loader:  # the user presses Stop once the first evaluation has begun
            def __len__(self):
                return len(inner)

            def __iter__(self):
                if len(calls) == 1:
                    RunDir(out).request_stop("test")
                yield from inner

        return Loader()

    monkeypatch.setattr(loader_module, "create_val_loader", val_loader)
    status = Trainer(_cfg(demo, out)).fit()
    assert status["state"] == "stopped" and "evaluation after epoch 1" in status["message"], status["message"]
    assert not (out / "results.csv").exists()
    stopped = read_checkpoint(out / "weights" / "last.pt")
    assert (stopped["train"]["epoch"], stopped["train"]["step"]) == (0, 3)
    status = Trainer(_cfg(demo, out), resume=out).fit()  # no training left: evaluates epoch 1, then best.pt
    assert status["state"] == "finished"
    rows = RunDir(out).read_results()
    assert [r["epoch"] for r in rows] == [1] and rows[0]["mAP50"] >= 0
    counts = next(iter(stopped["train"]["label_counts"].values()))  # restored, not recounted as zero
    assert counts["input"] > 0 and rows[0]["labels_lost_share"] == pytest.approx(counts["lost_share"], abs=1e-4)
    resumed = read_checkpoint(out / "weights" / "last.pt")
    for k, v in stopped["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    assert (out / "metrics.json").is_file()


# -- liveness -------------------------------------------------------------------------------------------------------
def test_liveness_rule(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r").create()
    assert run.effective_state() is None and not run.is_alive()
    run.write_status("running", message="x")
    st = run.read_status()
    assert st["pid"] == os.getpid() and st["host"] == socket.gethostname() and st["heartbeat"] > 0
    assert run.is_alive() and run.effective_state() == "running"
    run.status_file.write_text(json.dumps({**st, "heartbeat": time.time() - 120}))  # hung or frozen
    assert not run.is_alive() and run.effective_state() == "died"
    assert run.effective_state(stale_after=300) == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.status_file.write_text(json.dumps({**st, "pid": dead.pid}))  # process gone
    assert run.effective_state() == "died" and run.liveness()["alive"] is False
    run.status_file.write_text(json.dumps({**st, "pid": dead.pid, "state": "finished"}))
    assert run.effective_state() == "finished"
    run.status_file.write_text(json.dumps({"state": "queued"}))  # written by a job runner, no process yet
    assert run.effective_state() == "queued"


class _DoubleCtrlC(Hook):
    def after_step(self) -> None:
        signal.raise_signal(signal.SIGINT)  # first: stop after this step
        signal.raise_signal(signal.SIGINT)  # second: interrupt now


def test_a_second_ctrl_c_does_not_leave_the_run_running(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctrlc"
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(demo, out), hooks=[_DoubleCtrlC()]).fit()
    st = RunDir(out).read_status()
    assert st["state"] == "stopped" and "interrupted" in st["message"]
    assert RunDir(out).effective_state() == "stopped"
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_sigkill_reads_as_died(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = ["--width", "0.25", "--epochs", "50", "--img", "64", "--batch", "4", "--nbs", "4", "--workers", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "train", "--data", str(demo), "--out", str(out), "--device", "cpu", *args,
         "--no-progress", "--no-autoanchor"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run = RunDir(out)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and (run.read_status() or {}).get("state") != "running":
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        assert run.is_alive() and run.effective_state() == "running"
        assert run.read_status()["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert run.read_status()["state"] == "running"  # nobody could mark it ...
    assert not run.is_alive() and run.effective_state() == "died"  # ... but a reader sees it died
    assert run.liveness()["state"] == "died"


# -- atomic files -----------------------------------------------------------------------------------------------------
def test_every_file_a_reader_may_open_is_replaced_atomically(demo: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "atomic"
    replaced: set[Path] = set()
    real_replace = os.replace

    def spy(src, dst, *a, **kw):
        replaced.add(Path(dst).resolve())
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", spy)
    assert Trainer(_cfg(demo, out)).fit()["state"] == "finished"
    files = [p for p in out.rglob("*") if p.is_file() and p.name not in ("train.log", ".lock", "STOP")]
    names = {str(p.relative_to(out)) for p in files}
    for f in ("status.json", "config.json", "results.csv", "metrics.json", "plots/metrics.html", "plots/losses.html"):
        assert f in names, f
    assert [str(p.relative_to(out)) for p in files if p.resolve() not in replaced] == []
    assert not [p for p in out.rglob(".*.tmp")]


# -- train --config -------------------------------------------------------------------------------------------------
def test_train_config_file_launches_exactly_that_configuration(demo: Path, tmp_path: Path, capsys) -> None:
    # a run's config.json holds the recipe it resolved to ("auto" is resolved at launch, see test_new_user.py)
    stored = _cfg(demo, tmp_path / "old_run", epochs=3, eval_iou=0.6, eval_conf=0.02, val_split="test",
                  hyp_overrides={"lr0": 0.005}, freeze=(0,), name="job 7", ema=False, recipe="official")  # fmt: skip
    config_json = tmp_path / "config.json"
    stored.write(config_json, {"hyp": {"lr0": 0.005}, "world_size": 1})  # a run directory's config.json
    out = tmp_path / "new_run"
    code = main(["train", "--config", str(config_json), "--out", str(out), "--max-steps", "1", "--no-progress"])
    assert code == 0
    launched = json.loads((out / "config.json").read_text())["config"]
    expected = {**stored.to_dict(), "out": str(out), "max_steps": 1, "progress": False}
    assert launched == expected
    # a file of plain TrainConfig fields, flags overriding it, and the flags the CLI lacked before
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"data": str(demo), "epochs": 4, "eval_conf": 0.3}))
    args = build_parser().parse_args(
        ["train", "--config", str(flat), "--epochs", "2", "--eval-iou", "0.5", "--val-split", "test", "--plots",
         "none", "--no-amp", "--train-split", "train", "--name", "x", "--set", "lr0=0.02", "--no-ema"]
    )  # fmt: skip
    from core.cli.train import config_from_args

    cfg = config_from_args(args)
    assert (cfg.epochs, cfg.eval_conf, cfg.eval_iou, cfg.val_split, cfg.plots, cfg.amp, cfg.name, cfg.ema) == (
        2, 0.3, 0.5, "test", "none", False, "x", False
    )  # fmt: skip
    assert cfg.hyp_overrides == {"lr0": 0.02} and cfg.out == "runs/yolov7-tiny"
    # the defaults without --config are TrainConfig's
    plain = config_from_args(build_parser().parse_args(["train", "--data", str(demo)]))
    assert plain == TrainConfig(data=str(demo.resolve()), out="runs/yolov7-tiny")


def test_train_config_file_errors_name_the_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"config": {"data": "x", "epochz": 3}}))
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "epochz" in err
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


# -- a library call does not print --------------------------------------------------------------------------------
def test_trainer_logs_through_logging_not_stdout_unless_given_a_log(demo: Path, tmp_path: Path, capsys, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="core.train"):
        Trainer(_cfg(demo, tmp_path / "quiet", max_steps=1)).fit()
    assert capsys.readouterr().out == ""  # a server calling the library gets no print on its stdout
    assert any("epoch" in r.getMessage() or "params" in r.getMessage() for r in caplog.records)
    lines: list[str] = []
    Trainer(_cfg(demo, tmp_path / "told", max_steps=1), log=lines.append).fit()
    assert lines and lines == [ln for ln in (tmp_path / "told" / "train.log").read_text().splitlines() if ln in lines]


def test_results_csv_cut_short_reads_with_missing_values(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r").create()
    run.append_result({"epoch": 1, "box": 0.5, "mAP50": 0.1})
    run.append_result({"epoch": 2, "box": 0.4, "mAP50": 0.2})
    text = run.results.read_text()
    run.results.write_text(text[: text.rindex(",")])  # the last row loses its last field
    rows = run.read_results()
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["box"] == 0.4
    assert rows[0]["mAP50"] == 0.1 and rows[1]["mAP50"] != rows[1]["mAP50"]  # NaN where the row was cut
