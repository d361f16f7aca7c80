"""``yolov7-studio strip``: EMA weights in fp16, no resume state, loads and predicts like the original."""

from __future__ import annotations

import torch

from core.checkpoint.io import load_model, read_checkpoint, save_checkpoint
from core.cli import main
from core.models import SPECS, build_model
from core.models.specs import scale_width

TINY = scale_width(SPECS["yolov7-tiny"], 0.25)


def test_strip_keeps_ema_weights_in_fp16_and_drops_resume_state(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY, 2, aux=True, class_names=["a", "b"])
    ema = build_model(TINY, 2, aux=True, class_names=["a", "b"])
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    src = save_checkpoint(
        tmp_path / "last.pt",
        model,
        ema=ema,
        optimizer=opt.state_dict(),
        train={"config": {"img": 96}, "epoch": 3, "rng": {"torch": torch.get_rng_state()}, "metrics": {"mAP50": 0.5}},
    )
    out = tmp_path / "small.pt"
    assert main(["strip", str(src), str(out)]) == 0
    ck = read_checkpoint(out)
    assert ck["optimizer"] is None and ck["ema"] is None
    assert ck["train"] == {"config": {"img": 96}, "epoch": 3, "metrics": {"mAP50": 0.5}}
    assert all(v.dtype == torch.float16 for v in ck["state_dict"].values() if v.is_floating_point())
    assert out.stat().st_size < src.stat().st_size / 2
    loaded = load_model(out).model.eval()
    ema.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(loaded.state_dict().values(), ema.state_dict().values()):
            if a.is_floating_point():
                torch.testing.assert_close(a, b.half().float(), rtol=0, atol=0)
        out_stripped, out_ema = loaded(x), ema.half().float()(x)
    torch.testing.assert_close(out_stripped, out_ema)
    assert loaded.names == ["a", "b"] and loaded.aux


def test_strip_refuses_a_file_that_is_not_our_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["strip", str(bad), str(tmp_path / "o.pt")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()
