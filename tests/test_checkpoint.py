"""Checkpoints: our format (safe, atomic), official .pt files via the restricted unpickler, class transfer."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from core.checkpoint.identify import identify
from core.checkpoint.io import CheckpointError, load_model, read_checkpoint, save_checkpoint
from core.checkpoint.official import pickled_globals
from core.models import build_model, compound_scale, get_spec, scale_width
from tests.official_format import write_official


def _randomise_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model("yolov7-tiny", 80)
    _randomise_bn(m)
    return m.eval()


def _out(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_our_format_round_trip_is_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = compound_scale(scale_width(get_spec("yolov7-tiny"), 0.25), name="custom-tiny")
    model = build_model(spec, 3, class_names=["a", "b", "c"], aux=True)
    ema = build_model(spec, 3, class_names=["a", "b", "c"], aux=True)
    path = save_checkpoint(tmp_path / "w" / "last.pt", model, ema=ema, train={"epochs": 3}, extra={"epoch": 2})
    assert sorted(os.listdir(path.parent)) == ["last.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["model"]["name"] == "custom-tiny" and raw["model"]["class_names"] == ["a", "b", "c"]
    assert raw["train"] == {"epochs": 3}
    loaded = load_model(path, use_ema=False)
    assert loaded.kind == "yolov7-studio" and loaded.transfer is None
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(_out(model, x), _out(loaded.model, x))
    assert loaded.model.aux and loaded.model.names == ["a", "b", "c"]
    assert torch.equal(_out(load_model(path).model, x), _out(ema, x))  # EMA weights by default


def test_atomic_save_keeps_previous_file_when_writing_fails(tmp_path: Path, monkeypatch, tiny) -> None:
    path = save_checkpoint(tmp_path / "last.pt", tiny)
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, tiny)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


@pytest.mark.parametrize("kind", ["train", "stripped", "deploy"])
def test_official_files_load_without_foreign_code(tmp_path: Path, tiny, kind: str) -> None:
    source = tiny if kind != "deploy" else build_model("yolov7-tiny", 80, deploy=True)
    _randomise_bn(source)
    path = write_official(tmp_path / f"{kind}.pt", source, kind)
    globs = pickled_globals(path)
    assert "models.yolo.Model" in globs and "models.common.Conv" in globs
    assert ("models.yolo.IDetect" if kind != "deploy" else "models.yolo.Detect") in globs
    import sys

    assert "models" not in sys.modules  # nothing official is importable while loading
    loaded = load_model(path)
    assert loaded.kind == "official"
    assert loaded.model.deploy == (kind == "deploy") and loaded.model.spec.name == "yolov7-tiny"
    # official files hold fp16 weights: compare with the fp16-rounded source
    ref = build_model("yolov7-tiny", 80, deploy=kind == "deploy")
    ref.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in source.state_dict().items()})
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(_out(loaded.model, x), _out(ref, x), atol=1e-4)


def test_official_tiny_silu_is_recognised_by_its_activation(tmp_path: Path) -> None:
    model = build_model("yolov7-tiny-silu", 80, deploy=True)
    loaded = load_model(write_official(tmp_path / "silu.pt", model, "deploy"))
    assert loaded.model.spec.name == "yolov7-tiny-silu"
    assert loaded.model.spec.act == "silu"


@pytest.mark.slow
def test_official_p6_with_aux_head_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("yolov7-w6", 80)
    loaded = load_model(write_official(tmp_path / "w6.pt", model, "train"))
    assert loaded.model.aux and type(loaded.model.head).__name__ == "IAuxDetect"
    sd = loaded.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v.half().float() if v.is_floating_point() else v), k


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_crafted_pickle_is_refused_and_not_executed(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"epoch": 1, "model": _Evil(marker)}
    if legacy:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "refused" in msg and "system" in msg
    assert not marker.exists()


def test_unusable_files_give_clear_errors(tmp_path: Path, tiny) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    good = save_checkpoint(tmp_path / "good.pt", tiny)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_model(truncated)
    other = tmp_path / "other.pt"
    torch.save({"model.0.conv.weight": torch.zeros(8, 3, 3, 3)}, other)
    with pytest.raises(CheckpointError, match="other.pt"):
        load_model(other)
    with zipfile.ZipFile(good) as zf:
        assert any(n.endswith("data.pkl") for n in zf.namelist())
    assert read_checkpoint(good)["format"] == "yolov7-studio"


def test_identify_rejects_unknown_architecture() -> None:
    sd = scale_width(get_spec("yolov7"), 0.25)
    with torch.device("meta"):
        m = build_model(sd, 80)
    with pytest.raises(ValueError, match="matches no known variant"):
        identify(m.state_dict())


def test_fine_tuning_with_a_different_class_list_keeps_box_rows(tmp_path: Path, tiny) -> None:
    coco_like = [f"class{i}" for i in range(78)] + ["person", "car"]
    src = build_model("yolov7-tiny", 80, class_names=coco_like)
    src.load_state_dict(tiny.state_dict())
    path = save_checkpoint(tmp_path / "src.pt", src)
    loaded = load_model(path, class_names=["car", "widget", "person"])
    report = loaded.transfer
    assert report is not None and not report.exact
    head = "model.77."
    assert set(report.partial) == {f"{head}m.{i}.{p}" for i in range(3) for p in ("weight", "bias")} | {
        f"{head}im.{i}.implicit" for i in range(3)
    }
    assert report.kept_classes == ["car", "person"] and report.new_classes == ["widget"]
    assert len(report.loaded) == len(tiny.state_dict()) - len(report.partial)
    new_w = loaded.model.head.m[0].weight.view(3, 8, -1)
    old_w = tiny.head.m[0].weight.view(3, 85, -1)
    assert torch.equal(new_w[:, :5], old_w[:, :5])  # box + objectness rows kept per anchor
    assert torch.equal(new_w[:, 5], old_w[:, 5 + 79])  # 'car'
    assert torch.equal(new_w[:, 7], old_w[:, 5 + 78])  # 'person'
    assert "re-initialised" in report.summary() and "widget" in report.summary()


def test_official_weights_into_p5_model_with_aux_head(tmp_path: Path, tiny) -> None:
    path = write_official(tmp_path / "tiny.pt", tiny, "stripped")
    loaded = load_model(path, aux=True)
    model = loaded.model
    assert model.aux and len(model.model) == 81  # 3 aux convs before the head
    report = loaded.transfer
    assert {k.split(".")[1] for k in report.reinitialised} == {"77", "78", "79", "80"}  # aux convs + m2
    # the lead path is unchanged: eval outputs equal the source (fp16-rounded) weights' outputs
    ref = build_model("yolov7-tiny", 80)
    ref.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in tiny.state_dict().items()})
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(_out(model, x), _out(ref, x), atol=1e-5)
