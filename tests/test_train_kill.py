"""A run killed with SIGKILL at any moment loses at most the work since its last checkpoint.

* killed once weights/last.pt exists (at a random moment): last.pt is loadable, and ``--resume`` finishes with
  the same weights as the uninterrupted run;
* killed at a random step in the middle of an epoch after a checkpoint that was written while a batch's gradient
  waited for the next optimizer step (the half-done epoch is lost): ``--resume`` replays from that checkpoint and
  finishes with the same weights as the uninterrupted run, each epoch in results.csv once;
* killed at a random step of the first epoch, before any checkpoint: nothing can be resumed. ``--resume`` says so
  (naming the missing last.pt) and changes nothing in the run directory; the same launch into the same directory
  then starts the run cleanly (nothing of the dead run is taken for a finished one) and ends with the weights of
  the uninterrupted run.

The kill at an exact step is a real SIGKILL that the training process sends itself from a hook, so that the
random step can be chosen and is reported when an assertion fails.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from core.checkpoint.io import read_checkpoint
from core.data.demo import make_demo_dataset
from core.train import RunDir, TrainConfig

# 24 demo images: 20 train (batch 4 -> NB = 5 steps per epoch). nbs 8 -> accumulate 2 after the warmup (which is
# capped at a third of the 15 steps), so optimizer steps and epoch ends do not line up: a checkpoint written at an
# epoch end can follow a batch whose gradient is still waiting to be applied.
NB, EPOCHS = 5, 3
ARGS = [
    "--model", "yolov7-tiny", "--width", "0.25", "--epochs", str(EPOCHS), "--img", "64", "--batch", "4",
    "--nbs", "8", "--workers", "0", "--device", "cpu", "--seed", "5", "--no-progress",
]  # fmt: skip

# trains with TrainConfig(**json argv[1]) and SIGKILLs itself right after optimizer iteration argv[2] (0: never)
KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    from core.train import TrainConfig, Trainer
    from core.train.hooks import Hook

    class KillAt(Hook):
        def __init__(self, iteration):
            self.iteration = iteration

        def after_step(self):
            if self.trainer.iteration == self.iteration:
                os.kill(os.getpid(), signal.SIGKILL)

    Trainer(TrainConfig.from_dict(json.loads(sys.argv[1])), hooks=[KillAt(int(sys.argv[2]))], log=lambda m: None).fit()
    """
)


def _config(data: Path, out: Path) -> TrainConfig:
    """The configuration the CLI builds from ``ARGS``."""
    return TrainConfig(
        data=str(data), model="yolov7-tiny", width=0.25, epochs=EPOCHS, img=64, batch=4, nbs=8, workers=0,
        device="cpu", seed=5, out=str(out), progress=False, plots="none",
    )  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", "train", *args], capture_output=True, text=True, timeout=900)


def _kill_at(data: Path, out: Path, iteration: int) -> None:
    cfg = json.dumps(_config(data, out).to_dict())
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, cfg, str(iteration)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == -signal.SIGKILL, f"kill at iteration {iteration}: {proc.stderr[-2000:]}"


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any], context: str) -> None:
    for part in ("state_dict", "ema"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{context}: {part} {k} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("kill") / "demo", n_images=24, img_size=64)


@pytest.fixture(scope="module")
def straight(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """last.pt of the same run without any kill, trained in its own process like the others."""
    out = tmp_path_factory.mktemp("straight") / "run"
    done = _cli("--data", str(demo), "--out", str(out), *ARGS, "--plots", "none")
    assert done.returncode == 0, done.stderr[-2000:]
    assert RunDir(out).read_status()["state"] == "finished"
    ck = read_checkpoint(out / "weights" / "last.pt")
    assert ck["train"]["iteration"] == EPOCHS * NB
    return ck


@pytest.mark.slow
def test_sigkill_once_last_pt_exists_then_resume(demo: Path, straight: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "train", "--data", str(demo), "--out", str(out), *ARGS],
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
    assert ck["train"]["epoch"] >= 1
    assert RunDir(out).read_status()["state"] in ("running", "queued")  # nobody could mark it
    resumed = _cli("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert RunDir(out).read_status()["state"] == "finished"
    _assert_same_weights(straight, read_checkpoint(last), "killed once last.pt existed")


@pytest.mark.slow
def test_sigkill_mid_epoch_at_a_random_step_then_resume(demo: Path, straight: dict[str, Any], tmp_path: Path) -> None:
    # a step strictly inside the last epoch: the newest checkpoint is the end of epoch 2, written after a batch whose
    # gradient waits for the next optimizer step (accumulate 2: steps at ni 0, 1, 2, 4, 6, 8, then 10, 12, 14)
    iteration = random.randrange(2 * NB + 1, EPOCHS * NB)
    context = f"killed after iteration {iteration} (epoch {iteration // NB + 1}, step {iteration % NB}/{NB})"
    out = tmp_path / "killed"
    _kill_at(demo, out, iteration)
    run = RunDir(out)
    ck = read_checkpoint(run.last)
    # the newest checkpoint is the last epoch end before the kill: the half-done epoch is lost, nothing more
    assert (ck["train"]["epoch"], ck["train"]["step"], ck["train"]["iteration"]) == (2, 0, 2 * NB), context
    assert ck["train"]["last_opt_step"] == 2 * NB - 2, context  # ni 9 was accumulated, not yet applied
    assert run.read_status()["state"] in ("running", "queued"), context

    resumed = _cli("--resume", str(out))
    assert resumed.returncode == 0, f"{context}: {resumed.stderr[-2000:]}"
    assert run.read_status()["state"] == "finished", context
    epochs = [int(r["epoch"]) for r in run.read_results()]
    assert epochs == list(range(1, EPOCHS + 1)), f"{context}: results.csv epochs {epochs}"
    final = read_checkpoint(run.last)
    assert final["train"]["iteration"] == EPOCHS * NB, context
    _assert_same_weights(straight, final, context)


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint(demo: Path, straight: dict[str, Any], tmp_path: Path) -> None:
    iteration = random.randrange(1, NB)  # inside epoch 1: no last.pt yet
    context = f"killed after iteration {iteration} of epoch 1"
    out = tmp_path / "killed"
    _kill_at(demo, out, iteration)
    run = RunDir(out)
    assert not run.last.exists() and not run.results.exists(), context
    assert run.config.exists(), context  # the run's resolved configuration is there to start it again
    assert run.read_status()["state"] in ("running", "queued"), context

    # nothing to resume: a clear refusal that names the missing checkpoint and touches nothing
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    refused = _cli("--resume", str(out))
    assert refused.returncode == 2, f"{context}: {refused.returncode} {refused.stderr[-2000:]}"
    assert "error:" in refused.stderr and str(run.last) in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr, refused.stderr[-2000:]
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before, f"{context}: the refused resume changed the run directory"

    # the same launch again: the dead run left nothing that refuses it or leaks into the new run
    again = _cli("--data", str(demo), "--out", str(out), *ARGS)
    assert again.returncode == 0, f"{context}: {again.stderr[-2000:]}"
    assert run.read_status()["state"] == "finished", context
    assert [int(r["epoch"]) for r in run.read_results()] == list(range(1, EPOCHS + 1)), context
    _assert_same_weights(straight, read_checkpoint(run.last), context)


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_a_checkpoint(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "term"
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "train", "--data", str(demo), "--out", str(out), *ARGS, "--epochs", "20"],
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
