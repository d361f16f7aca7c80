"""Optimizer with the official three parameter groups, learning-rate schedules and the warmup rule.

Groups (official order): 0 = BatchNorm weights and implicit-knowledge parameters (no weight decay),
1 = all other weights (weight decay), 2 = all biases (no weight decay). Warmup interpolates, per iteration,
the bias group's lr from ``warmup_bias_lr`` down and the others from 0 up to ``lr0 * lf(epoch)``, the momentum
from ``warmup_momentum`` to ``momentum``, and the gradient accumulation from 1 to ``nbs / batch``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from core.models.blocks import ImplicitA, ImplicitM


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(BN weights + implicit parameters, other weights, biases); frozen parameters are left out."""
    no_decay, decay, biases = [], [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if isinstance(module, (ImplicitA, ImplicitM)) or (
                isinstance(module, nn.modules.batchnorm._BatchNorm) and name == "weight"
            ):
                no_decay.append(p)
            elif name == "bias":
                biases.append(p)
            else:
                decay.append(p)
    return no_decay, decay, biases


def build_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (official), or Adam / AdamW with betas (momentum, 0.999)."""
    g0, g1, g2 = param_groups(model)
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(g0, lr=lr, momentum=momentum, nesterov=True)
    elif name == "adam":
        opt = torch.optim.Adam(g0, lr=lr, betas=(momentum, 0.999))
    elif name == "adamw":
        opt = torch.optim.AdamW(g0, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise ValueError(f"unknown optimizer {name!r} (sgd, adam, adamw)")
    opt.add_param_group({"params": g1, "weight_decay": weight_decay})
    opt.add_param_group({"params": g2, "weight_decay": 0.0})
    return opt


def lr_lambda(schedule: str, epochs: int, lrf: float) -> Callable[[int], float]:
    """Per-epoch multiplier of lr0: ``cosine`` one-cycle from 1 to ``lrf`` (official default) or ``linear``."""
    if schedule == "cosine":
        return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
    if schedule == "linear":
        return lambda e: (1 - e / max(epochs - 1, 1)) * (1.0 - lrf) + lrf
    raise ValueError(f"unknown lr schedule {schedule!r} (cosine, linear)")


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int, min_iters: int, total_iters: int) -> int:
    """``max(round(warmup_epochs * nb), min_iters)``, capped at a third of the run (official: min_iters = 1000,
    no cap, so on small datasets the warmup covers the whole run)."""
    nw = max(round(warmup_epochs * batches_per_epoch), min_iters)
    return int(min(nw, max(total_iters // 3, 1)))


def apply_warmup(
    optimizer: torch.optim.Optimizer,
    ni: int,
    nw: int,
    lf_epoch: float,
    *,
    warmup_bias_lr: float,
    warmup_momentum: float,
    momentum: float,
    use_momentum: bool,
) -> None:
    """Set each group's lr (and momentum) for iteration ``ni < nw``, as the official warmup does."""
    xi = [0, nw]
    for j, group in enumerate(optimizer.param_groups):
        start = warmup_bias_lr if j == 2 else 0.0
        group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * lf_epoch]))
        if use_momentum:
            if "momentum" in group:
                group["momentum"] = float(np.interp(ni, xi, [warmup_momentum, momentum]))
            elif "betas" in group:
                group["betas"] = (float(np.interp(ni, xi, [warmup_momentum, momentum])), group["betas"][1])


def accumulation(ni: int, nw: int, nbs: int, batch: int) -> int:
    """Gradient accumulation steps: ramps from 1 to ``nbs / batch`` during warmup, then ``round(nbs / batch)``."""
    target = max(round(nbs / batch), 1)
    if ni < nw:
        return max(1, round(float(np.interp(ni, [0, nw], [1, nbs / batch]))))
    return target
