"""Read official YOLOv7 ``.pt`` files without importing or running any foreign code.

Official checkpoints pickle whole ``models.yolo.Model`` objects (FACTS.md 1f). A restricted unpickler maps
the official classes (``models.*``) and the PyTorch module classes (``torch.nn.modules.*``) to inert
stand-ins that only store their attributes, allows the handful of functions needed to rebuild tensors and
numpy arrays, and refuses every other global, so a crafted file cannot execute code. The file is inspected
first (:mod:`core.checkpoint.safety`): a TorchScript archive never reaches ``torch.load``.

``Model.fuse()`` sets ``forward = fuseforward`` on the fused ``Conv`` and ``IDetect``/``IAuxDetect`` modules;
a bound method pickles as ``getattr(<module>, 'fuseforward')``. ``getattr`` is allowed for exactly that:
an official stand-in and the name ``fuseforward``, and it returns an inert :class:`FusedForward` marker.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.checkpoint.safety import UnsafeCheckpointError, read_plain_checkpoint


class Inert:
    """Stand-in for a pickled official/PyTorch module: keeps the pickled ``__dict__`` and nothing else."""

    _origin = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"unexpected pickled state for {self._origin}: {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<inert {self._origin}>"


_STANDINS: dict[str, type[Inert]] = {}


class FusedForward:
    """What ``getattr(<official module>, 'fuseforward')`` unpickles to: a note that the module was fused."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def __repr__(self) -> str:
        return f"<fuseforward of {self.origin}>"


def _fuseforward_ref(obj: Any, name: Any) -> FusedForward:
    """The only ``getattr`` a checkpoint may call: ``fuseforward`` of an official (``models.*``) stand-in."""
    if type(name) is str and name == "fuseforward" and isinstance(obj, Inert) and obj._origin.startswith("models."):
        return FusedForward(obj._origin)
    what = getattr(obj, "_origin", type(obj).__name__)
    raise UnsafeCheckpointError(
        f"refused getattr(<{what}>, {name!r}): only an official fused model's 'fuseforward' is allowed "
        "(the file may try to execute code)"
    )


def _standin(module: str, name: str) -> type[Inert]:
    key = f"{module}.{name}"
    if key not in _STANDINS:
        _STANDINS[key] = type(name, (Inert,), {"_origin": key})
    return _STANDINS[key]


def _allowed_functions() -> dict[tuple[str, str], Any]:
    import _codecs
    import copyreg

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("_codecs", "encode"): _codecs.encode,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("builtins", "getattr"): _fuseforward_ref,
        ("__builtin__", "getattr"): _fuseforward_ref,
    }
    for attr in ("_rebuild_parameter_with_state", "_rebuild_tensor_v3"):
        if hasattr(torch._utils, attr):
            allowed[("torch._utils", attr)] = getattr(torch._utils, attr)
    for dtype in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
        allowed[("torch", dtype)] = getattr(torch, dtype)
    import numpy as np

    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _np_reconstruct()
        allowed[(mod, "scalar")] = _np_scalar()
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


def _np_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _np_scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # pragma: no cover
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return scalar


_STANDIN_PREFIXES = ("models.", "torch.nn.modules.", "utils.")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler with an allow-list; official and torch module classes become inert stand-ins."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        cls = type(self)
        if cls._allowed is None:
            cls._allowed = _allowed_functions()
        if (module, name) in cls._allowed:
            return cls._allowed[(module, name)]
        if module.startswith(_STANDIN_PREFIXES) and name.isidentifier() and name[:1].isupper():
            return _standin(module, name)
        raise UnsafeCheckpointError(
            f"refused to load global '{module}.{name}': not part of a YOLOv7 checkpoint "
            "(the file may try to execute code)"
        )


class _RestrictedPickleModule:
    """Module-like object for ``torch.load(pickle_module=...)``."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "restricted_pickle"

    @staticmethod
    def load(f: Any, **kw: Any) -> Any:  # used for legacy (non-zip) files
        return RestrictedUnpickler(f, **kw).load()


@dataclass
class OfficialCheckpoint:
    """What an official file holds, as plain data: fp32 state dict and the model's attributes."""

    state_dict: dict[str, torch.Tensor]
    class_names: list[str] | None
    activation: str | None  # "leaky" or "silu" as found in the pickled Conv modules
    source: str  # which entry the weights came from: 'ema' or 'model'
    epoch: int | None
    info: dict[str, Any] = field(default_factory=dict)
    fused_head: bool = False  # official fuse(): implicit terms already folded into the head convs


def pickled_globals(path: str | Path) -> list[str]:
    """Every ``module.name`` global the file's pickle references (for diagnostics and tests)."""
    import pickletools

    with zipfile.ZipFile(path) as zf:
        pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        data = zf.read(pkl)
    found: list[str] = []
    strings: list[str] = []
    for op, arg, _pos in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(str(arg))
        elif op.name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
    return sorted(set(found))


def _module_state(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    d = getattr(obj, "__dict__", {})
    for name, p in (d.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p.detach()
    skip = d.get("_non_persistent_buffers_set") or set()
    for name, b in (d.get("_buffers") or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            _module_state(child, f"{prefix}{name}.", out)


def _activation(obj: Any) -> str | None:
    """'leaky' or 'silu' from the first pickled Conv's ``act`` module."""
    stack = [obj]
    while stack:
        m = stack.pop()
        mods = getattr(m, "__dict__", {}).get("_modules") or {}
        act = mods.get("act")
        if act is not None and "conv" in mods:
            origin = getattr(act, "_origin", "")
            return "leaky" if origin.endswith("LeakyReLU") else "silu" if origin.endswith("SiLU") else None
        stack.extend(c for c in mods.values() if c is not None)
    return None


def load_official(path: str | Path, data: io.BytesIO | None = None) -> OfficialCheckpoint:
    """Load an official train.py / stripped / deploy / ``fuse()``d ``.pt`` file safely (no foreign code runs).

    ``data``: the file's bytes as returned by :func:`core.checkpoint.safety.read_plain_checkpoint` (read and
    checked here when not given; ``path`` then only names the file). Raises :class:`UnsafeCheckpointError`
    for a TorchScript archive or a file that references anything outside the allow-list, and ``ValueError``
    when the file is not a checkpoint or holds no model.
    """
    buf = read_plain_checkpoint(path) if data is None else data
    buf.seek(0)
    ckpt = torch.load(buf, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False, mmap=False)
    if isinstance(ckpt, Inert):  # a bare pickled model
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a YOLOv7 checkpoint (top-level object is {type(ckpt).__name__})")
    source = "ema" if isinstance(ckpt.get("ema"), Inert) else "model"
    model = ckpt.get(source)
    if not isinstance(model, Inert):
        raise ValueError(f"{path}: no pickled model under 'model' or 'ema' (keys: {sorted(ckpt)})")
    sd: dict[str, torch.Tensor] = {}
    _module_state(model, "", sd)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    names = getattr(model, "names", None)
    if isinstance(names, dict):  # some forks store {id: name}
        names = [names[k] for k in sorted(names)]
    epoch = ckpt.get("epoch")
    info = {k: v for k, v in ckpt.items() if k in ("epoch", "training_results") and not isinstance(v, Inert)}
    info["entries"] = sorted(str(k) for k in ckpt)
    info["model_class"] = getattr(model, "_origin", "?")
    fused_head = _head_is_fused(model)
    if fused_head:
        info["fused"] = "official fuse(): BN folded, implicit terms folded into the head"
    return OfficialCheckpoint(
        sd,
        list(names) if names is not None else None,
        _activation(model),
        source,
        int(epoch) if isinstance(epoch, int) else None,
        info,
        fused_head,
    )


def _head_is_fused(model: Any) -> bool:
    """True when the last layer (the head) was pickled with ``forward = fuseforward`` (official ``fuse()``)."""
    layers = getattr(getattr(model, "__dict__", {}).get("_modules", {}).get("model"), "__dict__", {})
    children = list((layers.get("_modules") or {}).values())
    head = children[-1] if children else None
    return isinstance(getattr(head, "__dict__", {}).get("forward"), FusedForward)
