"""The training recipe's formulas against numbers worked out by hand from ../shared/yolov7/FACTS.md (section 1e).

Every expected value is a literal, with the arithmetic that produced it in a comment: none is computed by the
code under test. The official recipe (FACTS.md 1e):

* EMA decay d(u) = 0.9999 * (1 - exp(-u / 2000)), u = optimizer steps, incremented before use;
  v <- d * v + (1 - d) * v_model on every floating-point state-dict entry.
* one-cycle lf(e) = ((1 - cos(e * pi / epochs)) / 2) * (lrf - 1) + 1;
  linear lf(e) = (1 - e / (epochs - 1)) * (1 - lrf) + lrf.
* warmup over nw = max(round(warmup_epochs * nb), 1000) iterations: bias lr from warmup_bias_lr (0.1) and the other
  groups from 0 to lr0 * lf(epoch); momentum from warmup_momentum (0.8) to momentum (0.937); accumulate =
  max(1, round(interp(ni, [0, nw], [1, nbs / batch]))).
* accumulate = max(round(nbs / batch), 1), weight_decay *= batch * accumulate / nbs (nbs = 64).
* groups: 0 = BN weights + implicit parameters (no decay), 1 = other weights (decay), 2 = biases (no decay).
* fitness = 0.1 * mAP@.5 + 0.9 * mAP@.5:.95.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.models.blocks import ImplicitA, ImplicitM
from core.train import TrainConfig, Trainer, fitness
from core.train.ema import ModelEMA
from core.train.hooks import Hook
from core.train.optim import accumulation, apply_warmup, build_optimizer, lr_lambda, param_groups, warmup_iterations

# the official hyp values shared by all four hyp files (FACTS.md 1e table)
LR0, MOMENTUM, WEIGHT_DECAY, WARMUP_MOMENTUM, WARMUP_BIAS_LR = 0.01, 0.937, 0.0005, 0.8, 0.1


# -- EMA -----------------------------------------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=True)
        self.bn = nn.BatchNorm2d(1)
        self.ia = ImplicitA(1)
        self.im = ImplicitM(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.im(self.bn(self.conv(self.ia(x))))


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        (0, 0.0),  # 0.9999 * (1 - e^0) = 0
        (1, 0.000499825033),  # exp(-1/2000) = 0.999500125; 1 - that = 0.000499875; * 0.9999 = 0.000499825
        (2, 0.000999400217),  # exp(-2/2000) = 0.999000500; 1 - that = 0.000999500; * 0.9999 = 0.000999400
        (1000, 0.393429993),  # exp(-0.5) = 0.606530660; 0.393469340 * 0.9999 = 0.393429993
        (2000, 0.632057347),  # exp(-1) = 0.367879441; 0.632120559 * 0.9999 = 0.632057347
        (10000, 0.993162727),  # exp(-5) = 0.006737947; 0.993262053 * 0.9999 = 0.993162727
    ],
)
def test_ema_decay_ramp(updates: int, expected: float) -> None:
    ema = ModelEMA(_Tiny(), updates=updates)
    assert ema.decay() == pytest.approx(expected, abs=1e-9)


def test_ema_decay_tends_to_0_9999() -> None:
    assert ModelEMA(_Tiny(), updates=10**6).decay() == pytest.approx(0.9999, abs=1e-12)  # exp(-500) ~ 0


def test_ema_update_counts_before_use_and_averages_every_float_entry() -> None:
    model = _Tiny()
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype.is_floating_point:
                v.fill_(1.0)
    ema = ModelEMA(model)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype.is_floating_point:
                v.fill_(3.0)
        model.bn.num_batches_tracked.fill_(7)
    ema.update(model)
    assert ema.updates == 1
    # u is incremented BEFORE use, so d = d(1) = 0.000499825033 (with u = 0, d would be 0 and the EMA would just
    # copy the model: 3.0). v = d * 1 + (1 - d) * 3 = 3 - 2 d = 3 - 0.000999650067 = 2.999000350
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:  # weights, biases, implicit terms and the BN running statistics
            assert float(v.flatten()[0]) == pytest.approx(2.999000350, abs=1e-6), k
    assert int(ema.ema.bn.num_batches_tracked) == 0  # integer buffers are not averaged
    ema.update(model)
    # d(2) = 0.000999400217; v = d * 2.999000350 + (1 - d) * 3 = 3 - d * 0.000999650 = 3 - 0.000000999050 = 2.999999001
    assert float(ema.ema.conv.weight.flatten()[0]) == pytest.approx(2.999999001, abs=1e-6)


def test_ema_copy_is_frozen_float32_and_in_eval_mode() -> None:
    ema = ModelEMA(_Tiny().half())
    assert not ema.ema.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in ema.ema.parameters())


# -- learning-rate lambdas ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("epochs", "lrf", "epoch", "expected"),
    [
        (300, 0.1, 0, 1.0),  # cos 0 = 1: (0 / 2) * (0.1 - 1) + 1 = 1
        (300, 0.1, 75, 0.868198052),  # cos(pi/4) = 0.707106781; (0.292893219 / 2) * -0.9 + 1 = 1 - 0.131801948
        (300, 0.1, 100, 0.775),  # cos(pi/3) = 0.5; (0.5 / 2) * -0.9 + 1 = 1 - 0.225
        (300, 0.1, 150, 0.55),  # cos(pi/2) = 0; (1 / 2) * -0.9 + 1
        (300, 0.1, 300, 0.1),  # cos(pi) = -1; (2 / 2) * -0.9 + 1 = lrf
        (300, 0.2, 150, 0.6),  # p6 lrf 0.2: (1 / 2) * -0.8 + 1
        (300, 0.01, 300, 0.01),  # tiny lrf 0.01 at the end: (2 / 2) * -0.99 + 1
        (10, 0.1, 1, 0.977975432),  # cos(pi/10) = 0.951056516; (0.048943484 / 2) * -0.9 + 1 = 1 - 0.022024568
    ],
)
def test_one_cycle_cosine_lambda(epochs: int, lrf: float, epoch: int, expected: float) -> None:
    assert lr_lambda("cosine", epochs, lrf)(epoch) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("epochs", "lrf", "epoch", "expected"),
    [
        (11, 0.01, 0, 1.0),  # (1 - 0/10) * 0.99 + 0.01
        (11, 0.01, 3, 0.703),  # (1 - 3/10) * 0.99 + 0.01 = 0.693 + 0.01
        (11, 0.01, 5, 0.505),  # (1 - 5/10) * 0.99 + 0.01 = 0.495 + 0.01
        (11, 0.01, 10, 0.01),  # (1 - 10/10) * 0.99 + 0.01: the last epoch trains at lr0 * lrf
        (101, 0.1, 25, 0.775),  # (1 - 25/100) * 0.9 + 0.1 = 0.675 + 0.1
    ],
)
def test_linear_lambda(epochs: int, lrf: float, epoch: int, expected: float) -> None:
    assert lr_lambda("linear", epochs, lrf)(epoch) == pytest.approx(expected, abs=1e-12)


def test_lambda_drives_the_per_epoch_lr_through_the_scheduler() -> None:
    opt = build_optimizer(_Tiny(), "sgd", LR0, MOMENTUM, WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lr_lambda("cosine", 300, 0.1))
    for _ in range(150):
        opt.step()
        sched.step()
    # after 150 epochs every group trains at lr0 * lf(150) = 0.01 * 0.55
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0055] * 3, abs=1e-12)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="cosine, linear"):
        lr_lambda("step", 10, 0.1)


# -- optimizer groups, warmup ----------------------------------------------------------------------------------------
def _optimizer(lf_epochs: int = 300, lrf: float = 0.1) -> tuple[_Tiny, torch.optim.Optimizer]:
    model = _Tiny()
    opt = build_optimizer(model, "sgd", LR0, MOMENTUM, WEIGHT_DECAY)
    torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lr_lambda("cosine", lf_epochs, lrf))  # sets initial_lr
    return model, opt


def test_three_official_parameter_groups() -> None:
    model, opt = _optimizer()
    g0, g1, g2 = (set(map(id, g["params"])) for g in opt.param_groups)
    assert g0 == {id(model.bn.weight), id(model.ia.implicit), id(model.im.implicit)}  # BN weights + implicit
    assert g1 == {id(model.conv.weight)}
    assert g2 == {id(model.conv.bias), id(model.bn.bias)}
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, WEIGHT_DECAY, 0.0]
    assert all(g["nesterov"] and g["momentum"] == MOMENTUM for g in opt.param_groups)
    assert [len(g) for g in param_groups(model)] == [3, 1, 2]


@pytest.mark.parametrize(
    ("ni", "lf_epoch", "bias_lr", "other_lr", "momentum"),
    [
        (0, 1.0, 0.1, 0.0, 0.8),  # the start values: warmup_bias_lr, 0, warmup_momentum
        # xi = [0, 100]; ni = 25 is a quarter of the way: bias 0.1 + 0.25 * (0.01 - 0.1) = 0.1 - 0.0225;
        # others 0.25 * 0.01; momentum 0.8 + 0.25 * (0.937 - 0.8) = 0.8 + 0.03425
        (25, 1.0, 0.0775, 0.0025, 0.83425),
        # half way, in an epoch where lf = 0.5: target 0.01 * 0.5 = 0.005; bias 0.1 + 0.5 * (0.005 - 0.1) = 0.0525;
        # others 0.5 * 0.005; momentum 0.8 + 0.5 * 0.137
        (50, 0.5, 0.0525, 0.0025, 0.8685),
        (100, 1.0, 0.01, 0.01, 0.937),  # the end: lr0 * lf and the final momentum for every group
    ],
)
def test_warmup_of_bias_lr_other_lrs_and_momentum(
    ni: int, lf_epoch: float, bias_lr: float, other_lr: float, momentum: float
) -> None:
    _, opt = _optimizer()
    apply_warmup(
        opt, ni, 100, lf_epoch, warmup_bias_lr=WARMUP_BIAS_LR, warmup_momentum=WARMUP_MOMENTUM, momentum=MOMENTUM,
        use_momentum=True,
    )  # fmt: skip
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == pytest.approx([other_lr, other_lr, bias_lr], abs=1e-12)  # group 2 holds the biases
    assert [g["momentum"] for g in opt.param_groups] == pytest.approx([momentum] * 3, abs=1e-12)


@pytest.mark.parametrize(
    ("ni", "nw", "batch", "expected"),
    [
        # nbs 64, batch 16: from 1 to 64/16 = 4 over nw = 100 iterations
        (0, 100, 16, 1),  # interp = 1
        (20, 100, 16, 2),  # 1 + 0.2 * 3 = 1.6 -> 2
        (60, 100, 16, 3),  # 1 + 0.6 * 3 = 2.8 -> 3
        (99, 100, 16, 4),  # 1 + 0.99 * 3 = 3.97 -> 4
        (100, 100, 16, 4),  # end of warmup: round(64 / 16)
        (5000, 100, 16, 4),  # after warmup: round(64 / 16)
        (5000, 100, 24, 3),  # round(64 / 24) = round(2.667) = 3
        (5000, 100, 5, 13),  # round(64 / 5) = round(12.8) = 13
        (50, 100, 128, 1),  # batch above nbs: interp(1 -> 0.5) = 0.75 -> round 1, max(1, .) = 1
        (5000, 100, 128, 1),  # max(round(64 / 128), 1) = max(0, 1) = 1
    ],
)
def test_accumulation(ni: int, nw: int, batch: int, expected: int) -> None:
    assert accumulation(ni, nw, 64, batch) == expected


@pytest.mark.parametrize(
    ("warmup_epochs", "nb", "min_iters", "total", "expected"),
    [
        (3.0, 500, 1000, 10**9, 1500),  # max(round(3 * 500), 1000) = 1500
        (3.0, 100, 1000, 10**9, 1000),  # max(round(3 * 100), 1000) = 1000: the official floor
        (3.0, 100, 0, 10**9, 300),  # floor off: round(3 * 100)
        (0.5, 3, 0, 10**9, 2),  # round(1.5) = 2 (half to even, like numpy's round in the official code)
        # our documented deviation (optim.warmup_iterations): capped at a third of the run, so a short run on a small
        # dataset is not all warmup: min(max(30, 1000), 300 // 3) = 100
        (3.0, 10, 1000, 300, 100),
    ],
)
def test_warmup_iterations(warmup_epochs: float, nb: int, min_iters: int, total: int, expected: int) -> None:
    assert warmup_iterations(warmup_epochs, nb, min_iters, total) == expected


# -- the recipe as the Trainer applies it ---------------------------------------------------------------------------
class _Recorder(Hook):
    def __init__(self) -> None:
        self.rows: dict[int, dict] = {}

    def after_step(self) -> None:
        t = self.trainer
        groups = t.optimizer.param_groups
        self.rows[t.iteration - 1] = {
            "lr": [g["lr"] for g in groups],
            "momentum": [g["momentum"] for g in groups],
            "accumulate": t.accumulate,
            "last_opt_step": t.last_opt_step,
        }


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, _Recorder]:
    from core.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("recipe")
    # 12 images, 75/25/0 split: 9 train images; batch 3 -> nb = 3 batches per epoch
    data = make_demo_dataset(root / "demo", n_images=12, img_size=64, fractions=(0.75, 0.25, 0.0))
    cfg = TrainConfig(
        data=str(data), recipe="official", model="yolov7-tiny", width=0.25, out=str(root / "run"), epochs=10, img=64,
        batch=3, nbs=8, hyp="p5", workers=0, device="cpu", seed=0, warmup_min_iters=0, eval_interval=1000,
        autoanchor=False, max_steps=10, progress=False, plots="none",
    )  # fmt: skip
    rec = _Recorder()
    trainer = Trainer(cfg, hooks=[rec], log=lambda _msg: None)
    assert trainer.fit()["state"] == "stopped"
    return trainer, rec


def test_trainer_scales_weight_decay_and_accumulation_to_nbs(recorded_run: tuple[Trainer, _Recorder]) -> None:
    trainer, _ = recorded_run
    assert trainer.steps_per_epoch == 3  # 9 train images / batch 3
    # accumulate = max(round(8 / 3), 1) = round(2.667) = 3; weight_decay = 0.0005 * 3 * 3 / 8 = 0.0045 / 8
    assert trainer.accumulate == 3
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == pytest.approx([0.0, 0.0005625, 0.0])
    # nw = min(max(round(3.0 * 3), 0), (3 * 10) // 3) = min(9, 10) = 9
    assert trainer.warmup_iters == 9


# p5 hyp, cosine one-cycle over 10 epochs, lrf 0.1 (see the lambda test): lf(0) = 1, lf(1) = 0.977975432,
# lf(2) = 0.914057647 (cos(pi/5) = 0.809016994; 1 - 0.190983006 / 2 * 0.9), lf(3) = 0.814503364
# (cos(3 pi/10) = 0.587785252; 1 - 0.412214748 / 2 * 0.9). Iteration ni is in epoch ni // 3; nw = 9.
WARMUP_TABLE = [
    # ni, bias lr, other lr, momentum, accumulate
    (0, 0.1, 0.0, 0.8, 1),  # start values; accumulate round(1) = 1
    # bias 0.1 + (1/9) * (0.01 - 0.1) = 0.09; others 0.01 / 9; momentum 0.8 + 0.137 / 9;
    # accumulate round(1 + (1/9) * (8/3 - 1)) = round(1.185) = 1
    (1, 0.09, 0.001111111, 0.815222222, 1),
    # epoch 1: target 0.01 * 0.977975432 = 0.009779754; bias 0.1 + (3/9) * (0.009779754 - 0.1) = 0.069926585;
    # others 0.009779754 / 3 = 0.003259918; momentum 0.8 + 0.137 / 3; accumulate round(1 + 3/9 * 5/3) = round(1.556) = 2
    (3, 0.069926585, 0.003259918, 0.845666667, 2),
    # epoch 2: target 0.009140576; bias 0.1 + (6/9) * (0.009140576 - 0.1) = 0.039427051; others (2/3) * 0.009140576;
    # momentum 0.8 + (2/3) * 0.137; accumulate round(1 + 6/9 * 5/3) = round(2.111) = 2
    (6, 0.039427051, 0.006093718, 0.891333333, 2),
    # epoch 3, ni = nw: every group at 0.01 * 0.814503364, momentum 0.937, accumulate round(8/3) = 3
    (9, 0.008145034, 0.008145034, 0.937, 3),
]


@pytest.mark.parametrize(("ni", "bias_lr", "other_lr", "momentum", "accumulate"), WARMUP_TABLE)
def test_trainer_warmup_per_iteration(
    recorded_run: tuple[Trainer, _Recorder], ni: int, bias_lr: float, other_lr: float, momentum: float, accumulate: int
) -> None:
    row = recorded_run[1].rows[ni]
    assert row["lr"] == pytest.approx([other_lr, other_lr, bias_lr], abs=1e-9)
    assert row["momentum"] == pytest.approx([momentum] * 3, abs=1e-9)
    assert row["accumulate"] == accumulate


def test_trainer_steps_the_optimizer_and_the_ema_on_accumulation_boundaries(
    recorded_run: tuple[Trainer, _Recorder],
) -> None:
    trainer, rec = recorded_run
    # accumulate per ni = 1,1,1,2,2,2,2,2,2,3 (round(1 + ni * 5/27)); the optimizer steps when ni % accumulate == 0
    # (the official train.py rule; not written in FACTS.md): ni = 0, 1, 2, 4, 6, 8, 9
    stepped = [ni for ni, row in sorted(rec.rows.items()) if row["last_opt_step"] == ni]
    assert [rec.rows[ni]["accumulate"] for ni in range(10)] == [1, 1, 1, 2, 2, 2, 2, 2, 2, 3]
    assert stepped == [0, 1, 2, 4, 6, 8, 9]
    assert trainer.ema is not None and trainer.ema.updates == 7  # u counts optimizer steps
    # max_steps = 10 stops after ni = 9 (an optimizer step): the run stopped mid-epoch 4 (epoch index 3)
    assert (trainer.epoch, trainer.step, trainer.iteration) == (3, 1, 10)


# -- fitness ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("map50", "map5095", "expected"),
    [
        (0.5, 0.3, 0.32),  # 0.1 * 0.5 + 0.9 * 0.3 = 0.05 + 0.27
        (1.0, 0.0, 0.1),  # 0.1 * 1
        (0.0, 1.0, 0.9),  # 0.9 * 1
        (0.886, 0.581, 0.6115),  # 0.0886 + 0.5229
    ],
)
def test_fitness(map50: float, map5095: float, expected: float) -> None:
    assert fitness({"mAP50": map50, "mAP50-95": map5095, "precision": 0.99, "recall": 0.99}) == pytest.approx(
        expected, abs=1e-12
    )


def test_fitness_of_missing_metrics_is_zero() -> None:
    assert fitness({}) == 0.0
