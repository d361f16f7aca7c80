"""Engine loose ends: before_step is called, image.json is written atomically, reparameterize leaves the caller's
RNG alone, an aux-only change keeps the class names, and a stop cuts the dataset check's decoding short."""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import core.data.check as check_mod
from core.checkpoint.io import load_model, save_checkpoint
from core.data.check import CheckStopped, check_dataset
from core.data.demo import make_demo_dataset
from core.data.types import DetectionDataset, ImageRecord
from core.explore.training import SNAPSHOT_DIR, ObjectnessHook
from core.models import build_model, fuse_blocks, get_spec, reparameterize, scale_width
from core.train import Hook, TrainConfig, Trainer


# -- 1. every hook's before_step runs before each step ---------------------------------------------------------------
class _StepCounter(Hook):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def before_step(self) -> None:
        self.events.append(("before_step", self.trainer.epoch, self.trainer.step))

    def after_step(self) -> None:
        self.events.append(("after_step", self.trainer.epoch, self.trainer.step))


def test_trainer_calls_before_step_before_each_step(tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "demo", n_images=10, img_size=64)  # 8 train images: 2 steps of 4
    cfg = TrainConfig(
        data=str(data), recipe="official", model="yolov7-tiny", width=0.25, out=str(tmp_path / "run"), epochs=1,
        img=64, batch=4, workers=0, nbs=4, progress=False, seed=3, plots="none",
    )  # fmt: skip
    hook = _StepCounter()
    trainer = Trainer(cfg, hooks=[hook])
    assert trainer.fit()["state"] == "finished"
    assert trainer.steps_per_epoch == 2
    # before_step sees the steps done so far; after_step the step just done
    assert hook.events == [("before_step", 0, 0), ("after_step", 0, 1), ("before_step", 0, 1), ("after_step", 0, 2)]


# -- 2. the objectness hook's image.json goes through a temp file and a rename --------------------------------------
def test_objectness_image_json_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = SimpleNamespace(
        path=tmp_path / "img.jpg", key="val/img", split="val", num_boxes=1,
        boxes=np.array([[1.0, 2.0, 30.0, 40.0]]), classes=np.array([1]),
    )  # fmt: skip
    trainer = SimpleNamespace(
        is_main=True, epoch=1,  # not epoch 0: no snapshot is taken, only image.json is written
        cfg=SimpleNamespace(val_split="val", train_split="train", img=64),
        dataset=SimpleNamespace(split=lambda name: [record] if name == "val" else []),
        run=SimpleNamespace(root=tmp_path), log=lambda msg: None,
    )  # fmt: skip
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def recording_replace(src, dst):  # type: ignore[no-untyped-def]
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    hook = ObjectnessHook(every=1)
    hook.trainer = trainer  # type: ignore[assignment]
    hook.before_train()
    target = tmp_path / SNAPSHOT_DIR / "image.json"
    assert [dst for _, dst in renames] == [target]
    src = renames[0][0]
    assert src.parent == target.parent and src != target and not src.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["image.json"]  # no temp file left behind
    info = json.loads(target.read_text())
    assert info["key"] == "val/img" and info["boxes"] == [[1.0, 2.0, 30.0, 40.0]] and info["classes"] == [1]


# -- 3. reparameterize does not touch the global RNG ------------------------------------------------------------------
def test_reparameterize_leaves_the_callers_random_stream_alone() -> None:
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 3).eval()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    deploy = reparameterize(model)
    assert torch.equal(torch.get_rng_state(), state)
    fused = fuse_blocks(copy.deepcopy(model))  # the in-place fusion too (its fresh convs are overwritten)
    assert torch.equal(torch.get_rng_state(), state)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(deploy(x), model(x), rtol=0, atol=1e-3)
    torch.testing.assert_close(fused(x), model(x), rtol=0, atol=1e-3)


# -- 4. loading with only aux changed keeps the class names (and so the class rows) ----------------------------------
@pytest.mark.parametrize("aux", [False, True])
def test_load_with_flipped_aux_keeps_class_names(tmp_path: Path, aux: bool) -> None:
    spec = scale_width(get_spec("yolov7-tiny"), 0.25)
    model = build_model(spec, 2, class_names=["a", "b"], aux=aux)
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(path, aux=not aux)
    assert loaded.model.aux is (not aux)
    assert loaded.model.names == ["a", "b"]
    assert loaded.transfer is not None and loaded.transfer.new_classes == []  # class rows kept, not re-initialised
    for i in range(model.head.nl):
        assert torch.equal(loaded.model.head.m[i].weight, model.head.m[i].weight)


# -- 5. a stop during the dataset check skips the images not yet decoded ---------------------------------------------
def _fake_dataset(tmp_path: Path, n: int) -> DetectionDataset:
    recs = tuple(
        ImageRecord(tmp_path / f"{i}.jpg", 64, 64, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), "train", key=str(i))
        for i in range(n)
    )
    return DetectionDataset(tmp_path, "yolo", ("a",), recs)


class _SlowDecoder:
    """Stands in for ``_check_image_file``: counts calls; every call but the first takes ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.calls, self.lock = delay_s, 0, threading.Lock()

    def __call__(self, path: Path) -> tuple[str, None, None]:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if not first:
            time.sleep(self.delay_s)
        return path.name, None, None


def test_should_stop_skips_the_images_not_yet_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = _SlowDecoder(0.01)
    monkeypatch.setattr(check_mod, "_check_image_file", decoder)
    with pytest.raises(CheckStopped, match="stop requested while decoding"):
        check_dataset(_fake_dataset(tmp_path, 60), decode=True, should_stop=lambda: decoder.calls >= 3)
    # each image asks first; at most one per worker thread can have asked just before the third started
    assert decoder.calls <= 3 + 4


def test_interrupted_check_does_not_wait_for_the_whole_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = _SlowDecoder(0.2)
    monkeypatch.setattr(check_mod, "_check_image_file", decoder)

    class Interrupt(Exception):
        pass

    def progress(fraction: float, message: str) -> None:
        if fraction > 0:
            raise Interrupt  # stands in for Ctrl-C (KeyboardInterrupt) or a UI cancelling

    with pytest.raises(Interrupt):
        check_dataset(_fake_dataset(tmp_path, 40), decode=True, progress=progress)
    time.sleep(0.3)  # let the images in hand finish: no further image is started
    # the first image plus those the worker threads had in hand; before, all 40 were decoded first
    assert decoder.calls <= 1 + 4
