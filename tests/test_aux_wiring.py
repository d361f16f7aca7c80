"""Where the auxiliary head connects (issue 16): the official top-down wiring and the paper's partial wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.checkpoint.io import load_model, read_checkpoint, save_checkpoint
from core.models import AUX_WIRINGS, Conv, build_model, get_spec, scale_width
from core.models.specs import spec_from_dict, spec_to_dict

# the middle 3x3 conv of the ELAN feeding each lead level (P3: last top-down ELAN; P4, P5: bottom-up ELANs), and
# the top-down taps (last top-down ELANs, then the SPP block): official layer numbers, see core.models.builder
PARTIAL_TAPS = {"yolov7-tiny": [54, 62, 70], "yolov7": [71, 84, 97]}
TOP_DOWN_TAPS = {"yolov7-tiny": [57, 47, 37], "yolov7": [75, 63, 51]}


def _spec(name: str):
    return scale_width(get_spec(name), 0.25)


def _chain_of(model, elan_out: int) -> list[int]:
    """The 3x3 chain convs of the ELAN whose transition conv is ``elan_out``: concat -> taps that are 3x3 convs."""
    concat = model.model[elan_out].f
    taps = model.model[concat].f
    return sorted(j for j in taps if isinstance(model.model[j], Conv) and model.model[j].conv.kernel_size == (3, 3))


def test_wirings_are_exported() -> None:
    assert AUX_WIRINGS == ("top-down", "partial")


@pytest.mark.parametrize("name", ["yolov7-tiny", "yolov7"])
def test_partial_wiring_reads_the_middle_of_the_blocks_feeding_the_lead(name: str) -> None:
    model = build_model(_spec(name), 3, aux=True, aux_wiring="partial")
    assert model.aux_wiring == "partial"
    reads = [model.model[i].f for i in model.aux_from]
    assert reads == PARTIAL_TAPS[name]
    # each tap is the middle 3x3 conv of the ELAN whose output feeds the lead conv of the same level
    for lead, tap in zip(model.lead_from, reads):
        elan_out = model.model[lead].f
        chain = _chain_of(model, elan_out)  # c1 .. c_depth
        assert len(chain) == {"yolov7-tiny": 2, "yolov7": 4}[name]
        assert tap == chain[len(chain) // 2 - 1]  # tiny: the first of two; yolov7: the second of four
    # aux convs keep the spec's aux widths and are the last layers before the head, as in the top-down wiring
    spec = _spec(name)
    assert [model.model[i].conv.out_channels for i in model.aux_from] == list(spec.aux)
    top = build_model(_spec(name), 3, aux=True)
    assert model.lead_from == top.lead_from and model.aux_from == top.aux_from
    assert [top.model[i].f for i in top.aux_from] == TOP_DOWN_TAPS[name]
    # every layer before the aux convs is the same module with the same inputs
    for i in range(min(model.aux_from)):
        assert type(model.model[i]) is type(top.model[i]) and model.model[i].f == top.model[i].f


@pytest.mark.parametrize("name", ["yolov7-tiny", "yolov7"])
def test_partial_wiring_forward_gives_lead_and_aux_levels(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(_spec(name), 3, aux=True, aux_wiring="partial").train()
    out = model(torch.rand(2, 3, 64, 64))
    assert len(out) == 2 * model.num_levels == 6
    for level, t in enumerate(out):
        s = 64 // (8 * 2 ** (level % 3))
        assert t.shape == (2, 3, s, s, 8)
    sum(t.sum() for t in out).backward()
    aux_params = [p for i in model.aux_from for p in model.model[i].parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aux_params)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3 * (64 + 16 + 4), 8)


@pytest.mark.parametrize("name", ["yolov7-tiny", "yolov7", "yolov7-e6"])
def test_top_down_default_is_unchanged(name: str) -> None:
    spec = get_spec(name)
    with torch.device("meta"):
        default = build_model(spec, 80, aux=True)
        explicit = build_model(spec, 80, aux=True, aux_wiring="top-down")
    assert default.aux_wiring == "top-down"
    a, b = default.state_dict(), explicit.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert sum(p.numel() for p in default.parameters()) == sum(p.numel() for p in explicit.parameters())
    assert [m.f for m in default.model] == [m.f for m in explicit.model]


def test_partial_wiring_changes_only_the_aux_conv_inputs() -> None:
    with torch.device("meta"):
        top = build_model("yolov7", 80, aux=True).state_dict()
        partial = build_model("yolov7", 80, aux=True, aux_wiring="partial").state_dict()
    assert list(top) == list(partial)
    differ = sorted({k.split(".")[1] for k in top if top[k].shape != partial[k].shape})
    assert differ == ["105", "106", "107"]  # the aux 3x3 convs, which now read narrower layers


def test_p6_models_refuse_the_partial_wiring() -> None:
    with pytest.raises(ValueError, match="P6 models keep their official auxiliary wiring"):
        build_model("yolov7-e6", 3, aux_wiring="partial")
    with pytest.raises(ValueError, match="unknown auxiliary-head wiring 'sideways'; choose one of top-down, partial"):
        build_model("yolov7-tiny", 3, aux=True, aux_wiring="sideways")


def test_without_aux_head_the_wiring_is_ignored() -> None:
    with torch.device("meta"):
        plain = build_model("yolov7-tiny", 3)
        partial = build_model("yolov7-tiny", 3, aux=False, aux_wiring="partial")
        deploy = build_model("yolov7-e6", 3, deploy=True, aux_wiring="partial")  # deploy has no aux head
    assert partial.aux_wiring == "top-down" and not partial.aux and deploy.aux_wiring == "top-down"
    assert list(plain.state_dict()) == list(partial.state_dict())


def test_checkpoint_round_trip_keeps_the_wiring(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = _spec("yolov7-tiny")
    model = build_model(spec, 3, aux=True, aux_wiring="partial", class_names=["a", "b", "c"])
    path = save_checkpoint(tmp_path / "partial.pt", model)
    assert read_checkpoint(path)["model"]["aux_wiring"] == "partial"
    loaded = load_model(path).model
    assert loaded.aux and loaded.aux_wiring == "partial"
    assert [loaded.model[i].f for i in loaded.aux_from] == PARTIAL_TAPS["yolov7-tiny"]
    x = torch.rand(1, 3, 64, 64)
    model.train(), loaded.train()
    for a, b in zip(model(x), loaded(x)):
        torch.testing.assert_close(a, b)
    # asking for the other wiring rebuilds the aux convs (their weights no longer fit) and keeps the rest
    rewired = load_model(path, aux_wiring="top-down")
    assert rewired.model.aux_wiring == "top-down" and rewired.transfer is not None
    assert sorted({k.split(".")[1] for k in rewired.transfer.reinitialised}) == ["77", "78", "79"]


def test_older_checkpoints_without_the_field_read_as_top_down(tmp_path: Path) -> None:
    model = build_model(_spec("yolov7-tiny"), 2, aux=True)
    path = save_checkpoint(tmp_path / "old.pt", model)
    ckpt = read_checkpoint(path)
    del ckpt["model"]["aux_wiring"]  # as written before the field existed
    torch.save(ckpt, path)
    loaded = load_model(path).model
    assert loaded.aux and loaded.aux_wiring == "top-down"
    assert spec_from_dict(spec_to_dict(loaded.spec)) == loaded.spec
