"""Exponential moving average of the model weights, with the official decay ramp."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel wrappers."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


class ModelEMA:
    """``v <- d * v + (1 - d) * v_model`` for every floating-point state-dict entry (BN statistics included),
    with ``d(u) = decay * (1 - exp(-u / tau))`` and ``u`` the number of updates, incremented before use
    (official: decay 0.9999, tau 2000). The EMA copy stays in float32 and in eval mode."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(unwrap(model)).eval().float()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay_max, self.tau, self.updates = decay, tau, updates

    def decay(self) -> float:
        return self.decay_max * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay()
        msd = unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d)
                v.add_(msd[k].detach().float(), alpha=1 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"state_dict": self.ema.state_dict(), "updates": self.updates, "decay": self.decay_max, "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])
        self.decay_max = float(state.get("decay", self.decay_max))
        self.tau = float(state.get("tau", self.tau))
