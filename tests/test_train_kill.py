"""A run killed with SIGKILL mid-epoch leaves a loadable last checkpoint and resumes to the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.checkpoint.io import read_checkpoint
from core.data.demo import make_demo_dataset
from core.train import RunDir, TrainConfig, Trainer

ARGS = [
    "--model",
    "yolov7-tiny",
    "--width",
    "0.25",
    "--epochs",
    "3",
    "--img",
    "128",
    "--batch",
    "4",
    "--nbs",
    "4",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--seed",
    "5",
    "--no-progress",
]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "demo", n_images=24, img_size=128)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "train", "--data", str(data), "--out", str(out), *ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = out / "weights" / "last.pt"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if last.exists():
                break
            if proc.poll() is not None:
                pytest.fail("training ended before it could be killed")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ck = read_checkpoint(last)  # loadable: written atomically
    assert ck["train"]["epoch"] == 1
    assert RunDir(out).read_status()["state"] in ("running", "queued")  # nobody could mark it
    resumed = subprocess.run(
        [sys.executable, "-m", "core", "train", "--resume", str(out)], capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert RunDir(out).read_status()["state"] == "finished"
    # the same run without the kill
    straight = tmp_path / "straight"
    cfg = TrainConfig(
        data=str(data),
        model="yolov7-tiny",
        width=0.25,
        epochs=3,
        img=128,
        batch=4,
        nbs=4,
        workers=0,
        device="cpu",
        seed=5,
        out=str(straight),
        progress=False,
        plots="none",
    )
    Trainer(cfg).fit()
    a, b = read_checkpoint(straight / "weights" / "last.pt"), read_checkpoint(last)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "demo", n_images=24, img_size=128)
    out = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "train", "--data", str(data), "--out", str(out), *ARGS, "--epochs", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    status = RunDir(out)
    deadline = time.time() + 600
    while time.time() < deadline and (status.read_status() or {}).get("iteration", 0) < 2:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    st = status.read_status()
    assert st["state"] == "stopped" and "SIGTERM" in st["message"]
    ck = read_checkpoint(out / "weights" / "last.pt")
    assert ck["train"]["iteration"] >= 2
