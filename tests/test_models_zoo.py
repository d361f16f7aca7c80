"""Model zoo: official keys/shapes for every variant, parameter counts, GFLOPs, forward contract, gradients."""

from __future__ import annotations

import json

import pytest
import torch

from core.models import SPECS, build_model, fuse_blocks, get_spec, list_models, reparameterize, scale_width
from core.models.profile import profile
from tests.conftest import shared_path

VARIANTS = ["yolov7-tiny", "yolov7-tiny-silu", "yolov7", "yolov7x", "yolov7-w6", "yolov7-e6", "yolov7-d6", "yolov7-e6e"]


def _keys_shapes() -> dict:
    return json.loads(shared_path("yolov7", "keys_shapes.json").read_text())


def _meta_state(name: str, deploy: bool, fused: bool, aux: bool | None = None) -> list[list]:
    with torch.device("meta"):
        model = build_model(name, 80, deploy=deploy, aux=aux)
        if fused:
            fuse_blocks(model)
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def test_registry_lists_every_variant() -> None:
    assert list_models() == VARIANTS
    with pytest.raises(KeyError, match="known models"):
        get_spec("yolov8")


ENTRIES = [f"training/{n}" for n in VARIANTS if n != "yolov7-tiny-silu"] + [f"deploy/{n}" for n in VARIANTS]


@pytest.mark.parametrize("entry", ENTRIES)
def test_state_dict_keys_and_shapes_equal_official(entry: str) -> None:
    """Exactly the keys, order and shapes of the official Model(cfg, nc=80).state_dict() (15 entries)."""
    kind, name = entry.split("/")
    assert _meta_state(name, deploy=kind == "deploy", fused=False) == _keys_shapes()[entry]


@pytest.mark.parametrize("entry", ENTRIES)
def test_fused_keys_equal_official_fused(entry: str) -> None:
    kind, name = entry.split("/")
    assert _meta_state(name, deploy=kind == "deploy", fused=True) == _keys_shapes()[entry + "#fused"]


@pytest.mark.parametrize("name", ["yolov7-tiny", "yolov7", "yolov7-w6", "yolov7-e6e"])
def test_reparameterize_keys_equal_official_deploy_fused(name: str) -> None:
    with torch.device("meta"):
        deploy = reparameterize(build_model(name, 80))
    assert [[k, list(v.shape)] for k, v in deploy.state_dict().items()] == _keys_shapes()[f"deploy/{name}#fused"]


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_counts_and_gflops_match_official_and_paper(name: str) -> None:
    facts = json.loads(shared_path("yolov7", "model_facts.json").read_text())
    flops = json.loads(shared_path("yolov7", "flops_variants.json").read_text())
    p = profile(name)
    train_key = f"training/{name}" if name != "yolov7-tiny-silu" else "training/yolov7-tiny"
    assert p.params_train == facts[train_key]["params"]
    assert p.params_deploy == facts[f"deploy/{name}"]["params_fused"]
    assert p.layers_train == facts[train_key]["n_layers"]
    assert p.layers_deploy == facts[f"deploy/{name}"]["n_layers"]
    assert list(p.strides) == facts[f"deploy/{name}"]["strides"]
    if name in flops.get(f"deploy/{name}", {}) or f"deploy/{name}" in flops:
        assert p.gflops_deploy == pytest.approx(flops[f"deploy/{name}"]["fused_conv_plus_bias"], rel=1e-6)
        assert p.gflops_train == pytest.approx(flops[train_key]["unfused_conv_plus_bias"], rel=1e-6)
    if p.paper_gflops is not None:
        # The paper's table counts the fused deploy model, except the D6 row, which is the training network.
        ours = p.gflops_train if name == "yolov7-d6" else p.gflops_deploy
        params = p.params_train if name == "yolov7-d6" else p.params_deploy
        assert abs(ours / p.paper_gflops - 1) < 0.005
        assert round(params / 1e6, 1) == pytest.approx(p.paper_params_m, abs=0.051)


def test_compute_heads_and_layers_from_facts() -> None:
    facts = json.loads(shared_path("yolov7", "model_facts.json").read_text())
    for name in VARIANTS:
        if name == "yolov7-tiny-silu":
            continue
        with torch.device("meta"):
            m = build_model(name)
        f = facts[f"training/{name}"]
        assert type(m.head).__name__ == f["head"]
        assert m.lead_from == f["lead_from"]
        assert m.aux_from == f["aux_from"]
        assert torch.equal(torch.tensor(get_spec(name).anchors, dtype=torch.float32), torch.tensor(f["anchors_pixels"]))
        shortcut = [i for i, layer in enumerate(m.model) if type(layer).__name__ == "Shortcut"]
        assert shortcut == f["shortcut_layers"]
        downc = [i for i, layer in enumerate(m.model) if type(layer).__name__ == "DownC"]
        assert downc == f["downc_layers"]
        rep = [i for i, layer in enumerate(m.model) if type(layer).__name__ == "RepConv"]
        assert rep == f["repconv_layers"]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("aux", [False, True])
def test_forward_contract_and_gradients(name: str, aux: bool) -> None:
    """Thin widths, real topology: training -> raw levels (lead then aux), eval -> decoded; grads reach all."""
    torch.manual_seed(0)
    spec = scale_width(get_spec(name), 0.125)
    model = build_model(spec, num_classes=3, aux=aux)
    nl = len(spec.anchors)
    size = 128 if nl == 4 else 64
    x = torch.rand(2, 3, size, size)
    model.train()
    out = model(x)
    assert isinstance(out, list) and len(out) == (2 * nl if aux else nl)
    for i, o in enumerate(out):
        s = spec.strides[i % nl]
        assert o.shape == (2, 3, size // s, size // s, 8)
    sum(o.float().mean() for o in out).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if "implicit" not in n)
    model.eval()
    with torch.no_grad():
        dec = model(x)
    n_anchors = sum(3 * (size // s) ** 2 for s in spec.strides)
    assert dec.shape == (2, n_anchors, 8)
    assert torch.all((dec[..., 4:] >= 0) & (dec[..., 4:] <= 1))


def test_official_init() -> None:
    torch.manual_seed(0)
    model = build_model("yolov7-tiny", 80)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    head = model.head
    for conv, s in zip(head.m, (8, 16, 32)):
        b = conv.bias.view(3, -1)
        # default conv bias init is U(-1/sqrt(fan_in), +): the prior dominates it
        assert torch.allclose(b[:, 4], torch.full((3,), torch.log(torch.tensor(8 / (640 / s) ** 2)).item()), atol=0.1)
        assert torch.allclose(b[:, 5:].mean(), torch.log(torch.tensor(0.6 / (80 - 0.99))), atol=0.05)
    ia = torch.cat([m.implicit.detach().flatten() for m in head.ia])
    im = torch.cat([m.implicit.detach().flatten() for m in head.im])
    assert abs(float(ia.mean())) < 0.005 and abs(float(ia.std()) - 0.02) < 0.005
    assert abs(float(im.mean()) - 1) < 0.005 and abs(float(im.std()) - 0.02) < 0.005


def test_every_spec_builds_on_meta_quickly() -> None:
    for name in SPECS:
        with torch.device("meta"):
            for deploy in (False, True):
                build_model(name, 80, deploy=deploy)
