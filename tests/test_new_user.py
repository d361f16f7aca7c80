"""What a new user trips over (issue 18): messages that say what was found and what is done, counts that add up,
per-image CSV exports, defaults taken from the data and the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint.io import save_checkpoint
from core.cli import main
from core.data.check import check_dataset
from core.data.files import exif_issue
from core.data.load import load_dataset
from core.data.report import report_to_text
from core.models import build_model, get_spec, scale_width

BOX = {"xmin": 5, "ymin": 5, "xmax": 30, "ymax": 30}


def _jpg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)


def _xml(path: Path, stem: str, objects: list[dict], size: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"<annotation><filename>{stem}.jpg</filename>"
    if size:
        text += "<size><width>64</width><height>48</height><depth>3</depth></size>"
    for obj in objects:
        fields = "".join(f"<{k}>{v}</{k}>" for k, v in obj.items())
        text += f"<object><name>cell</name><bndbox>{fields}</bndbox></object>"
    path.write_text(text + "</annotation>")


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    """``Images/`` + ``annotations/`` (mixed case), 3 boxes per image; im1 lacks an <xmax>, im2 lacks <size>,
    im3 is a truncated JPEG."""
    root = tmp_path / "ds"
    for k in range(6):
        _jpg(root / "Images" / f"im{k}.jpg", seed=k)
        objects = [BOX, {**BOX, "xmin": 10}, {**BOX, "ymin": 12}]
        if k == 1:
            objects = [BOX, {"xmin": 1, "ymin": 2, "ymax": 9}]
        _xml(root / "annotations" / f"im{k}.xml", f"im{k}", objects, size=k != 2)
    data = (root / "Images" / "im3.jpg").read_bytes()
    (root / "Images" / "im3.jpg").write_bytes(data[: len(data) * 2 // 3])
    return root


def test_annotation_folder_given_reads_the_images_beside_it(voc: Path) -> None:
    """`data check DIR/annotations` reads the dataset and says so, instead of advice that goes in a circle."""
    for given, fmt in ((voc / "annotations", None), (voc / "annotations", "voc"), (voc, None)):
        ds = load_dataset(given, format=fmt)
        assert ds.format == "voc" and len(ds.images) == 5, given  # im1 left out (unreadable object)
        if given != voc:
            note = next(i for i in ds.issues if i.kind == "layout_note")
            assert "no images" in note.message and "Images/" in note.message


def test_left_out_boxes_are_counted_with_their_image(voc: Path) -> None:
    report = check_dataset(load_dataset(voc))
    # im3 (truncated, 3 boxes) and im1 (1 unreadable + 1 readable box) are left out with their boxes
    assert (report.used_images, report.used_boxes) == (4, 12)
    assert (report.left_out_images, report.left_out_boxes) == (2, 5)
    assert report.input_boxes == report.used_boxes + report.left_out_boxes == 17
    text = report_to_text(report)
    assert "Left out: 2 images, 5 boxes (of 6 images and 17 boxes read)" in text
    assert "its 3 boxes are left out with it" in text


def test_missing_xmax_named_and_image_left_out_not_background(voc: Path) -> None:
    report = check_dataset(load_dataset(voc))
    by_kind = {i.kind: i for i in report.issues}
    assert "<xmax> missing" in by_kind["malformed_box"].message
    assert by_kind["labels_unreadable"].action.startswith("dropped") and "im1" in by_kind["labels_unreadable"].message
    assert "im1.jpg" not in {r.path.name for r in report.dataset.images}
    assert "empty_image" not in by_kind  # not kept as a background
    note = by_kind["missing_size"]
    assert note.file.endswith("im2.xml") and "real size" in note.message and "64x48" in note.message
    assert len(next(r for r in report.dataset.images if r.path.name == "im2.jpg").boxes) == 3


def test_empty_annotation_folder_and_empty_dataset_said_plainly(tmp_path: Path) -> None:
    root = tmp_path / "e"
    _jpg(root / "images" / "a.jpg")
    (root / "annotations").mkdir()
    ds = load_dataset(root)
    message = next(i.message for i in ds.issues if i.kind == "no_labels_found")
    assert "annotations/ is empty" in message
    text = report_to_text(check_dataset(ds, decode=False))
    assert "0 classes: none (no labelled box)" in text
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="the folder is empty"):
        load_dataset(tmp_path / "nothing")
    only_images = tmp_path / "flat"
    _jpg(only_images / "a.jpg")
    with pytest.raises(ValueError, match="1 images and no annotation files"):
        load_dataset(only_images)


def test_invalid_exif_orientation_is_said_invalid(tmp_path: Path) -> None:
    issue = exif_issue(tmp_path / "a.jpg", 65537)
    assert issue.kind == "exif_invalid" and "invalid" in issue.message and "not rotated" in issue.message
    assert "rotated" in exif_issue(tmp_path / "a.jpg", 6).message and exif_issue(tmp_path / "a.jpg", 6).kind == (
        "exif_rotated"
    )


def test_per_image_csv_export_is_read(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    for k in range(3):
        _jpg(root / "train" / f"im{k}.jpg", seed=k)
    _jpg(root / "valid" / "v0.jpg", seed=9)
    (root / "train" / "_annotations.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "im0.jpg,64,48,rbc,1,2,30,40\nim0.jpg,64,48,wbc,5,5,20,20\nim1.jpg,64,48,rbc,3,3,33,33\n"
        "im2.jpg,64,48,rbc,1,2,,40\n"
    )
    (root / "valid" / "_annotations.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n")
    ds = load_dataset(root)
    assert ds.format == "csv" and ds.class_names == ("rbc", "wbc")
    by_name = {r.path.name: r for r in ds.images}
    np.testing.assert_allclose(by_name["im0.jpg"].boxes, [[1, 2, 30, 40], [5, 5, 20, 20]])
    assert by_name["im0.jpg"].split == "train" and by_name["v0.jpg"].split == "val"
    assert "im2.jpg" not in by_name  # its row is unreadable: left out, not a background
    report = check_dataset(ds)
    assert report.input_boxes == report.used_boxes + report.left_out_boxes == 4
    assert "line 5 (im2.jpg): not a number: xmax ''" in report_to_text(report)


def test_other_csv_is_refused_naming_the_columns(tmp_path: Path) -> None:
    root = tmp_path / "other"
    _jpg(root / "a.jpg")
    (root / "boxes.csv").write_text("image,label,x,y,w,h\na.jpg,cat,1,2,3,4\n")
    with pytest.raises(ValueError) as err:
        load_dataset(root)
    message = str(err.value)
    assert "boxes.csv" in message and "image, label, x, y, w, h" in message
    assert "filename, width, height, class, xmin, ymin, xmax, ymax" in message
    with pytest.raises(ValueError, match="missing xmin, ymin, xmax, ymax"):
        load_dataset(root, format="csv")


def test_reparam_text_explains_a_pass_with_different_nms_and_points_to_no_file() -> None:
    from core.inference.deploy import NmsAgreement, ReparamCheck

    nms = NmsAgreement(0.001, 0.65, True, 300, 300, 290, False, 1e-3, 1e-6)
    check = ReparamCheck("yolov7-tiny", "training", (1, 3, 64, 64), 1e-6, 10.0, 1e-3, 1e-6, 64.0, 10, 9, [nms])
    text = check.to_text()
    assert check.passed and "PASSED" in text and "290 of 300 matched" in text
    assert "nearly equal scores" in text and "FACTS" not in text and "DIFFERENT" not in text


def test_assign_aux_keeps_the_checkpoint_class_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(np.full((64, 80, 3), 90, dtype=np.uint8)).save(image)
    torch.manual_seed(0)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 2, class_names=["rbc", "wbc"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    out = tmp_path / "out"
    rc = main(["assign", str(image), "--weights", str(ckpt), "--aux", "--img", "64", "--no-png", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "a_assignment.json").read_text())
    assert data["class_names"] == ["rbc", "wbc"]


# -- defaults that fit the data -------------------------------------------------------------------------------------
def _help(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_every_help_shows_defaults_and_val_has_descriptions(capsys: pytest.CaptureFixture) -> None:
    assert "number of images (default: 300)" in _help(capsys, "data", "demo")
    assert "random seed of the augmentations (default: 0)" in _help(capsys, "data", "preview")
    val = " ".join(_help(capsys, "val").split())
    assert "COCO AP/AR" in val and "NMS IoU threshold (default: 0.65)" in val
    assert "input size (default: the checkpoint's training size)" in val
    train = " ".join(_help(capsys, "train").split())
    assert "(default auto)" in train and "(default yolov7-tiny)" in train and "--recipe" in train
    assign = " ".join(_help(capsys, "assign").split())
    assert "default: the checkpoint's training size" in assign


def test_small_dataset_recipe_is_chosen_by_size_and_says_why() -> None:
    from core.train import TrainConfig
    from core.train.setup import from_scratch_warning, resolve_recipe

    cfg, note = resolve_recipe(TrainConfig(data="d", epochs=12), 200)
    assert (cfg.recipe, cfg.optimizer, cfg.nbs, cfg.close_mosaic) == ("small", "adamw", 16, 2)
    assert cfg.hyp_overrides == {"lr0": 0.002}
    assert "200 training images < 1000" in note and "ADAMW lr0 0.002" in note and "--recipe official" in note
    assert resolve_recipe(cfg, 200)[0] == cfg  # a resumed/relaunched run resolves to the same
    big, note = resolve_recipe(TrainConfig(data="d"), 5000)
    assert (big.recipe, big.optimizer, big.nbs) == ("official", "sgd", 64) and "5000 training images >= 1000" in note
    given, note = resolve_recipe(TrainConfig(data="d", epochs=50, optimizer="adam", nbs=32), 200)
    assert (given.optimizer, given.nbs, given.close_mosaic) == ("adam", 32, 10) and "lr0" not in given.hyp_overrides
    assert "kept as given: nbs, optimizer" in note
    forced, _ = resolve_recipe(TrainConfig(data="d", recipe="official"), 200)
    assert forced.optimizer == "sgd" and forced.nbs == 64
    warning = from_scratch_warning(TrainConfig(data="d"), 200)
    assert warning is not None and "from scratch on 200 images" in warning and "--weights" in warning
    assert from_scratch_warning(TrainConfig(data="d", weights="yolov7-tiny.pt"), 200) is None


def test_commands_default_to_the_checkpoint_training_size() -> None:
    from core.cli.sizes import default_size, training_size

    assert training_size({"train": {"config": {"img": 320}}}) == 320
    assert training_size({"train": {"img": 256}}) == 256 and training_size({"train": None}) is None
    size, note = default_size(None, {"train": {"config": {"img": 320}}})
    assert size == 320 and note is not None and "trained at" in note
    assert default_size(416, {"train": {"config": {"img": 320}}}) == (416, None)
    assert default_size(None, {})[0] == 640


def test_assign_uses_the_checkpoint_training_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(np.full((64, 80, 3), 90, dtype=np.uint8)).save(image)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 1, class_names=["cell"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model, train={"config": {"img": 96}})
    assert main(["assign", str(image), "--weights", str(ckpt), "--no-png", "--out", str(tmp_path / "o")]) == 0
    assert "input size 96 (the size the checkpoint was trained at" in capsys.readouterr().err
    data = json.loads((tmp_path / "o" / "a_assignment.json").read_text())
    assert data["mapping"]["img_size"] == 96 if "img_size" in data["mapping"] else True


@pytest.mark.slow
def test_training_logs_the_recipe_and_evaluates_the_test_split(tmp_path: Path) -> None:
    from core.data.demo import make_demo_dataset
    from core.train import TrainConfig, Trainer

    data = make_demo_dataset(tmp_path / "demo", n_images=20, img_size=64, fractions=(0.6, 0.2, 0.2))
    lines: list[str] = []
    cfg = TrainConfig(
        data=str(data), model="yolov7-tiny", width=0.25, out=str(tmp_path / "run"), epochs=1, img=64, batch=4,
        workers=0, device="cpu", autoanchor=False, progress=False, plots="none", eval_conf=0.01,
    )  # fmt: skip
    assert Trainer(cfg, log=lines.append).fit()["state"] == "finished"
    log = "\n".join(lines)
    assert "recipe: small-dataset (ADAMW lr0 0.002, nominal batch 16" in log and "12 training images < 1000" in log
    assert "warning: training from scratch on 12 images" in log
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["test"]["split"] == "test" and len(metrics["test"]["coco"]) == 12
    assert (tmp_path / "run" / "predictions_test.json").is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["recipe"] == "small" and saved["optimizer"] == "adamw"


# -- a stopped run ends at once -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_ends_a_run_quietly_without_the_png_export(tmp_path: Path) -> None:
    """A front end waits on a stopped run: SIGTERM saves last.pt and the process ends (HTML plots only, no
    traceback). The time from SIGTERM to exit is measured and printed, not asserted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from core.data.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "demo", n_images=16, img_size=64)
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "import sys; from core.cli import main; sys.exit(main())", "train", "--data",
           str(data), "--width", "0.25", "--img", "64", "--batch", "4", "--epochs", "200", "--workers", "0",
           "--device", "cpu", "--no-autoanchor", "--no-progress", "--plots", "all", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path.cwd())
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            status = out / "status.json"
            if (out / "results.csv").is_file() and status.is_file():  # one epoch done: plots/ has its HTML
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.kill(proc.pid, signal.SIGTERM)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=300)
        print(f"SIGTERM to exit: {time.monotonic() - sent:.1f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "JSONError" not in stderr
    assert "stopped by SIGTERM" in stdout and "HTML only" in stdout
    assert json.loads((out / "status.json").read_text())["state"] == "stopped"
    assert (out / "plots" / "losses.html").is_file() and not (out / "plots" / "losses.png").exists()


# -- plots that explain themselves ----------------------------------------------------------------------------------
def test_losses_figure_says_aux_only_with_one_and_drops_the_flat_class_panel() -> None:
    from core.train.plots import losses_figure

    rows = [{"epoch": e, "box": 0.1 / e, "obj": 0.05 / e, "cls": 0.0, "aux_box": "", "aux_obj": "", "aux_cls": ""}
            for e in range(1, 4)]  # fmt: skip
    fig = losses_figure(rows)
    title = fig.layout.title.text
    assert "dashed" not in title and "no auxiliary head" in title and "one class" in title
    assert [a.text for a in fig.layout.annotations] == ["box (1 - CIoU)", "objectness"]
    with_aux = [{**r, "cls": 0.02 / r["epoch"], "aux_box": 0.2, "aux_obj": 0.1, "aux_cls": 0.05} for r in rows]
    fig = losses_figure(with_aux)
    assert "auxiliary head dashed" in fig.layout.title.text and len(fig.layout.annotations) == 3
    assert sum(1 for t in fig.data if t.line.dash == "dash") == 3


def test_assignment_figure_explains_fine_coarse_and_dynamic_k_without_overlap() -> None:
    from core.explore import explore_image
    from core.explore.figure import exploration_figure

    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 2).eval()
    rgb = np.full((64, 64, 3), 120, dtype=np.uint8)
    exp = explore_image(model, rgb, np.array([[8.0, 8.0, 40.0, 40.0]]), np.array([0]), img_size=64)
    fig = exploration_figure(exp)
    legend = fig.layout.legend.title.text
    assert "<i>fine</i> = the cells that teach the lead head" in legend and "<i>dynamic k</i> = how many" in legend
    texts = [a.text for a in fig.layout.annotations]
    assert not any("no aux map to show" in t for t in texts)  # no text drawn over the coarse cells
    assert any("no AUX head in this model (no aux map)" in t for t in texts)  # said in the panel's title instead


def test_detect_and_export_default_to_the_checkpoint_training_size(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(np.full((64, 80, 3), 90, dtype=np.uint8)).save(image)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), 1, class_names=["cell"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model, train={"config": {"img": 96}})
    assert main(["detect", str(image), "--weights", str(ckpt), "--out", str(tmp_path / "d"), "--device", "cpu"]) == 0
    assert "input size 96 (the size the checkpoint was trained at" in capsys.readouterr().out
    export_help = " ".join(_help(capsys, "export").split())
    assert "default: the checkpoint's training size" in export_help and "--out" in export_help


def test_problems_in_a_zip_are_named_inside_the_zip(voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    monkeypatch.setenv("YOLOV7_STUDIO_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "cells.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(voc.rglob("*")):
            if f.is_file():
                zf.write(f, f"ds/{f.relative_to(voc).as_posix()}")
    text = report_to_text(check_dataset(load_dataset(archive)))
    assert "cells.zip:ds/annotations/im1.xml: object 1 (cell): <xmax> missing" in text
    assert str(tmp_path / "cache") not in text
