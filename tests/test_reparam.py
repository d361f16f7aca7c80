"""Re-parameterization (training -> fused deploy form) with its self-check, for every variant, and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoint.io import load_model, read_checkpoint, save_checkpoint
from core.cli import main
from core.conformance.forward import load_reference_weights
from core.inference.deploy import ReparamError, check_deploy, convert_for_deploy
from core.inference.probe import probe_image, well_conditioned_
from core.models import RepConv, build_model, fuse_blocks, get_spec, list_models, reparameterize, scale_width
from core.models.fuse import is_fused
from core.models.profile import count_params
from core.nms import non_max_suppression
from tests.conftest import shared_path

VARIANTS = list_models()
# (variant, aux): every variant as officially trained, and the P5 models with our auxiliary head as well
CASES = [(n, None) for n in VARIANTS] + [(n, True) for n in ("yolov7-tiny", "yolov7", "yolov7x")]


def _thin(name: str, aux: bool | None = None, nc: int = 5, seed: int = 0) -> torch.nn.Module:
    model = build_model(scale_width(get_spec(name), 0.125), nc, aux=aux)
    return well_conditioned_(model, seed=seed).eval()


@pytest.mark.parametrize(("name", "aux"), CASES)
def test_every_variant_reparameterizes_with_equal_outputs(name: str, aux: bool | None) -> None:
    model = _thin(name, aux)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conversion = convert_for_deploy(model, img_size=64)
    deploy, check = conversion.model, conversion.check
    assert check is not None and check.passed, check.to_text()
    assert deploy.deploy and not deploy.aux and is_fused(deploy) and not deploy.training
    assert type(deploy.head).__name__ == "Detect"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.modules())
    assert all(hasattr(m, "rbr_reparam") for m in deploy.modules() if isinstance(m, RepConv))
    # the original model is left as it was
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # independent comparison on another input size and batch
    x = probe_image((64, 128), seed=7)
    with torch.no_grad():
        a, b = model(x), deploy(x)
    scale = float(a[..., :4].abs().max())
    torch.testing.assert_close(b[..., :4], a[..., :4], rtol=0, atol=1e-2 + 1e-5 * scale)
    torch.testing.assert_close(b[..., 4:], a[..., 4:], rtol=0, atol=1e-4)
    assert check.params_after == count_params(deploy) < check.params_before


@pytest.mark.parametrize(("name", "aux"), CASES)
def test_full_width_deploy_keys_and_params_equal_official(name: str, aux: bool | None) -> None:
    keys = json.loads(shared_path("yolov7", "keys_shapes.json").read_text())
    facts = json.loads(shared_path("yolov7", "model_facts.json").read_text())
    with torch.device("meta"):
        deploy = reparameterize(build_model(name, 80, aux=aux))
    assert [[k, list(v.shape)] for k, v in deploy.state_dict().items()] == keys[f"deploy/{name}#fused"]
    assert count_params(deploy) == facts[f"deploy/{name}"]["params_fused"]


def test_repconv_with_and_without_identity_branch_fuses_exactly() -> None:
    torch.manual_seed(0)
    for c1, c2 in ((8, 8), (8, 16)):
        block = well_conditioned_(RepConv(c1, c2, act="silu")).eval()
        assert (block.rbr_identity is not None) == (c1 == c2)
        x = torch.randn(2, c1, 9, 11)
        with torch.no_grad():
            want = block(x)
            block.reparameterize()
            got = block(x)
        assert list(dict(block.named_children())) == ["act", "rbr_reparam"]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_already_fused_training_model_and_deploy_model_convert() -> None:
    model = _thin("yolov7")
    fused_training = fuse_blocks(copy.deepcopy(model))  # like an official fuse()d training checkpoint
    check = convert_for_deploy(fused_training, img_size=64).check
    assert check is not None and check.passed and check.source_form == "training (fused)"
    deploy = reparameterize(model, fuse=False)
    again = convert_for_deploy(deploy, img_size=64)
    assert again.check is not None and again.check.passed and is_fused(again.model)


def test_check_detects_a_broken_conversion() -> None:
    model = _thin("yolov7-tiny")
    deploy = reparameterize(model)
    with torch.no_grad():
        deploy.model[5].conv.bias.add_(0.5)  # a wrong fold
    check = check_deploy(model, deploy, img_size=64)
    assert not check.passed and "FAILED" in check.to_text()


def test_strict_conversion_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _thin("yolov7-tiny")

    def broken(m: torch.nn.Module, fuse: bool = True) -> torch.nn.Module:
        out = reparameterize(m, fuse=fuse)
        with torch.no_grad():
            out.head.m[0].bias.add_(1.0)
        return out

    monkeypatch.setattr("core.inference.deploy.reparameterize", broken)
    with pytest.raises(ReparamError, match="FAILED"):
        convert_for_deploy(model, img_size=64, strict=True)


@pytest.fixture(scope="module")
def kaiming_tiny() -> dict:
    """The official yolov7-tiny with the conformance file's well-conditioned weights, converted once."""
    data = np.load(shared_path("yolov7", "conformance", "tiny_forward_kaiming.npz"))
    model = build_model("yolov7-tiny", 80)
    model.load_state_dict(load_reference_weights(data), strict=True)
    x = torch.from_numpy(np.array(data["input"]))
    conversion = convert_for_deploy(model.eval(), probe=x)
    with torch.no_grad():
        outputs = model(x), conversion.model(x)
    return {"data": data, "check": conversion.check, "outputs": outputs}


@pytest.mark.parametrize(
    ("conf", "iou", "multi_label"), [(0.25, 0.45, False), (0.001, 0.65, False), (0.001, 0.65, True)]
)
def test_identical_nms_on_conformance_weights(kaiming_tiny: dict, conf: float, iou: float, multi_label: bool) -> None:
    check = kaiming_tiny["check"]
    assert check is not None and check.passed and check.nms_identical
    out_train, out_deploy = kaiming_tiny["outputs"]
    a = non_max_suppression(out_train, conf, iou, multi_label=multi_label)[0]
    b = non_max_suppression(out_deploy, conf, iou, multi_label=multi_label)[0]
    assert a.shape == b.shape and len(a) == 300
    assert torch.equal(a[:, 5], b[:, 5])
    assert float((a[:, :4] - b[:, :4]).abs().max()) < 1e-2 and float((a[:, 4] - b[:, 4]).abs().max()) < 1e-5
    # and the official fused model's selection (reference file)
    key = f"nms_conf{conf:g}_iou{iou:g}{'_multilabel' if multi_label else ''}_fused"
    ref = torch.from_numpy(kaiming_tiny["data"][key])
    assert torch.equal(b[:, 5], ref[:, 5]) and float((b[:, :4] - ref[:, :4]).abs().max()) < 1e-2


def test_reparam_cli_writes_a_verified_deploy_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = build_model(scale_width(get_spec("yolov7"), 0.125), 3, class_names=["a", "b", "c"])
    well_conditioned_(model)
    src, out = tmp_path / "train.pt", tmp_path / "deploy.pt"
    save_checkpoint(src, model)
    assert main(["reparam", str(src), str(out), "--img", "64"]) == 0
    text = capsys.readouterr().out
    assert "check PASSED" in text and "max |box diff|" in text and str(out) in text
    rec = read_checkpoint(out)
    assert rec["model"]["deploy"] and rec["model"]["fused"] and rec["extra"]["reparam_check"]["passed"]
    loaded = load_model(out).model.eval()
    assert loaded.names == ["a", "b", "c"] and loaded.deploy
    x = probe_image(64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=2e-2)


def test_reparam_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.pt"
    assert main(["reparam", str(missing), str(tmp_path / "o.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    assert main(["reparam", str(junk), str(tmp_path / "o.pt")]) == 2
    assert "junk.pt" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()
