"""Look at a checkpoint file before any torch loading call: only plain pickle checkpoints get through.

``torch.load`` hands a zip archive holding ``constants.pkl`` (a TorchScript archive) to ``torch.jit.load``,
whatever ``pickle_module`` it was given; TorchScript then runs the archive's own code (``__setstate__``),
which can write files. So every loader here first reads the file into memory, inspects it with the same zip
reader ``torch.load`` uses, and passes on only

* a ``torch.save`` zip archive: it holds ``data.pkl`` and nothing TorchScript (``constants.pkl``, ``code/``,
  ``bytecode.pkl``, ``extra/``), or
* a legacy (pre-1.6) ``torch.save`` file: a bare pickle stream (it starts with the pickle PROTO opcode).

The caller then loads from the returned in-memory copy, never from the path again, so the bytes inspected are
the bytes loaded (nothing can swap the file in between). Loading from a buffer also keeps ``torch.load`` off
its path-only branches (tar archives, safetensors, mmap).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"
# members (after the archive's top folder) that only TorchScript / mobile archives have
_TORCHSCRIPT_FILES = ("constants.pkl", "bytecode.pkl")
_TORCHSCRIPT_FOLDERS = ("code/", "constants/", "extra/")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file is not a plain pickle checkpoint or references a global outside the allow-list (may run code)."""


class NotACheckpointError(ValueError):
    """The file is neither a ``torch.save`` zip archive nor a legacy pickle checkpoint."""


def _refuse_torchscript(members: list[str]) -> None:
    """Raise when ``members`` (paths below the archive's top folder) include what only TorchScript has."""
    script = sorted({m for m in members if m in _TORCHSCRIPT_FILES or m.startswith(_TORCHSCRIPT_FOLDERS)})
    if script:
        shown = ", ".join(script[:3]) + (", ..." if len(script) > 3 else "")
        raise UnsafeCheckpointError(
            f"a TorchScript archive (it holds {shown}), not a weights checkpoint; "
            "loading TorchScript runs code stored in the file, so it is never loaded"
        )


def check_checkpoint_bytes(data: bytes) -> str:
    """``'zip'`` or ``'legacy'`` for a plain pickle checkpoint; raises for anything else.

    Raises :class:`UnsafeCheckpointError` for a TorchScript archive and :class:`NotACheckpointError` for a
    file that is not a checkpoint at all (empty, truncated, another zip, another format).
    """
    if not data:
        raise NotACheckpointError("empty file")
    if data.startswith(ZIP_MAGIC):
        try:  # Python's zip reader and the one torch.load itself uses: no member may hide from either
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = [n.split("/", 1)[1] if "/" in n else n for n in zf.namelist()]
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise NotACheckpointError(f"unreadable or truncated zip archive ({exc})") from None
        _refuse_torchscript(names)
        try:
            records = list(torch._C.PyTorchFileReader(io.BytesIO(data)).get_all_records())
        except RuntimeError as exc:
            raise NotACheckpointError(
                f"unreadable or truncated zip archive, or not one torch.save writes ({str(exc).splitlines()[0]})"
            ) from None
        _refuse_torchscript(records)
        if "data.pkl" not in records:
            raise NotACheckpointError("a zip archive without data.pkl: not a torch.save checkpoint")
        return "zip"
    if data.startswith(PICKLE_PROTO):
        return "legacy"
    raise NotACheckpointError("not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")


def read_plain_checkpoint(path: str | Path) -> io.BytesIO:
    """The bytes of ``path`` in memory, once :func:`check_checkpoint_bytes` accepts them; load from this copy."""
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
        if head and not head.startswith(PICKLE_PROTO) and head != ZIP_MAGIC:
            check_checkpoint_bytes(head)  # refuse without reading a large foreign file
        data = head + f.read()
    check_checkpoint_bytes(data)
    return io.BytesIO(data)
