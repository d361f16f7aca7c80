"""Load weights into a model whose class list (or auxiliary head) differs from the checkpoint's.

Everything whose key and shape match is copied. The head tensors whose shape depends on the number of
classes (``m.*``, ``m2.*``, ``im.*``) are copied row by row: per anchor, the box and objectness rows are kept,
class rows are kept for class names present in both lists, and the other class rows keep the fresh
initialisation. The report lists exactly what was kept, partly kept, re-initialised or skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.models import Yolo


@dataclass
class TransferReport:
    """Per state-dict key: loaded as is, partly kept (rows), re-initialised, or skipped from the source."""

    loaded: list[str] = field(default_factory=list)
    partial: dict[str, str] = field(default_factory=dict)
    reinitialised: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    kept_classes: list[str] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.partial or self.reinitialised or self.skipped)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors as they are"]
        if self.partial:
            lines.append(f"head re-initialised for the new class list ({len(self.partial)} tensors partly kept):")
            lines += [f"  {k}: {v}" for k, v in self.partial.items()]
        if self.kept_classes or self.new_classes:
            lines.append(f"  class rows kept for: {', '.join(self.kept_classes) or '-'}")
            lines.append(f"  class rows newly initialised for: {', '.join(self.new_classes) or '-'}")
        if self.reinitialised:
            lines.append(
                f"not in the checkpoint, freshly initialised ({len(self.reinitialised)}): "
                + ", ".join(_compress(self.reinitialised))
            )
        if self.skipped:
            lines.append(
                f"in the checkpoint but not used by this model ({len(self.skipped)}): "
                + ", ".join(_compress(self.skipped))
            )
        return "\n".join(lines)


def _compress(keys: list[str]) -> list[str]:
    """Group keys by layer for short messages: ``model.105.* (4)``."""
    groups: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        g = ".".join(parts[:2]) + ".*" if len(parts) > 2 else k
        groups[g] = groups.get(g, 0) + 1
    return [f"{g} ({n})" if n > 1 else g for g, n in groups.items()]


def _head_prefix_map(src: dict[str, torch.Tensor], model: Yolo) -> tuple[str, str]:
    src_head = max(int(k.split(".")[1]) for k in src if k.startswith("model."))
    return f"model.{src_head}.", f"model.{len(model.model) - 1}."


@torch.no_grad()
def transfer_weights(
    model: Yolo, state_dict: dict[str, torch.Tensor], source_names: list[str] | None = None
) -> TransferReport:
    """Copy ``state_dict`` into ``model`` as far as it fits; see the module docstring. Returns the report."""
    report = TransferReport()
    src_prefix, dst_prefix = _head_prefix_map(state_dict, model)
    src = {(dst_prefix + k[len(src_prefix) :] if k.startswith(src_prefix) else k): v for k, v in state_dict.items()}
    dst = model.state_dict()
    na = model.head.na
    no_dst = model.nc + 5
    class_map: dict[int, int] = {}  # target class -> source class
    for key, t in dst.items():
        if key not in src:
            report.reinitialised.append(key)
            continue
        s = src[key]
        role = key[len(dst_prefix) :].split(".")[0] if key.startswith(dst_prefix) else ""
        renamed = source_names is not None and list(source_names) != list(model.names)
        if s.shape == t.shape and not (renamed and role in ("m", "m2", "im")):
            t.copy_(s.to(t.dtype))
            report.loaded.append(key)
            continue
        dim = 1 if role == "im" else 0
        rest_ok = s.numel() // max(s.shape[dim], 1) == t.numel() // max(t.shape[dim], 1)
        if role not in ("m", "m2", "im") or s.shape[dim] % na or not rest_ok:
            report.reinitialised.append(key)
            report.skipped.append(key)
            continue
        no_src = s.shape[dim] // na
        if not class_map and source_names is not None:
            for c, n in enumerate(model.names):
                if n in source_names and source_names.index(n) < no_src - 5:
                    class_map[c] = source_names.index(n)
        tt = t.transpose(0, dim).clone()  # class-dependent dimension first
        rows_dst = tt.reshape(na, no_dst, -1)
        rows_src = s.to(t.dtype).transpose(0, dim).reshape(na, no_src, -1)
        rows_dst[:, :5] = rows_src[:, :5]
        for c, sc in class_map.items():
            rows_dst[:, 5 + c] = rows_src[:, 5 + sc]
        t.copy_(rows_dst.reshape(tt.shape).transpose(0, dim))
        report.partial[key] = f"box/objectness rows kept, {len(class_map)}/{model.nc} class rows kept"
    for key in src:
        if key not in dst:
            report.skipped.append(key)
    model.load_state_dict(dst, strict=True)
    if report.partial:
        report.kept_classes = [model.names[c] for c in sorted(class_map)]
        report.new_classes = [n for c, n in enumerate(model.names) if c not in class_map]
    return report
