"""Recognise which variant and form a state dict belongs to, from its keys and shapes alone."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from core.models import SPECS, build_model, fuse_blocks


@dataclass(frozen=True)
class Variant:
    """What a state dict is: model name, official form, whether fused, aux head, number of classes."""

    name: str
    deploy: bool
    fused: bool
    aux: bool
    num_classes: int

    def describe(self) -> str:
        form = ("deploy" if self.deploy else "training") + (" (fused)" if self.fused else "")
        aux = ", aux head" if self.aux else ""
        return f"{self.name} {form}{aux}, {self.num_classes} classes"


@cache
def _build_meta(name: str, deploy: bool, aux: bool, fused: bool) -> torch.nn.Module:
    with torch.device("meta"):
        model = build_model(name, 1, deploy=deploy, aux=aux)
        if fused:
            fuse_blocks(model)
    return model


@cache
def _signature(name: str, deploy: bool, aux: bool, fused: bool) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Keys and shapes of a variant, with the class-dependent head dimension replaced by -1."""
    model = _build_meta(name, deploy, aux, fused)
    head = len(model.model) - 1  # type: ignore[arg-type]
    return tuple((k, _normalise(k, tuple(v.shape), head)) for k, v in model.state_dict().items())


def _normalise(key: str, shape: tuple[int, ...], head: int) -> tuple[int, ...]:
    """Replace the na*(5+nc) dimension of the head's class-dependent tensors by -1."""
    parts = key.split(".")
    if len(parts) > 3 and parts[1] == str(head):
        if parts[2] in ("m", "m2"):
            return (-1,) + shape[1:]
        if parts[2] == "im":
            return shape[:1] + (-1,) + shape[2:]
    return shape


def head_index(state_dict: dict[str, torch.Tensor]) -> int:
    return max(int(k.split(".")[1]) for k in state_dict if k.startswith("model."))


def identify(state_dict: dict[str, torch.Tensor], prefer: str | None = None) -> Variant:
    """The variant whose keys and shapes equal ``state_dict``'s (any number of classes).

    Raises ``ValueError`` naming the closest candidates when nothing matches. yolov7-tiny and
    yolov7-tiny-silu have identical keys: ``prefer`` picks between equal matches (default: yolov7-tiny).
    """
    keys = [k for k in state_dict if k.startswith("model.")]
    if not keys:
        raise ValueError("not a YOLOv7 state dict: no 'model.<layer>.' keys")
    head = head_index(state_dict)
    conv0 = state_dict.get(f"model.{head}.m.0.weight")
    if conv0 is None:
        raise ValueError(f"no detection head at layer {head} (missing 'model.{head}.m.0.weight')")
    na = state_dict[f"model.{head}.anchors"].shape[1] if f"model.{head}.anchors" in state_dict else 3
    no = conv0.shape[0] // na
    nc = no - 5
    given = tuple((k, _normalise(k, tuple(state_dict[k].shape), head)) for k in keys)
    nl = state_dict[f"model.{head}.anchors"].shape[0] if f"model.{head}.anchors" in state_dict else None
    names = sorted(SPECS, key=lambda n: (n != prefer, n))
    best: tuple[int, str] = (10**9, "")
    for name in names:
        spec = SPECS[name]
        if nl is not None and len(spec.anchors) != nl:
            continue
        for deploy in (False, True):
            for aux in (False,) if deploy else (spec.default_aux, not spec.default_aux):
                if len(_build_meta(name, deploy, aux, False).model) - 1 != head:  # type: ignore[arg-type]
                    continue
                for fused in (False, True):
                    sig = _signature(name, deploy, aux, fused)
                    if len(sig) == len(given) and sig == given:
                        return Variant(name, deploy, fused, aux, nc)
                    diff = len(set(sig) ^ set(given))
                    best = min(best, (diff, f"{name} {'deploy' if deploy else 'training'}"))
    raise ValueError(
        f"state dict with {len(keys)} model keys (head at layer {head}) matches no known variant; "
        + (f"closest: {best[1]} ({best[0]} differing keys)" if best[1] else "no variant has its head at that layer")
    )
