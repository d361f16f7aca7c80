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


# -- official fuse()d models: BN folded, implicit terms already in the head ------------------------------------------
def _fp16(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its weights rounded to fp16 as an official file stores them (kept float32)."""
    sd = model.state_dict()
    model.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in sd.items()})
    return model


def _double_implicit(path: Path) -> torch.nn.Module:
    """What loading did before: the fused weights in a fused *training* head, which applies ia/im again."""
    from core.checkpoint.official import load_official
    from core.models import fuse_blocks

    off = load_official(path)
    old = fuse_blocks(build_model(identify(off.state_dict).name, 80))
    old.load_state_dict(off.state_dict, strict=True)
    return old.eval()


@pytest.mark.parametrize("kind", ["stripped", "deploy"])
def test_official_fused_model_loads_as_the_fused_deploy_form(tmp_path: Path, kind: str) -> None:
    from core.inference.probe import well_conditioned_
    from core.models import reparameterize
    from core.models.fuse import is_fused

    source = well_conditioned_(build_model("yolov7-tiny", 80), seed=3).eval()
    path = write_official(tmp_path / "fused.pt", source, kind, fuse=True)
    assert "__builtin__.getattr" in pickled_globals(path)  # forward = fuseforward, pickled by reference
    loaded = load_model(path)
    model = loaded.model.eval()
    assert loaded.kind == "official" and "official fuse()" in loaded.description
    assert model.deploy and is_fused(model) and type(model.head).__name__ == "Detect"
    # equal to the official fused model it was written from: fused in float32, then stored as fp16
    official_fused = _fp16(reparameterize(source))
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    out = _out(model, x)
    torch.testing.assert_close(out, _out(official_fused, x), rtol=0, atol=1e-4)
    # and not what a training head makes of it (the implicit terms applied a second time)
    off_by = (_out(_double_implicit(path), x)[..., :4] - out[..., :4]).abs().max()
    assert off_by > 5.0, f"double-applied implicit terms only move boxes by {off_by:.2f} px"


def test_official_fused_model_equals_the_official_fused_forward(tmp_path: Path, conformance_dir: Path) -> None:
    """The conformance weights, fused as official fuse() does and saved in float32, give the official output."""
    import numpy as np

    from core.conformance.forward import load_reference_weights

    data = np.load(conformance_dir / "tiny_forward_kaiming.npz")
    source = build_model("yolov7-tiny", 80)
    source.load_state_dict(load_reference_weights(data), strict=True)
    path = write_official(tmp_path / "fused.pt", source.eval(), "stripped", fuse=True, half=False)
    model = load_model(path).model
    x = torch.from_numpy(np.array(data["input"]))
    out, ref = _out(model, x), torch.from_numpy(data["output_fused"])
    assert float((out[..., :4] - ref[..., :4]).abs().max()) < 1e-2  # px; FACTS suggests 1e-2 for these weights
    assert float((out[..., 4:] - ref[..., 4:]).abs().max()) < 1e-5
    assert float((_out(_double_implicit(path), x)[..., :4] - ref[..., :4]).abs().max()) > 5.0


def test_official_fused_deploy_model_loads(tmp_path: Path) -> None:
    """A deploy model after fuse(): fused Convs carry fuseforward, the Detect head does not."""
    from core.inference.probe import well_conditioned_
    from core.models import reparameterize

    source = well_conditioned_(build_model("yolov7-tiny", 80, deploy=True), seed=4).eval()
    path = write_official(tmp_path / "deploy_fused.pt", source, "deploy", fuse=True)
    loaded = load_model(path)
    assert loaded.model.deploy and "fuse()" not in loaded.description
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_out(loaded.model, x), _out(_fp16(reparameterize(source)), x), rtol=0, atol=1e-4)


def test_official_fused_model_with_a_new_class_list_keeps_the_folded_head(tmp_path: Path) -> None:
    from core.inference.probe import well_conditioned_

    source = well_conditioned_(build_model("yolov7-tiny", 80), seed=5).eval()
    path = write_official(tmp_path / "fused.pt", source, "stripped", fuse=True, half=False)
    loaded = load_model(path, class_names=["person", "car"])
    assert loaded.model.deploy and loaded.model.nc == 2 and loaded.transfer is not None
    folded = source.head.folded_convs()[0]
    w = loaded.model.head.m[0].weight.view(3, 7, -1)
    torch.testing.assert_close(w[:, :5], folded[0].view(3, 85, -1)[:, :5], rtol=1e-5, atol=1e-6)  # box + obj rows


@pytest.mark.slow
def test_official_fused_p6_model_drops_the_aux_branch(tmp_path: Path) -> None:
    """w6 after fuse(): IAuxDetect with folded lead convs (layer 122) becomes our deploy Detect at layer 118."""
    from core.inference.probe import well_conditioned_
    from core.models import reparameterize

    source = well_conditioned_(build_model("yolov7-w6", 80), seed=6).eval()
    path = write_official(tmp_path / "w6_fused.pt", source, "deploy", fuse=True)
    model = load_model(path).model
    assert model.deploy and not model.aux and len(model.model) == 119
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_out(model, x), _out(_fp16(reparameterize(source)), x), rtol=0, atol=1e-3)
