"""The generated demo dataset, and the ``yolov7-studio data`` commands end to end."""

from __future__ import annotations

import argparse
import hashlib
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.cli import data as data_cli
from core.data import check_dataset, load_dataset, make_demo_dataset
from core.data.demo import CLASS_NAMES, ensure_demo_dataset
from core.data.figures import ensure_browser_path


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_images=24, img_size=128, seed=0).parent


def test_demo_is_deterministic(tmp_path: Path, demo: Path) -> None:
    again = make_demo_dataset(tmp_path / "again", n_images=24, img_size=128, seed=0).parent
    assert _digest(again) == _digest(demo)
    other = make_demo_dataset(tmp_path / "other", n_images=24, img_size=128, seed=1).parent
    assert _digest(other) != _digest(demo)
    marker = (again / "data.yaml").stat().st_mtime_ns
    assert ensure_demo_dataset(again, n_images=24, img_size=128, seed=0) == again / "data.yaml"
    assert (again / "data.yaml").stat().st_mtime_ns == marker  # not regenerated


def test_demo_content_mix(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path / "d", n_images=60, img_size=320, seed=0).parent
    report = check_dataset(load_dataset(root))
    assert report.counts_by_kind() == {}  # a clean dataset: nothing to report
    ds = report.dataset
    assert ds.class_names == CLASS_NAMES and ds.split_counts() == {"train": 48, "val": 6, "test": 6}
    st = report.stats
    assert all(n > 20 for n in st.boxes_per_class.values())
    assert all(n > 10 for n in st.size_buckets.values())  # small, medium and large objects
    assert st.boxes_per_image.max() >= 10  # crowded images
    sides = st.box_wh.max(axis=1)
    assert sides.min() < 16 and sides.max() > 100
    img = cv2.imread(str(ds.images[0].path))
    assert img.shape == (320, 320, 3)


def test_cli_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("demo", "--out", str(tmp_path / "demo"), "--n-images", "8", "--img-size", "64") == 0
    assert (tmp_path / "demo" / "data.yaml").is_file() and "8 images" in capsys.readouterr().out
    assert len(list((tmp_path / "demo" / "images").rglob("*.jpg"))) == 8


def test_cli_check_json_and_figures(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = ensure_browser_path() is not None
    argv = ["check", str(demo), "--json", "--out", str(tmp_path / "report"), "--img-size", "128"]
    assert _cli(*argv, *([] if png else ["--no-png"])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "yolo" and out["summary"]["used_images"] == 24 and out["issue_counts"] == {}
    assert {f["train_size"] for f in out["stats"]["anchor_fits"]} == {128}
    assert (tmp_path / "report" / "dataset_report.html").stat().st_size > 100_000  # plotly.js inlined: offline
    assert json.loads((tmp_path / "report" / "report.json").read_text())["summary"] == out["summary"]
    assert "Will be used: 24 images" in (tmp_path / "report" / "report.txt").read_text()
    if not png:
        pytest.skip("no Chrome/Chromium: PNG export not tested")
    for name in ("class_counts", "boxes_per_image", "box_sizes", "anchor_levels", "image_sizes"):
        img = cv2.imread(str(tmp_path / "report" / f"{name}.png"))
        assert img is not None and img.shape[0] == 520 and img.std() > 5, name


def test_cli_check_text_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0 0.1\n0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG nope")
    assert _cli("check", str(tmp_path), "--no-png") == 0
    text = capsys.readouterr().out
    assert "degenerate_box: 1" in text and "broken.png" in text and "Left out: 1 images, 1 boxes" in text
    assert "seeded split (seed 0" in text


def test_cli_convert(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("convert", str(demo), "--to", "coco", str(tmp_path / "coco")) == 0
    assert "wrote 24 images" in capsys.readouterr().out
    assert load_dataset(tmp_path / "coco").format == "coco"
    assert _cli("convert", str(demo), "--to", "voc", str(tmp_path / "coco")) == 2  # not empty
    assert "not empty" in capsys.readouterr().err


def test_cli_preview(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "preview.png"
    assert _cli("preview", str(demo), "--out", str(out), "-n", "4", "--img-size", "128", "--hyp", "tiny") == 0
    img = cv2.imread(str(out))
    assert img.shape == (2 * 132, 2 * 132, 3)
    assert "lost" in capsys.readouterr().out


def test_cli_errors_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLOV7_STUDIO_CACHE", str(tmp_path / "cache"))
    assert _cli("check", str(tmp_path / "missing")) == 2
    assert "no such file or folder" in capsys.readouterr().err
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../x.txt", b"x")
    assert _cli("check", str(evil)) == 2
    assert "'../../x.txt': path traversal" in capsys.readouterr().err


def test_data_is_a_registered_command() -> None:
    from core.cli import _COMMANDS

    assert "data" in _COMMANDS
