"""Re-parameterization: from the training form to the lean deploy form, with the same outputs.

* :func:`fuse_blocks` folds every BatchNorm into its conv and every RepConv into one 3x3 conv, in place.
* :func:`reparameterize` builds the deploy network of the same variant (plain ``Detect`` head, no auxiliary
  branch), copies the weights, folds the implicit terms of ``IDetect`` into the head convs and fuses the
  blocks. Its state dict has the keys of ``deploy/<name>#fused`` of the official implementation.

Neither draws from the caller's random streams (the throwaway init of the fresh layers uses a forked RNG).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from core.models.blocks import Conv, RepConv
from core.models.heads import IDetect
from core.models.yolo import Yolo


@contextlib.contextmanager
def _callers_rng_kept(model: nn.Module) -> Iterator[None]:
    """The random init of the fresh layers made inside (overwritten right away) is drawn from a forked RNG, so the
    caller's CPU and CUDA random streams are as before: a deploy copy made mid-training (or in a test) must not
    change what the training draws next."""
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        yield


@torch.no_grad()
def fuse_blocks(model: nn.Module) -> nn.Module:
    """Call ``reparameterize()`` on every fusable block (Conv+BN, RepConv) of ``model``, in place."""
    with _callers_rng_kept(model):
        for m in list(model.modules()):
            fn = getattr(m, "reparameterize", None)
            if callable(fn) and m is not model:
                fn()
    return model


def is_fused(model: nn.Module) -> bool:
    """True when some fusable block of ``model`` is already in its fused form."""
    return any(
        isinstance(m, Conv) and not hasattr(m, "bn") or isinstance(m, RepConv) and hasattr(m, "rbr_reparam")
        for m in model.modules()
    )


@torch.no_grad()
def reparameterize(model: Yolo, *, fuse: bool = True) -> Yolo:
    """Deploy form of ``model`` (a new module in eval mode; ``model`` is not changed).

    The implicit terms are folded as ``W' = W * im`` and ``b' = (b + W @ ia) * im``; the auxiliary branch
    (its 3x3 convs and ``m2``) is dropped; anchors (possibly changed by autoanchor) are kept.
    With ``fuse=False`` the result is the unfused deploy config (``deploy/<name>`` keys), unless ``model`` is
    already fused (e.g. an official ``fuse()``d training model): then the result is fused too.
    """
    if model.deploy:
        out = copy.deepcopy(model).eval()
        return fuse_blocks(out) if fuse else out  # type: ignore[return-value]
    p = next(model.parameters())
    with _callers_rng_kept(model):  # its random init is overwritten below
        deploy = Yolo(model.spec, model.nc, deploy=True, class_names=model.names)
    deploy = deploy.to(device=p.device, dtype=p.dtype)
    if is_fused(model):
        fuse_blocks(deploy)  # same key layout as the source (conv.bias / rbr_reparam instead of bn / branches)
    src, dst = model.state_dict(), deploy.state_dict()
    head_i = len(deploy.model) - 1
    for key in dst:
        layer = int(key.split(".")[1])
        if layer < head_i:
            dst[key] = src[key]
    train_head, deploy_head = model.head, deploy.head
    prefix = f"model.{head_i}."
    dst[prefix + "anchors"] = train_head.anchors.clone()
    dst[prefix + "anchor_grid"] = train_head.anchor_grid.clone()
    if isinstance(train_head, IDetect):
        for i, (w, b) in enumerate(train_head.folded_convs()):
            dst[f"{prefix}m.{i}.weight"], dst[f"{prefix}m.{i}.bias"] = w, b
    else:
        for i in range(deploy_head.nl):
            dst[f"{prefix}m.{i}.weight"] = train_head.m[i].weight
            dst[f"{prefix}m.{i}.bias"] = train_head.m[i].bias
    deploy.load_state_dict(dst, strict=True)
    deploy.eval()
    return fuse_blocks(deploy) if fuse else deploy  # type: ignore[return-value]


@torch.no_grad()
def equivalence(reference: Yolo, candidate: Yolo, x: torch.Tensor) -> dict[str, float]:
    """Max absolute differences of the decoded outputs on ``x``: boxes (pixels) and probabilities."""
    was = reference.training, candidate.training
    reference.eval()
    candidate.eval()
    a, b = reference(x), candidate(x)
    reference.train(was[0])
    candidate.train(was[1])
    return {
        "box_px": float((a[..., :4] - b[..., :4]).abs().max()),
        "prob": float((a[..., 4:] - b[..., 4:]).abs().max()),
        "box_px_max": float(a[..., :4].abs().max()),
    }
