"""``--objectness-every N``: a 2-epoch thin-model run writes the lead/aux objectness maps of a fixed validation image
(EMA model) before training and every N epochs (N = 2 here), PNGs, and an HTML with a slider over the epochs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from core.checkpoint.io import load_model
from core.data import make_demo_dataset
from core.explore import convergence_figure, explore_image, load_snapshots, training_hooks
from core.explore.training import snapshot_figure
from core.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    demo = make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=8, img_size=96)
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(data=str(demo), model="yolov7-tiny", width=0.125, aux=True, out=str(out), epochs=2, img=64,
                      batch=4, workers=0, nbs=4, progress=False, seed=3, plots="all", objectness_every=2,
                      eval_conf=0.01)  # fmt: skip
    assert Trainer(cfg, hooks=training_hooks(cfg), log=lambda _m: None).fit()["state"] == "finished"
    return out


def test_snapshots_before_training_and_every_n_epochs(run):
    folder = run / "objectness"
    assert sorted(p.name for p in folder.glob("epoch_*.npz")) == ["epoch_000.npz", "epoch_002.npz"]
    info = json.loads((folder / "image.json").read_text())
    assert info["split"] == "val" and info["boxes"] and info["img_size"] == 64
    snaps = load_snapshots(run)
    assert [s.epoch for s in snaps] == [0, 2]
    for s in snaps:
        assert len(s.lead) == len(s.aux) == 3 and s.lead[0].shape == (3, 8, 8) and s.coarse is not None
        assert sum(len(f) for f in s.fine) > 0 and sum(len(c) for c in s.coarse) > 0
    assert not np.array_equal(snaps[0].lead[0], snaps[-1].lead[0])  # the maps move while training
    # the last snapshot is the EMA model's (the weights saved as last.pt's "ema")
    ema = load_model(run / "weights" / "last.pt").model
    exp = explore_image(ema, info["image"], info["boxes"], info["classes"], img_size=64)
    for lv in range(3):
        np.testing.assert_allclose(snaps[-1].lead[lv], exp.levels[lv].lead_obj, atol=1e-5)
        np.testing.assert_allclose(snaps[-1].aux[lv], exp.levels[lv].aux_obj, atol=1e-5)
    pngs = sorted(folder.glob("epoch_*.png"))
    if not pngs:
        pytest.skip("no Chromium for PNG export")
    assert len(pngs) == 2
    arr = np.asarray(Image.open(pngs[-1]).convert("RGB"))
    assert arr.std() > 10 and len(np.unique(arr.reshape(-1, 3), axis=0)) > 100


def test_slider_over_epochs(run):
    html = (run / "objectness" / "objectness.html").read_text()
    assert "sliders" in html and "after epoch" in html and len(html) > 1_000_000
    snaps = load_snapshots(run)
    fig = convergence_figure(run)
    assert [f.name for f in fig.frames] == ["0", "2"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "2"]
    for frame, snap in zip(fig.frames, snaps):
        maps = [t for t in frame.data if (t.meta or {}).get("role") == "map"]
        assert len(maps) == 6  # lead and aux x 3 levels
        for t in maps:
            src = snap.lead if t.meta["head"] == "lead" else snap.aux
            np.testing.assert_array_equal(np.asarray(t.z), src[t.meta["level"]].max(0))
        fine = [t for t in frame.data if (t.meta or {}).get("role") == "fine"]
        for t in fine:
            rows, s = snap.fine[t.meta["level"]], snap.strides[t.meta["level"]]
            assert list(t.x) == ((rows[:, 3] + 0.5) * s).tolist() and list(t.y) == ((rows[:, 2] + 0.5) * s).tolist()
    assert len(fig.frames[0].traces) == len(fig.frames[0].data)
    snapshot_figure(snaps[0])
