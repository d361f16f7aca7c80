"""Distributed data parallel: two CPU processes (gloo) under torchrun: one short epoch, an error on one rank
(every rank ends, the run is marked failed), early stopping decided on rank 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.checkpoint.io import read_checkpoint
from core.data.demo import make_demo_dataset
from core.train import RunDir


@pytest.mark.slow
def test_two_cpu_processes_train_one_epoch(tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "demo", n_images=24, img_size=128)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "core",
        "train",
        "--data",
        str(data),
        "--model",
        "yolov7-tiny",
        "--width",
        "0.25",
        "--epochs",
        "1",
        "--img",
        "96",
        "--batch",
        "8",
        "--nbs",
        "8",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--sync-bn",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = RunDir(out)
    assert run.read_status()["state"] == "finished"
    assert len(run.read_results()) == 1
    config = __import__("json").loads(run.config.read_text())
    assert config["world_size"] == 2
    ck = read_checkpoint(run.last)
    # 20 training images, total batch 8 = 4 per process -> 3 steps per process (padded shard of 10)
    assert ck["train"]["iteration"] == 3
    assert "stop" not in run.read_status()["message"]


# Runs under torchrun: ``mode data out``. "fail": rank 1 raises at its second step. "improve": rank 0's fitness
# improves at every evaluation (the other rank evaluates nothing), patience 1.
SCRIPT = """
import sys
import core.train.trainer as trainer_module
from core.train import Hook, TrainConfig, Trainer

mode, data, out = sys.argv[1:4]


class FailOnRank1(Hook):
    def after_step(self):
        if self.trainer.rank == 1 and self.trainer.iteration == 2:
            raise RuntimeError("injected failure on rank 1")


fits = iter(range(1, 1000))
trainer_module.fitness = lambda metrics: 0.01 * next(fits)
cfg = TrainConfig(
    data=data, model="yolov7-tiny", width=0.25, out=out, epochs=3, img=64, batch=4, nbs=4, workers=0,
    device="cpu", progress=False, plots="none", autoanchor=False, patience=1 if mode == "improve" else 0,
)
Trainer(cfg, hooks=[FailOnRank1()] if mode == "fail" else []).fit()
"""


def _torchrun(tmp_path: Path, mode: str, data: Path, out: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "ddp_job.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    proc = subprocess.Popen(
        [*cmd, mode, str(data), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,  # so that a hang can be ended with all its ranks
    )
    try:
        stdout, stderr = proc.communicate(timeout=480)  # a hang (ranks waiting for a rank that died) fails here
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the distributed run hung")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_error_on_one_rank_ends_every_rank_and_marks_the_run_failed(tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "demo", n_images=12, img_size=96)
    out = tmp_path / "ddp_fail"
    proc = _torchrun(tmp_path, "fail", data, out)
    assert proc.returncode != 0
    run = RunDir(out)
    status = run.read_status()
    assert status["state"] == "failed", status
    assert run.effective_state() == "failed"
    assert "injected failure on rank 1" in run.log_file.read_text()
    assert "injected failure on rank 1" in status["message"], status["message"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_early_stopping_is_decided_on_rank_0(tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "demo", n_images=12, img_size=96)
    out = tmp_path / "ddp_patience"
    proc = _torchrun(tmp_path, "improve", data, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = RunDir(out)
    # rank 0 improves at every evaluation: no early stop although rank 1 never has metrics
    assert run.read_status()["state"] == "finished" and run.read_status()["message"] == "done"
    assert [r["epoch"] for r in run.read_results()] == [1, 2, 3]
    assert json.loads(run.config.read_text())["world_size"] == 2
