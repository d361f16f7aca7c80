"""Annotate service: saves round-trip in YOLO / VOC / COCO, history and undo, conflicts, classes, new datasets,
pre-labels equal the predictor's output."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.modelcache import ModelCache
from app.services import annotations as ann
from app.workspace import DEMO_CHECKPOINT, Workspace
from core.data import load_dataset, make_demo_dataset, write_dataset


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws", allowed_roots=[tmp_path])


def _dataset(ws: Workspace, tmp_path: Path, fmt: str) -> str:
    yaml_path = make_demo_dataset(tmp_path / "demo_src", n_images=6, img_size=96, seed=3)
    if fmt == "yolo":
        return ws.link_folder(yaml_path, "d_yolo").id
    out = tmp_path / f"d_{fmt}"
    write_dataset(load_dataset(yaml_path), fmt, out)
    return ws.link_folder(out, f"d_{fmt}").id


def _first_key(ws: Workspace, ds: str) -> str:
    return ann.list_images(ws, ds)[0]["key"]


@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
def test_save_round_trips_in_the_dataset_format(ws: Workspace, tmp_path: Path, fmt: str) -> None:
    ds = _dataset(ws, tmp_path, fmt)
    key = _first_key(ws, ds)
    loaded = ann.load_annotation(ws, ds, key)
    assert loaded["format"] == fmt
    new = [
        {"xmin": 10.3, "ymin": 12.7, "xmax": 40.1, "ymax": 55.55, "label": "square"},
        {"xmin": 50, "ymin": 20, "xmax": 90.25, "ymax": 60, "label": "hexagon"},  # a new class
    ]
    saved = ann.save_annotation(ws, ds, key, new, loaded["token"])
    assert "hexagon" in saved["classes"] and saved["state"] == "labelled"
    # read back through the dataset reader (the format itself), not through the service
    src = ann.open_dataset(ws, ds)
    reread = load_dataset(src.path)
    rec = next(r for r in reread.images if r.key == key)
    got = sorted(zip(rec.boxes.tolist(), [reread.class_names[c] for c in rec.classes]), key=lambda t: t[0][0])
    assert [n for _, n in got] == ["square", "hexagon"]
    want = np.array([[10.3, 12.7, 40.1, 55.55], [50, 20, 90.25, 60]])
    assert np.abs(np.array([b for b, _ in got]) - want).max() <= 0.5
    # the other images are untouched
    before = load_dataset(tmp_path / "demo_src" / "data.yaml")
    for r in reread.images:
        if r.key != key:
            o = next(x for x in before.images if Path(x.path).stem == Path(r.path).stem)
            assert np.abs(r.boxes - o.boxes).max(initial=0) <= 0.5


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_undo_restores_the_previous_version_and_keeps_history(ws: Workspace, tmp_path: Path, fmt: str) -> None:
    ds = _dataset(ws, tmp_path, fmt)
    key = _first_key(ws, ds)
    v0 = ann.load_annotation(ws, ds, key)
    assert not v0["can_undo"]
    v1 = ann.save_annotation(
        ws, ds, key, [{"xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40, "label": "circle"}], v0["token"]
    )
    v2 = ann.save_annotation(ws, ds, key, [], v1["token"])
    assert v2["boxes"] == []
    back1 = ann.undo(ws, ds, key, v2["token"])
    assert back1["token"] == v1["token"] and len(back1["boxes"]) == 1
    back0 = ann.undo(ws, ds, key, back1["token"])
    assert back0["token"] == v0["token"] and back0["boxes"] == v0["boxes"]
    assert not back0["can_undo"]
    with pytest.raises(ann.AnnotationError, match="nothing to undo"):
        ann.undo(ws, ds, key, back0["token"])
    assert back0["versions"] == 5  # original, 2 saves, 2 undos: nothing lost


def test_conflicting_save_is_refused(ws: Workspace, tmp_path: Path) -> None:
    ds = _dataset(ws, tmp_path, "yolo")
    key = _first_key(ws, ds)
    tab_a = ann.load_annotation(ws, ds, key)
    tab_b = ann.load_annotation(ws, ds, key)
    ann.save_annotation(ws, ds, key, [{"xmin": 1, "ymin": 1, "xmax": 20, "ymax": 20, "label": "cross"}], tab_a["token"])
    text = Path(tab_a["label_file"]).read_text()
    with pytest.raises(ann.ConflictError, match="changed in another tab since you opened"):
        ann.save_annotation(ws, ds, key, [], tab_b["token"])
    assert Path(tab_a["label_file"]).read_text() == text


@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
def test_add_and_rename_class(ws: Workspace, tmp_path: Path, fmt: str) -> None:
    ds = _dataset(ws, tmp_path, fmt)
    assert ann.add_class(ws, ds, "star")[-1] == "star"
    names = ann.rename_class(ws, ds, "circle", "disc")
    assert "disc" in names and "circle" not in names
    reread = load_dataset(ann.open_dataset(ws, ds).path)
    assert "disc" in reread.class_names and "circle" not in reread.class_names
    assert reread.num_boxes == load_dataset(tmp_path / "demo_src" / "data.yaml").num_boxes
    with pytest.raises(ann.AnnotationError, match="already"):
        ann.add_class(ws, ds, "star")


def test_bad_boxes_are_refused_with_a_message(ws: Workspace, tmp_path: Path) -> None:
    ds = _dataset(ws, tmp_path, "yolo")
    key = _first_key(ws, ds)
    tok = ann.load_annotation(ws, ds, key)["token"]
    with pytest.raises(ann.AnnotationError, match="no class"):
        ann.save_annotation(ws, ds, key, [{"xmin": 1, "ymin": 1, "xmax": 20, "ymax": 20, "label": ""}], tok)
    with pytest.raises(ann.AnnotationError, match="no image"):
        ann.load_annotation(ws, ds, "nope/none")


def test_create_dataset_from_unlabelled_images_and_states(ws: Workspace, tmp_path: Path) -> None:
    src = make_demo_dataset(tmp_path / "raw", n_images=5, img_size=64, seed=1).parent
    images = sorted(src.glob("images/*/*.jpg"))
    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in images[:3]:
            zf.write(p, f"pics/{p.name}")
    (tmp_path / "notes.txt").write_text("x")
    made = ann.create_dataset(ws, [archive, *images[3:], tmp_path / "notes.txt"], "mine", ["circle", "square"])
    assert made["images"] == 5 and any("notes.txt" in s for s in made["skipped"])
    ds = made["id"]
    assert {e.id for e in ws.list_datasets()} >= {ds}
    rows = ann.list_images(ws, ds)
    assert len(rows) == 5 and {r["state"] for r in rows} == {"untouched"}
    assert {r["split"] for r in rows} == {"train", "val"}
    key = rows[0]["key"]
    v = ann.load_annotation(ws, ds, key)
    ann.save_annotation(ws, ds, key, [{"xmin": 1, "ymin": 1, "xmax": 20, "ymax": 30, "label": "circle"}], v["token"])
    c = ann.counts(ws, ds)
    assert c["labelled"] == 1 and c["untouched"] == 4 and c["changed_since_run"] == 1
    assert [r["key"] for r in ann.list_images(ws, ds, "labelled")] == [key]
    with pytest.raises(ann.AnnotationError, match="no readable images"):
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"not a jpeg")
        ann.create_dataset(ws, [bad])


@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="the demo checkpoint is not in this checkout")
def test_prelabels_equal_the_predictor_and_stay_apart_until_saved(ws: Workspace, tmp_path: Path) -> None:
    from app.services.detect import get_predictor

    ds = _dataset(ws, tmp_path, "yolo")
    key = _first_key(ws, ds)
    cache = ModelCache()
    label_before = Path(ann.load_annotation(ws, ds, key)["label_file"]).read_text()
    out = ann.prelabel(ws, cache, ds, key, "demo", conf=0.001)
    det = get_predictor(ws, cache, "demo")([out["image"]], conf=0.001)[0]
    assert len(out["predictions"]) == len(det) > 0
    got = np.array([[p["xmin"], p["ymin"], p["xmax"], p["ymax"]] for p in out["predictions"]])
    assert np.allclose(got, det.boxes.numpy(), atol=1e-4)
    assert [p["label"] for p in out["predictions"]] == det.names
    assert np.allclose([p["score"] for p in out["predictions"]], det.scores.numpy(), atol=1e-4)
    assert Path(out["label_file"]).read_text() == label_before  # predictions are not labels until saved
    saved = ann.save_annotation(ws, ds, key, out["predictions"][:2], out["token"])
    assert saved["predictions"] == [] and len(saved["boxes"]) == 2
