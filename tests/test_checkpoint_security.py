"""Checkpoint loading never runs code from the file: TorchScript archives and other non-pickle files are refused
before any torch loading call, and the one ``getattr`` official fused models need is allowed for nothing else."""

from __future__ import annotations

import io
import pickle
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from core.checkpoint.io import CheckpointError, load_model, read_checkpoint
from core.checkpoint.official import _RestrictedPickleModule, load_official
from core.checkpoint.safety import NotACheckpointError, UnsafeCheckpointError, check_checkpoint_bytes
from core.cli import main
from core.models import build_model
from tests.official_format import official_modules


class _Payload(torch.nn.Module):
    """A scripted module whose ``__setstate__`` creates the file at ``path`` when the archive is loaded."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.path, self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.path = state[0]
        self.training = state[2]
        touched = torch.from_file(self.path, shared=True, size=1, dtype=torch.uint8)  # creates the file
        self.w = state[1] + touched.float()


def _torchscript_checkpoint(path: Path, marker: Path) -> Path:
    """A TorchScript archive saved as ``.pt`` that writes ``marker`` when loaded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, still loaded by torch.load
        torch.jit.save(torch.jit.script(_Payload(str(marker))), str(path))
    assert not marker.exists()
    return path


def test_crafted_torchscript_file_runs_code_when_torch_loads_it(tmp_path: Path) -> None:
    """The hole: torch.jit.load, and torch.load even with a restricted pickle module, run the archive's code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        marker = tmp_path / "by_jit_load"
        torch.jit.load(str(_torchscript_checkpoint(tmp_path / "a.pt", marker)))
        assert marker.exists()
        marker = tmp_path / "by_torch_load"  # the fallback the loader used to take
        path = _torchscript_checkpoint(tmp_path / "b.pt", marker)
        torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
        assert marker.exists()


def test_torchscript_checkpoint_is_refused_by_every_loader_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    path = _torchscript_checkpoint(tmp_path / "weights.pt", marker)
    for load in (load_model, read_checkpoint, lambda p: load_model(p, num_classes=3, aux=True)):
        with pytest.raises(CheckpointError) as err:
            load(path)
        assert not marker.exists(), "the archive's code ran"
        msg = str(err.value)
        assert str(path) in msg and "refused" in msg and "TorchScript" in msg and "constants.pkl" in msg
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        load_official(path)
    assert main(["reparam", str(path), str(tmp_path / "out.pt")]) == 2  # a CLI entry point: a clean error
    assert "TorchScript" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


def test_torchscript_is_refused_before_any_torch_loading_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    path = _torchscript_checkpoint(tmp_path / "weights.pt", marker)
    calls: list[str] = []

    def spy(name: str):  # noqa: ANN202
        def record(*a, **k):  # noqa: ANN002, ANN003, ANN202
            calls.append(name)
            raise RuntimeError(f"{name} must not be called")

        return record

    monkeypatch.setattr(torch, "load", spy("torch.load"))
    monkeypatch.setattr(torch.jit, "load", spy("torch.jit.load"))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_model(path)
    assert calls == [] and not marker.exists()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = pickle.dumps({"a": 1}, protocol=2)
        info = tarfile.TarInfo("pickle")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a PyTorch checkpoint"),
        (b'{"model": "weights.bin"}', "not a PyTorch checkpoint"),
        (_tar_bytes(), "not a PyTorch checkpoint"),  # torch's pre-0.4 tar format: never parsed
        (_zip_bytes({"archive/version": b"3\n", "archive/readme.txt": b"hello"}), "without data.pkl"),
        (_zip_bytes({"archive/constants.pkl": b"", "archive/data.pkl": b""}), "TorchScript"),
        (_zip_bytes({"archive/code/__torch__.py": b"", "archive/data.pkl": b""}), "TorchScript"),
        (_zip_bytes({"images/a.jpg": b"\xff\xd8"}), "not one torch.save writes"),
        (b"PK\x03\x04" + bytes(40), "unreadable or truncated"),
    ],
    ids=["empty", "png", "json", "tar", "zip-no-data.pkl", "constants.pkl", "code-folder", "other-zip", "broken-zip"],
)
def test_files_that_are_not_plain_pickle_checkpoints_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str
) -> None:
    path = tmp_path / "upload.pt"
    path.write_bytes(content)

    def forbidden(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a torch loading call was reached")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.jit, "load", forbidden)
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value)
    with pytest.raises((UnsafeCheckpointError, NotACheckpointError), match=message):
        check_checkpoint_bytes(content)


def test_plain_checkpoints_pass_the_check(tmp_path: Path) -> None:
    """Our zip checkpoints, official ones and legacy (non-zip) pickles are what the check lets through."""
    model = build_model("yolov7-tiny", 2)
    new, legacy = tmp_path / "new.pt", tmp_path / "legacy.pt"
    torch.save({"state_dict": model.state_dict()}, new)
    torch.save({"state_dict": model.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    assert check_checkpoint_bytes(new.read_bytes()) == "zip"
    assert check_checkpoint_bytes(legacy.read_bytes()) == "legacy"


class _GetAttr:
    """Pickles as ``getattr(obj, name)``: the pattern a bound method pickles to."""

    def __init__(self, obj: object, name: str) -> None:
        self.obj, self.name = obj, name

    def __reduce__(self):  # noqa: ANN204
        return (getattr, (self.obj, self.name))


def _save_with_getattr(path: Path, target: str, name: str) -> Path:
    """An official-looking file whose pickle calls ``getattr(<target>, name)``."""
    with official_modules() as mods:
        conv = mods["models.common"].Conv()
        objects = {
            "official module": conv,
            "official class": mods["models.common"].Conv,
            "torch module": torch.nn.Conv2d(1, 1, 1),
            "plain object": {"a": 1},
        }
        model = mods["models.yolo"].Model()
        model.hook = _GetAttr(objects[target], name)
        torch.save({"model": model, "epoch": -1}, path)
    return path


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("official module", "forward"),
        ("official module", "__class__"),
        ("official module", "__reduce_ex__"),
        ("official class", "fuseforward"),
        ("torch module", "fuseforward"),
        ("plain object", "fuseforward"),
    ],
)
def test_getattr_is_refused_except_fuseforward_of_an_official_module(tmp_path: Path, target: str, name: str) -> None:
    path = _save_with_getattr(tmp_path / "ckpt.pt", target, name)
    with pytest.raises(CheckpointError, match="refused getattr") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_fuseforward_of_an_official_module_unpickles_to_an_inert_marker(tmp_path: Path) -> None:
    from core.checkpoint.official import FusedForward

    path = _save_with_getattr(tmp_path / "ckpt.pt", "official module", "fuseforward")
    buf = io.BytesIO(path.read_bytes())
    ckpt = torch.load(buf, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
    marker = ckpt["model"].__dict__["hook"]
    assert isinstance(marker, FusedForward) and marker.origin == "models.common.Conv"
    assert not callable(marker)
