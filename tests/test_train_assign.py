"""``yolov7-studio train --assign STRATEGY --aux-wiring WIRING`` (issue 16): the settings reach the model and the loss,
are stored in the run directory and the checkpoint, survive a resume; bad values are refused; ``core.train`` does not
import the explorer (hooks are registered by the caller)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import core.loss
from core.checkpoint.io import load_model, read_checkpoint
from core.cli import build_parser, main
from core.data.demo import make_demo_dataset
from core.explore import ObjectnessHook, training_hooks
from core.train import TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("assign") / "demo", n_images=8, img_size=64)


def _train_args(demo: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(demo), "--model", "yolov7-tiny", "--width", "0.25", "--img", "64", "--batch", "4",
            "--nbs", "4", "--workers", "0", "--epochs", "2", "--device", "cpu", "--recipe", "official",
            "--plots", "html", "--no-progress", "--seed", "1", "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def run(demo: Path, tmp_path_factory) -> Path:
    """One optimizer step with the independent strategy and the partial wiring, through the CLI."""
    out = tmp_path_factory.mktemp("assign_run") / "run"
    code = main(_train_args(demo, out, "--aux", "--assign", "independent", "--aux-wiring", "partial",
                            "--objectness-every", "1", "--max-steps", "1"))  # fmt: skip
    assert code == 0
    return out


def test_strategy_and_wiring_are_stored_in_the_run_directory(run: Path) -> None:
    payload = json.loads((run / "config.json").read_text())
    cfg = payload["config"]
    assert (cfg["assign"], cfg["aux_wiring"], cfg["assign_bound"], cfg["aux"]) == ("independent", "partial", None, True)
    assert payload["assign"] == {
        "strategy": "independent", "bound": core.loss.DEFAULT_BOUND, "aux_wiring": "partial", "aux": True
    }  # fmt: skip
    assert payload["model"]["aux_wiring"] == "partial"
    log = (run / "train.log").read_text()
    assert "aux head on (assign independent, aux wiring partial)" in log


def test_the_checkpoint_carries_them(run: Path) -> None:
    ck = read_checkpoint(run / "weights" / "last.pt")
    assert ck["model"]["aux"] and ck["model"]["aux_wiring"] == "partial"
    assert ck["train"]["config"]["assign"] == "independent" and ck["train"]["config"]["aux_wiring"] == "partial"
    assert ck["train"]["assign"]["strategy"] == "independent"
    assert ck["train"]["assign"]["bound"] == core.loss.DEFAULT_BOUND
    model = load_model(run / "weights" / "last.pt").model
    assert model.aux_wiring == "partial" and [model.model[i].f for i in model.aux_from] == [54, 62, 70]


def test_the_cli_registers_the_objectness_hook(run: Path) -> None:
    assert (run / "objectness" / "epoch_000.npz").is_file()  # written by ObjectnessHook before training


def test_resume_keeps_strategy_and_wiring_and_a_hookless_trainer_says_so(run: Path) -> None:
    cfg = TrainConfig.from_dict(read_checkpoint(run / "weights" / "last.pt")["train"]["config"]).replace(max_steps=2)
    lines: list[str] = []
    trainer = Trainer(cfg, resume=run, log=lines.append)  # no hooks: objectness_every=1 is not acted on
    assert trainer.fit()["state"] == "stopped"
    assert trainer.model.aux_wiring == "partial" and trainer.iteration == 2
    assert trainer.loss_fn.strategy == "independent" and trainer.loss_fn.bound == core.loss.DEFAULT_BOUND
    assert any("no objectness hook was registered" in line for line in lines)
    assert read_checkpoint(run / "weights" / "last.pt")["train"]["assign"]["strategy"] == "independent"


def test_bounded_strategy_with_its_bound(demo: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(_train_args(demo, tmp_path / "b", "--aux", "--assign", "coarse-to-fine-bounded",
                                                 "--assign-bound", "0.5"))  # fmt: skip
    from core.cli.train import config_from_args

    cfg = config_from_args(args)
    assert (cfg.assign, cfg.assign_bound, cfg.aux_wiring) == ("coarse-to-fine-bounded", 0.5, None)
    from core.models import build_model
    from core.train.setup import build_loss, describe_assignment, resolve_hyp

    model = build_model("yolov7-tiny", 2, aux=True)
    loss = build_loss(model, resolve_hyp(cfg), 64, 0.0, assign=cfg.assign, bound=cfg.assign_bound)
    assert (loss.strategy, loss.bound) == ("coarse-to-fine-bounded", 0.5)
    assert describe_assignment(cfg, model) == "assign coarse-to-fine-bounded (bound 0.5), aux wiring top-down"
    default = build_loss(model, resolve_hyp(cfg), 64, 0.0)
    assert (default.strategy, default.bound) == (core.loss.DEFAULT_ASSIGN, core.loss.DEFAULT_BOUND)


def test_defaults_are_the_official_behaviour() -> None:
    cfg = TrainConfig(data="x")
    assert (cfg.assign, cfg.assign_bound, cfg.aux_wiring) == ("coarse-to-fine", None, None)
    assert cfg.assign == core.loss.DEFAULT_ASSIGN


def test_unknown_strategy_is_refused_with_the_choices(demo: Path, tmp_path: Path, capsys) -> None:
    choices = "independent, lead-guided, coarse-to-fine, coarse-to-fine-bounded"
    with pytest.raises(ValueError, match=f"unknown assignment strategy 'greedy'; choose one of {choices}"):
        TrainConfig(data="x", assign="greedy")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "x", "--assign", "greedy"])
    err = capsys.readouterr().err
    assert "invalid choice: 'greedy'" in err and "independent, lead-guided" in err.replace("'", "")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"config": {"data": str(demo), "assign": "greedy"}}))
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and choices in err
    with pytest.raises(ValueError, match=r"assign_bound \(the ceiling's strength\) must be a number >= 0"):
        TrainConfig(data="x", assign_bound=-1.0)


def test_partial_wiring_needs_an_aux_head_and_a_p5_model(demo: Path, tmp_path: Path, capsys) -> None:
    assert main(_train_args(demo, tmp_path / "a", "--aux-wiring", "partial")) == 2  # yolov7-tiny: no aux by default
    assert "has none by default: add --aux" in capsys.readouterr().err
    assert main(_train_args(demo, tmp_path / "b", "--aux-wiring", "partial", "--no-aux")) == 2
    assert "the auxiliary head is off" in capsys.readouterr().err
    assert main(_train_args(demo, tmp_path / "c", "--aux-wiring", "partial", "--model", "yolov7-e6")) == 2
    assert "yolov7-e6 is a P6 model, which keeps its official auxiliary wiring" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abc")  # refused before a run directory is made
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "x", "--aux-wiring", "sideways"])


def test_training_hooks_follow_the_config() -> None:
    assert training_hooks(TrainConfig(data="x")) == []
    (hook,) = training_hooks(TrainConfig(data="x", objectness_every=3))
    assert isinstance(hook, ObjectnessHook) and hook.every == 3


def test_core_train_does_not_import_the_explorer() -> None:
    code = "import sys, core.train, core.train.trainer, core.train.setup; " \
           "print([m for m in sys.modules if m.startswith('core.explore')])"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fine_tuning_keeps_the_start_checkpoints_wiring_unless_asked(run: Path, demo: Path) -> None:
    """Default aux_wiring (None): a partial-wired start checkpoint stays partial; asking for top-down rewires it."""
    from core.data import load_dataset
    from core.train.setup import build_or_load_model

    dataset = load_dataset(str(demo))
    weights = str(run / "weights" / "last.pt")
    kept, _ = build_or_load_model(TrainConfig(data=str(demo), weights=weights, aux=True), dataset, None)
    assert kept.aux_wiring == "partial"
    rewired, _ = build_or_load_model(
        TrainConfig(data=str(demo), weights=weights, aux=True, aux_wiring="top-down"), dataset, None
    )
    assert rewired.aux_wiring == "top-down"
    scratch, _ = build_or_load_model(
        TrainConfig(data=str(demo), model="yolov7-tiny", aux=True, width=0.25), dataset, None
    )
    assert scratch.aux_wiring == "top-down"
