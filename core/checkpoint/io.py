"""Our checkpoint format, atomic writes, and one loader for every kind of file.

A yolov7-studio checkpoint is a dict of plain data, readable with ``torch.load(weights_only=True)``::

    {"format": "yolov7-studio", "format_version": 1,
     "model": {"name", "num_classes", "class_names", "deploy", "fused", "aux", "aux_wiring", "anchors" (pixels),
               "strides", "spec" (full architecture, for derived variants)},
     "state_dict": {...}, "ema": {...} | None, "train": {...} | None, "optimizer": {...} | None,
     "extra": {...}, "meta": {"version", "torch", "created"}}

``aux_wiring`` (``"top-down"`` or ``"partial"``, see :mod:`core.models.builder`) is absent in files written before
it existed: they are read as ``"top-down"``. ``train`` (written by the trainer) holds the run's ``config``, which
names the assignment strategy (``config["assign"]``, ``config["assign_bound"]``) and the wiring.

Every file is inspected before any torch loading call (:mod:`core.checkpoint.safety`): TorchScript archives
and anything else that is not a plain pickle checkpoint are refused, and loading reads the inspected bytes.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core import __version__
from core.checkpoint.identify import Variant, head_index, identify
from core.checkpoint.official import load_official
from core.checkpoint.safety import NotACheckpointError, UnsafeCheckpointError, read_plain_checkpoint
from core.checkpoint.transfer import TransferReport, transfer_weights
from core.models import SPECS, Yolo, build_model, fuse_blocks
from core.models.specs import spec_from_dict, spec_to_dict

FORMAT = "yolov7-studio"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A reader (or a crash, even SIGKILL) never sees a half-written file: it sees the old one or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - not every filesystem allows it
        pass
    return path


def _is_fused(model: Yolo) -> bool:
    return not any(hasattr(m, "bn") for m in model.modules() if type(m).__name__ == "Conv")


def model_record(model: Yolo) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` (without its weights)."""
    head = model.head
    return {
        "name": model.spec.name,
        "num_classes": model.nc,
        "class_names": list(model.names),
        "deploy": model.deploy,
        "fused": _is_fused(model),
        "aux": model.aux,
        "aux_wiring": getattr(model, "aux_wiring", "top-down"),
        "anchors": head.anchor_grid.view(head.nl, head.na, 2).tolist(),
        "strides": list(head.strides),
        "spec": spec_to_dict(model.spec),
    }


def _cpu_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}


def save_checkpoint(
    path: str | Path,
    model: Yolo,
    *,
    ema: torch.nn.Module | dict | None = None,
    optimizer: dict | None = None,
    train: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring). ``ema``: a module or a state dict."""
    ema_sd = ema.state_dict() if isinstance(ema, torch.nn.Module) else ema
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_record(model),
        "state_dict": _cpu_state(model.state_dict()),
        "ema": _cpu_state(ema_sd) if ema_sd is not None else None,
        "train": train,
        "optimizer": optimizer,
        "extra": extra or {},
        "meta": {
            "version": __version__,
            "torch": str(torch.__version__),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    return atomic_save(ckpt, path)


def _read_checked(path: Path) -> io.BytesIO:
    """The file's bytes once :mod:`core.checkpoint.safety` accepts them; :class:`CheckpointError` otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return read_plain_checkpoint(path)
    except UnsafeCheckpointError as exc:
        raise CheckpointError(f"{path}: refused: {exc}") from None
    except NotACheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from None


def read_checkpoint(path: str | Path, data: io.BytesIO | None = None) -> dict[str, Any]:
    """Read one of our checkpoints with ``weights_only=True``; raises :class:`CheckpointError` otherwise.

    ``data``: the file's checked bytes when the caller already has them (see :func:`_read_checked`).
    """
    path = Path(path)
    buf = _read_checked(path) if data is None else data
    buf.seek(0)
    try:
        ckpt = torch.load(buf, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: not a yolov7-studio checkpoint (safe loading refused it: {str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a yolov7-studio checkpoint (no 'format': '{FORMAT}' entry)")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt['format_version']} is newer than this "
            f"yolov7-studio understands ({FORMAT_VERSION}); upgrade yolov7-studio"
        )
    return ckpt


def build_from_record(rec: dict[str, Any]) -> Yolo:
    """An untrained model with the architecture, classes and anchors of a checkpoint record."""
    spec = spec_from_dict(rec["spec"]) if rec.get("spec") else SPECS[rec["name"]]
    model = Yolo(
        spec,
        int(rec["num_classes"]),
        deploy=bool(rec["deploy"]),
        aux=bool(rec["aux"]),
        class_names=rec.get("class_names"),
        anchors=torch.tensor(rec["anchors"]),
        aux_wiring=str(rec.get("aux_wiring") or "top-down"),
    )
    if rec.get("fused"):
        fuse_blocks(model)
    return model


@dataclass
class LoadedModel:
    """A model read from any checkpoint, where it came from, and what was adapted."""

    model: Yolo
    kind: str  # "yolov7-studio" or "official"
    description: str
    checkpoint: dict[str, Any] = field(default_factory=dict)
    transfer: TransferReport | None = None

    def summary(self) -> str:
        text = f"{self.description} ({self.kind} checkpoint)"
        if self.transfer is not None and not self.transfer.exact:
            text += "\n" + self.transfer.summary()
        return text


def load_model(
    path: str | Path,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    use_ema: bool = True,
    aux: bool | None = None,
    aux_wiring: str | None = None,
    map_location: str | torch.device = "cpu",
) -> LoadedModel:
    """Load our checkpoints and official ``.pt`` files (train.py, stripped, deploy) into a :class:`Yolo`.

    With ``num_classes``/``class_names`` differing from the checkpoint's (fine-tuning), the class-dependent
    head tensors are re-initialised as described in :mod:`core.checkpoint.transfer`, and the returned
    ``transfer`` report says exactly what was skipped or re-initialised. ``aux`` adds or drops the auxiliary
    head (its weights are kept when present); ``aux_wiring`` rewires it (default: the checkpoint's, ``"top-down"``
    for official files and older checkpoints; the aux convs whose shape changes are re-initialised). Nothing
    foreign is imported or executed: the file is inspected first and TorchScript archives (or anything else that
    is not a plain pickle checkpoint) are refused.
    An official ``fuse()``d model (implicit terms already in the head) loads as the fused deploy form.
    """
    path = Path(path)
    data = _read_checked(path)
    try:
        ckpt = read_checkpoint(path, data)
    except CheckpointError as first:
        try:
            return _load_official(path, data, num_classes, class_names, aux, map_location, aux_wiring)
        except UnsafeCheckpointError as exc:
            raise CheckpointError(f"{path}: refused: {exc}") from None
        except (
            pickle.UnpicklingError,
            RuntimeError,
            EOFError,
            ValueError,
            KeyError,
            AttributeError,
            TypeError,
            IndexError,
        ) as exc:
            raise CheckpointError(f"{first}; not an official YOLOv7 checkpoint either ({exc})") from None
    rec = ckpt["model"]
    sd = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["state_dict"]
    source = build_from_record(rec)
    report = None
    want_nc = num_classes if num_classes is not None else (len(class_names) if class_names else source.nc)
    want_aux = source.aux if aux is None else aux
    want_wiring = source.aux_wiring if aux_wiring is None else aux_wiring
    same_wiring = not want_aux or want_wiring == source.aux_wiring
    if (
        want_nc == source.nc
        and want_aux == source.aux
        and same_wiring
        and (class_names is None or class_names == source.names)
    ):
        source.load_state_dict(sd, strict=True)
        model = source
    else:
        if class_names is None and want_nc == source.nc:
            class_names = source.names  # only the aux head (or its wiring) changes: the classes stay
        model = Yolo(
            source.spec,
            want_nc,
            deploy=source.deploy,
            aux=want_aux,
            class_names=class_names,
            anchors=source.head.anchor_grid.view(source.head.nl, source.head.na, 2),
            aux_wiring=want_wiring,
        )
        if rec.get("fused"):
            fuse_blocks(model)
        report = transfer_weights(model, sd, source_names=rec.get("class_names"))
    desc = f"{rec['name']} {'deploy' if rec['deploy'] else 'training'}{' (fused)' if rec.get('fused') else ''}"
    return LoadedModel(model.to(map_location), FORMAT, desc, ckpt, report)


def _fused_as_deploy(variant: Variant, state_dict: dict[str, torch.Tensor]) -> tuple[Variant, dict[str, torch.Tensor]]:
    """An official ``fuse()``d training state dict as our fused deploy form.

    Official ``fuse()`` folds BN into the convs and the implicit terms into the head convs (``W*im``,
    ``(b + W@ia)*im``) but leaves ``ia``/``im`` in the state dict, unused; the aux branch stays too, unused in
    eval. Loaded into a training head the implicit terms would be applied twice, so the head convs are moved
    to a plain ``Detect`` as they are and ``ia``/``im``/the aux branch are dropped.
    """
    with torch.device("meta"):
        deploy = build_model(variant.name, variant.num_classes, deploy=True)
        if variant.fused:  # official fuse() always fuses BN too; follow the keys all the same
            fuse_blocks(deploy)
    head, train_head = len(deploy.model) - 1, head_index(state_dict)  # type: ignore[arg-type]
    out: dict[str, torch.Tensor] = {}
    for key in deploy.state_dict():
        layer, rest = key.split(".", 2)[1:]
        out[key] = state_dict[key] if int(layer) < head else state_dict[f"model.{train_head}.{rest}"]
    return Variant(variant.name, True, variant.fused, False, variant.num_classes), out


def _load_official(
    path: Path,
    data: io.BytesIO,
    num_classes: int | None,
    class_names: list[str] | None,
    aux: bool | None,
    map_location: str | torch.device,
    aux_wiring: str | None = None,
) -> LoadedModel:
    off = load_official(path, data)
    prefer = "yolov7-tiny-silu" if off.activation == "silu" else None
    variant = identify(off.state_dict, prefer=prefer)
    state_dict, origin = off.state_dict, variant.describe()
    if off.fused_head and not variant.deploy:
        variant, state_dict = _fused_as_deploy(variant, state_dict)
        origin += ", official fuse() (implicit terms folded into the head): loaded as the deploy form"
    names = off.class_names if off.class_names and len(off.class_names) == variant.num_classes else None
    source = build_model(variant.name, variant.num_classes, deploy=variant.deploy, aux=variant.aux, class_names=names)
    if variant.fused:
        fuse_blocks(source)
    want_nc = num_classes if num_classes is not None else (len(class_names) if class_names else variant.num_classes)
    want_aux = variant.aux if aux is None else aux
    wiring = aux_wiring or "top-down"  # official files have the top-down wiring (or no aux head)
    report = None
    if (
        want_nc == variant.num_classes
        and want_aux == variant.aux
        and (wiring == "top-down" or not want_aux)
        and (class_names is None or class_names == names)
    ):
        source.load_state_dict(state_dict, strict=True)
        model = source
    else:
        if class_names is None and want_nc == variant.num_classes:
            class_names = names  # only the aux head (or its wiring) changes: the file's class names stay
        model = build_model(
            variant.name, want_nc, deploy=variant.deploy, aux=want_aux, class_names=class_names, aux_wiring=wiring
        )
        if variant.fused:
            fuse_blocks(model)
        report = transfer_weights(model, state_dict, source_names=names)
    desc = f"official {origin} from '{off.source}'"
    return LoadedModel(model.to(map_location), "official", desc, {"info": off.info}, report)
