"""``yolov7-studio assign``: image mode (fresh model or checkpoint, YOLO or VOC labels, maps only), dataset mode, and
clear errors for unreadable images, malformed labels, unknown classes and bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.checkpoint.io import save_checkpoint
from core.cli import main
from core.data import make_demo_dataset
from core.models import build_model, get_spec, scale_width

THIN = ["--model", "yolov7-tiny", "--width", "0.125", "--aux", "--img", "96"]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("img")
    img = np.full((90, 120, 3), 100, dtype=np.uint8)
    cv2.rectangle(img, (10, 10), (60, 50), (0, 0, 255), -1)
    cv2.circle(img, (90, 65), 18, (0, 255, 0), -1)
    path = folder / "shapes.png"
    cv2.imwrite(str(path), img)
    (folder / "shapes.txt").write_text("0 0.2917 0.3333 0.4167 0.4444\n1 0.75 0.7222 0.3 0.4\n")
    (folder / "shapes.xml").write_text(
        "<annotation><size><width>120</width><height>90</height></size>"
        "<object><name>square</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>60</xmax><ymax>50</ymax></bndbox>"
        "</object><object><name>disc</name><bndbox><xmin>72</xmin><ymin>47</ymin><xmax>108</xmax><ymax>83</ymax>"
        "</bndbox></object></annotation>"
    )
    return path


def test_image_mode_writes_html_pngs_and_json(image, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["assign", str(image), *THIN, "--nc", "2", "--labels", str(image.with_suffix(".txt")), "--out",
               str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "box 0 0 (" in text and "fine" in text and "coarse" in text and "wrote" in text
    data = json.loads((out / "shapes_assignment.json").read_text())
    assert len(data["boxes"]) == 2 and data["assignment"]["topk"] == 20 and data["has_aux"]
    assert data["mapping"]["original_size"] == [120, 90]
    html = (out / "shapes_assignment.html").read_text()
    assert "updatemenus" in html and len(html) > 1_000_000  # plotly.js inlined
    pngs = sorted(out.glob("*.png"))
    if not pngs:
        pytest.skip("no Chromium for PNG export")
    assert [p.name for p in pngs] == ["shapes_P3.png", "shapes_P4.png", "shapes_P5.png"]
    assert all(p.stat().st_size > 10_000 for p in pngs)


def test_voc_labels_checkpoint_and_maps_only(image, tmp_path, capsys):
    # a fresh model takes the VOC file's class names
    rc = main(["assign", str(image), *THIN, "--labels", str(image.with_suffix(".xml")), "--no-png", "--out",
               str(tmp_path / "voc")])  # fmt: skip
    assert rc == 0
    data = json.loads((tmp_path / "voc" / "shapes_assignment.json").read_text())
    assert data["class_names"] == ["disc", "square"] and [b["class_name"] for b in data["boxes"]] == ["square", "disc"]
    # a checkpoint without labels: maps only
    torch.manual_seed(0)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 2, aux=True, class_names=["square", "disc"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    rc = main(["assign", str(image), "--weights", str(ckpt), "--img", "96", "--no-png", "--out", str(tmp_path / "c")])
    assert rc == 0
    data = json.loads((tmp_path / "c" / "shapes_assignment.json").read_text())
    assert data["assignment"] is None and data["class_names"] == ["square", "disc"]
    assert "maps only" in capsys.readouterr().out


def test_dataset_mode(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "demo", n_images=6, img_size=96)
    out = tmp_path / "stats"
    rc = main(["assign", *THIN, "--data", str(data), "--split", "all", "--stats", "--examples", "1", "--no-png",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    stats = json.loads((out / "assignment_stats.json").read_text())
    assert stats["images"] == 6 and stats["class_names"] == ["circle", "square", "triangle", "cross"]
    assert (out / "assignment_stats.html").is_file()
    assert len(list((out / "examples").glob("*_assignment.html"))) == 1
    assert "positives per box" in capsys.readouterr().out


def test_errors(image, tmp_path, capsys):
    def err(*args: str) -> str:
        capsys.readouterr()
        assert main(["assign", *args, "--out", str(tmp_path / "e")]) == 2
        return capsys.readouterr().err

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\x00\x01 not an image")
    assert "broken.jpg" in err(str(broken), *THIN)
    assert "no such file" in err(str(tmp_path / "missing.jpg"), *THIN)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0.5 0.5 0.2\n")
    assert "malformed row" in err(str(image), *THIN, "--nc", "2", "--labels", str(bad))
    bad.write_text("7 0.5 0.5 0.2 0.2\n")
    assert "unknown class" in err(str(image), *THIN, "--nc", "2", "--labels", str(bad))
    assert "unknown class 'disc'" in err(str(image), *THIN, "--names", "square", "--labels",
                                         str(image.with_suffix(".xml")))  # fmt: skip
    assert "give an IMAGE" in err(*THIN)
    assert "no such checkpoint" in err(str(image), "--weights", str(tmp_path / "none.pt"))
    assert "unknown model" in err(str(image), "--model", "yolov9")
    assert "multiple of the largest stride" in err(str(image), *THIN[:-1], "100")
    with pytest.raises(SystemExit):  # argparse: --weights and --model together
        main(["assign", str(image), "--weights", "a.pt", "--model", "yolov7", "--out", str(tmp_path)])
