"""Distributed data parallel: two CPU processes (gloo) under torchrun through one short epoch."""

from __future__ import annotations

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
