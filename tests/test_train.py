"""Training engine: run directory contract, exact resume, stop requests, early stopping, fine-tuning, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.checkpoint.io import read_checkpoint
from core.data.demo import make_demo_dataset
from core.train import Hook, RunDir, TrainConfig, Trainer
from core.train.optim import param_groups


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=24, img_size=128)


def _cfg(demo: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(demo),
        recipe="official",  # the official recipe's exact behaviour (the small-dataset one: tests/test_new_user.py)
        model="yolov7-tiny",
        width=0.25,
        out=str(out),
        epochs=2,
        img=96,
        batch=4,
        workers=0,
        nbs=4,
        progress=False,
        seed=3,
        eval_conf=0.01,
        plots="html",
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    ck = read_checkpoint(path)
    return {"model": ck["state_dict"], "ema": ck["ema"], "optimizer": ck["optimizer"]["state"]}


def _assert_same(a: dict, b: dict) -> None:
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}/{k} differs"
    for k, st in a["optimizer"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"][k]["momentum_buffer"])


def test_run_directory_contract(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    status = Trainer(_cfg(demo, out, aux=True)).fit()
    assert status["state"] == "finished" and status["epoch"] == 2
    run = RunDir(out)
    assert run.read_status()["state"] == "finished"
    rows = run.read_results()
    assert [r["epoch"] for r in rows] == [1, 2]
    for col in (
        "box",
        "obj",
        "cls",
        "aux_box",
        "aux_obj",
        "aux_cls",
        "lr0",
        "lr1",
        "lr2",
        "precision",
        "recall",
        "mAP50",
        "mAP50-95",
        "AP50/circle",
        "AP50-95/cross",
        "labels_lost_share",
        "fitness",
    ):
        assert col in rows[0], col
    assert rows[0]["aux_box"] > 0  # the aux head is trained
    assert 0 < rows[0]["labels_lost_share"] < 1
    for f in ("config.json", "metrics.json", "train.log", "weights/last.pt", "weights/best.pt"):
        assert (out / f).is_file(), f
    for f in ("losses", "metrics", "pr_curves", "confusion_matrix"):
        assert (out / "plots" / f"{f}.html").is_file()
    ck = read_checkpoint(run.last)
    assert ck["model"]["aux"] and ck["train"]["epoch"] == 2
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_cfg(demo, out)).fit()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(demo: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    Trainer(_cfg(demo, straight)).fit()
    # 1 epoch (stopped at the epoch's last step), then resume for the second epoch
    interrupted = tmp_path / "interrupted"
    steps_per_epoch = 5  # 20 training images, batch 4
    st = Trainer(_cfg(demo, interrupted, max_steps=steps_per_epoch)).fit()
    assert st["state"] == "stopped"
    assert read_checkpoint(interrupted / "weights" / "last.pt")["train"]["epoch"] == 1
    Trainer(_cfg(demo, interrupted), resume=interrupted).fit()
    _assert_same(_weights(straight / "weights" / "last.pt"), _weights(interrupted / "weights" / "last.pt"))
    # stopped in the middle of epoch 2, then resumed
    mid = tmp_path / "mid"
    Trainer(_cfg(demo, mid, max_steps=steps_per_epoch + 2)).fit()
    ck = read_checkpoint(mid / "weights" / "last.pt")["train"]
    assert (ck["epoch"], ck["step"]) == (1, 2)
    Trainer(_cfg(demo, mid), resume=mid).fit()
    _assert_same(_weights(straight / "weights" / "last.pt"), _weights(mid / "weights" / "last.pt"))
    assert len(RunDir(mid).read_results()) == 2


class _StopAfter(Hook):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def after_step(self) -> None:
        if self.trainer.iteration == self.steps:
            self.trainer.run.request_stop("test")


def test_stop_file_ends_the_run_cleanly(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "stop"
    status = Trainer(_cfg(demo, out, epochs=3), hooks=[_StopAfter(3)]).fit()
    assert status["state"] == "stopped" and status["message"] == "stop requested"
    ck = read_checkpoint(out / "weights" / "last.pt")
    assert (ck["train"]["epoch"], ck["train"]["step"]) == (0, 3)
    # the stop file is consumed by the resumed run
    Trainer(_cfg(demo, out, epochs=3), resume=out).fit()
    assert RunDir(out).read_status()["state"] == "finished"


def test_early_stopping(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "early"
    status = Trainer(
        _cfg(demo, out, epochs=6, patience=1, lr_schedule="linear", hyp_overrides={"lr0": 0.0, "warmup_bias_lr": 0.0})
    ).fit()
    # with a zero learning rate nothing improves after the first evaluation
    assert status["state"] == "finished" and status["message"].startswith("early stop")
    assert len(RunDir(out).read_results()) == 2


def test_fine_tuning_reinitialises_the_head_and_says_so(demo: Path, tmp_path: Path) -> None:
    from core.checkpoint.io import save_checkpoint
    from core.models import build_model, get_spec, scale_width

    src = build_model(
        scale_width(get_spec("yolov7-tiny"), 0.25), 7, class_names=[f"c{i}" for i in range(6)] + ["circle"]
    )
    weights = save_checkpoint(tmp_path / "src.pt", src)
    out = tmp_path / "ft"
    Trainer(_cfg(demo, out, epochs=1, weights=str(weights), freeze=(0, 1))).fit()
    log = (out / "train.log").read_text()
    assert "fine-tuning from" in log and "re-initialised" in log and "class rows kept for: circle" in log
    assert "froze layers [0, 1]" in log
    ck = read_checkpoint(out / "weights" / "last.pt")
    assert torch.equal(ck["state_dict"]["model.0.conv.weight"], src.state_dict()["model.0.conv.weight"])


def test_optimizer_groups_follow_the_official_split() -> None:
    from core.models import build_model, get_spec, scale_width

    m = build_model(scale_width(get_spec("yolov7"), 0.125), 3)
    g0, g1, g2 = param_groups(m)
    names = {id(p): n for n, p in m.named_parameters()}
    assert all(names[id(p)].endswith((".bn.weight", ".implicit")) or ".rbr_" in names[id(p)] for p in g0)
    assert any(names[id(p)].endswith(".implicit") for p in g0)
    assert all(names[id(p)].endswith(".bias") for p in g2)
    assert all(names[id(p)].endswith(".weight") and ".bn." not in names[id(p)] for p in g1)
    assert len(g0) + len(g1) + len(g2) == len(list(m.parameters()))


def test_unusable_data_gives_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "images" / "train").mkdir(parents=True)
    (empty / "labels" / "train").mkdir(parents=True)
    (empty / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a]\n")
    with pytest.raises(ValueError, match="empty"):
        Trainer(_cfg(empty / "data.yaml", tmp_path / "r")).fit()
    assert RunDir(tmp_path / "r").read_status()["state"] == "failed"


def test_reported_metrics_equal_pycocotools_on_the_exported_json(demo: Path, tmp_path: Path, capsys) -> None:
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from core.cli import main
    from core.data import load_dataset
    from core.data.io_coco import to_coco_dict

    out = tmp_path / "coco"
    Trainer(_cfg(demo, out, epochs=3, multi_scale=True, image_weights=True, aux=True, eval_conf=0.001)).fit()
    metrics = json.loads((out / "metrics.json").read_text())
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(to_coco_dict(load_dataset(demo), metrics["split"])))
    preds = json.loads((out / f"predictions_{metrics['split']}.json").read_text())
    assert preds, "the trained model must produce detections"
    coco = COCO(str(gt_file))
    ev = COCOeval(coco, coco.loadRes(preds), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert list(metrics["coco"].values()) == pytest.approx(list(ev.stats), abs=1e-12)
    # the val command gives the same numbers from the checkpoint
    capsys.readouterr()
    code = main(
        [
            "val",
            "--data",
            str(demo),
            "--weights",
            str(out / "weights" / "best.pt"),
            "--img",
            "96",
            "--conf",
            "0.001",
            "--split",
            metrics["split"],
            "--json",
            "--device",
            "cpu",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["coco"].values()) == pytest.approx(list(ev.stats), abs=1e-9)


def test_fine_tuning_from_an_official_checkpoint(demo: Path, tmp_path: Path) -> None:
    from core.models import build_model
    from tests.official_format import write_official

    official = write_official(tmp_path / "yolov7-tiny.pt", build_model("yolov7-tiny", 80), "stripped")
    out = tmp_path / "ft_official"
    Trainer(_cfg(demo, out, epochs=1, width=1.0, weights=str(official), img=64, max_steps=2)).fit()
    log = (out / "train.log").read_text()
    assert "official yolov7-tiny training, 80 classes" in log and "re-initialised" in log
    ck = read_checkpoint(out / "weights" / "last.pt")
    assert ck["model"]["num_classes"] == 4 and ck["model"]["name"] == "yolov7-tiny"
