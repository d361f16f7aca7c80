"""Running a shared model in eval mode without switching it: a per-call view of its module tree.

``model.eval()`` ... ``model.train(was)`` around a forward changes the caller's model while it runs: another thread
using the same model (a training step, a prediction, another exploration) sees the wrong mode. :func:`eval_view`
gives an eval-mode twin that shares the tensors instead. Measured for yolov7 with its aux head (431 modules, 44M
parameters) on a shared 2-core AMD EPYC: 13 ms per view (40-55 ms at load average 15) and no tensor memory,
against 2.9 s for ``copy.deepcopy``.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch

__all__ = ["eval_view"]

M = TypeVar("M", bound=torch.nn.Module)


def eval_view(model: M) -> M:
    """``model`` in eval mode without touching ``model``: a copy of its module tree that shares every parameter and
    buffer (no tensor is copied), so BatchNorm uses (and never updates) the running statistics.

    ``model`` keeps its own train/eval mode, which makes a forward safe while other threads use the same model. The
    view costs one small object per module (no tensor memory); changes to the model's tensors (e.g. a training
    step, ``load_state_dict``) are seen by the view, since it holds the same tensors. Hooks registered on the
    model run on the view as well (forward hooks see the view's modules).
    """
    memo: dict[int, torch.nn.Module] = {}

    def clone(m: torch.nn.Module) -> torch.nn.Module:
        if id(m) not in memo:
            c = copy.copy(m)  # new object, same attribute values
            memo[id(m)] = c
            c._parameters = dict(m._parameters)  # same tensors; own dicts, so nothing written into the view leaks
            c._buffers = dict(m._buffers)
            for name, value in vars(m).items():  # the model's hooks run on the view too; new ones stay on the view
                if name.startswith("_") and "hook" in name and isinstance(value, dict):
                    c.__dict__[name] = copy.copy(value)
            c._modules = {k: None if v is None else clone(v) for k, v in m._modules.items()}
            c.training = False
        return memo[id(m)]

    return clone(model)  # type: ignore[return-value]  # a copy of the same class
