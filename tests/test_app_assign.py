"""Assignments tab, service level (app.services.assign) and the /assign endpoint of a launched studio.

A tiny yolov7-tiny with an auxiliary head (width 0.125, input 128) is saved into a temporary workspace as an uploaded
checkpoint, next to a four-image YOLO dataset; nothing depends on the demo checkpoint detecting anything.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.modelcache import ModelCache
from app.services import assign as svc
from app.workspace import Workspace
from core.checkpoint.io import save_checkpoint
from core.explore import STATS_FIGURES, explore_image
from core.models import build_model, get_spec, scale_width

NAMES = ["red", "green", "blue", "white"]
IMG = 128
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (240, 240, 240)]
# pixel xyxy boxes (class, box) of a 160x120 image; the flat box (3 px high, 2.4 px at the input) gets no fine
# positive: no lead anchor is within ratio 4 of it
BOXES = [(0, (10, 10, 60, 50)), (1, (80, 40, 150, 110)), (2, (20, 70, 50, 100))]
FLAT = (3, (30, 60, 150, 63))


def _picture(boxes: list[tuple[int, tuple[int, int, int, int]]], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((120, 160, 3), 90, dtype=np.uint8)
    for cls, (x1, y1, x2, y2) in boxes:
        img[y1:y2, x1:x2] = COLOURS[cls]
    return np.clip(img.astype(int) + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)


def _yolo_rows(boxes: list[tuple[int, tuple[int, int, int, int]]], w: int = 160, h: int = 120) -> str:
    rows = []
    for cls, (x1, y1, x2, y2) in boxes:
        rows.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "\n".join(rows) + "\n"


def _voc_xml(name: str, boxes: list[tuple[int, tuple[int, int, int, int]]], w: int = 160, h: int = 120) -> str:
    objs = "".join(
        f"<object><name>{NAMES[c]}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object>"
        for c, (x1, y1, x2, y2) in boxes
    )
    return (
        f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth>"
        f"</size>{objs}</annotation>"
    )


def _make_workspace(root: Path) -> Workspace:
    ws = Workspace(root / "ws", allowed_roots=[root])
    torch.manual_seed(0)
    model = build_model(scale_width(get_spec("yolov7-tiny"), 0.125), len(NAMES), aux=True, class_names=NAMES)
    save_checkpoint(ws.checkpoints_dir / "tiny.pt", model, train={"img": IMG})
    ds = ws.datasets_dir / "shapes"
    for split, n in (("train", 2), ("val", 2)):
        (ds / "images" / split).mkdir(parents=True)
        (ds / "labels" / split).mkdir(parents=True)
        for i in range(n):
            boxes = BOXES[: 2 + i]
            Image.fromarray(_picture(boxes, i)).save(ds / "images" / split / f"{split}_{i}.png")
            (ds / "labels" / split / f"{split}_{i}.txt").write_text(_yolo_rows(boxes))
    names = "".join(f"  - {n}\n" for n in NAMES)
    (ds / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnc: {len(NAMES)}\nnames:\n{names}")
    return ws


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, ModelCache]:
    return _make_workspace(tmp_path_factory.mktemp("assign")), ModelCache()


CK = "upload:tiny.pt"
DS = "upload:shapes"


def test_dataset_image_table_equals_box_summaries(env: tuple[Workspace, ModelCache]) -> None:
    ws, cache = env
    res = svc.explore(ws, cache, dataset=DS, split="val", item="1", checkpoint=CK)
    exp = res.exploration
    assert exp.img_size == IMG and exp.has_aux and exp.num_boxes == 3
    assert res.figure.data, "the plotly figure has traces"
    summaries = exp.box_summaries()
    levels = [lv.name for lv in exp.levels]
    assert len(res.rows) == len(summaries) == 3
    for row, s in zip(res.rows, summaries):
        assert row["box"] == s["index"] and row["class"] == s["class_name"] and row["size"] == s["size"]
        for kind in ("fine", "coarse"):
            assert row[f"{kind} k"] == s[kind]["dynamic_k"]
            assert row[f"{kind} total"] == s[kind]["positives"]
            assert [row[f"{kind} {name}"] for name in levels] == s[kind]["positives_per_level"]
        cells = [c for lv in exp.view.boxes[s["index"]].fine.levels for c in lv.candidates]
        assert row["best IoU"] == pytest.approx(max(c.iou for c in cells), abs=1e-3)
        assert row["min cost"] == pytest.approx(min(c.cost for c in cells), abs=1e-3)
    # the same image by name gives the same table
    by_name = svc.explore(ws, cache, dataset=DS, split="val", item="val_1.png", checkpoint=CK)
    assert by_name.rows == res.rows


def test_bad_index_or_name_is_a_message(env: tuple[Workspace, ModelCache]) -> None:
    ws, cache = env
    with pytest.raises(svc.AssignError, match=r"index 7 out of range: split 'val' has 2 images"):
        svc.explore(ws, cache, dataset=DS, split="val", item="7", checkpoint=CK)
    with pytest.raises(svc.AssignError, match="no image named 'nope'"):
        svc.explore(ws, cache, dataset=DS, split="val", item="nope", checkpoint=CK)
    with pytest.raises(svc.AssignError, match="unknown checkpoint 'upload:missing.pt'"):
        svc.explore(ws, cache, dataset=DS, checkpoint="upload:missing.pt")


def test_box_without_positive_is_flagged(env: tuple[Workspace, ModelCache], tmp_path: Path) -> None:
    ws, cache = env
    boxes = [*BOXES, FLAT]
    img = tmp_path / "flat.png"
    Image.fromarray(_picture(boxes)).save(img)
    (tmp_path / "flat.txt").write_text(_yolo_rows(boxes))
    res = svc.explore(ws, cache, image=img, labels=tmp_path / "flat.txt", checkpoint=CK)
    flat = len(boxes) - 1
    summary = res.exploration.box_summaries()[flat]
    assert summary["fine"]["none"], "the flat box fits no anchor of the lead assignment"
    missing = " + ".join(kind for kind in ("fine", "coarse") if summary[kind]["none"])
    assert res.no_positive == [flat]
    assert res.rows[flat]["no positive"] == f"{svc.NO_POSITIVE} ({missing})"
    assert all(r["no positive"] == "" for r in res.rows[:flat])
    assert f"1 of {len(boxes)} boxes got no positive" in res.summary
    styled = svc.table_frame(res.rows)._compute().ctx  # (row, col) -> css of the styled DataFrame
    assert all(any("#ffd6d6" in v for _, v in styled[(flat, c)]) for c in range(len(res.rows[0])))
    assert not any(styled.get((0, c)) and any("#ffd6d6" in v for _, v in styled[(0, c)]) for c in range(3))


def test_uploaded_image_with_yolo_and_voc_labels(env: tuple[Workspace, ModelCache], tmp_path: Path) -> None:
    ws, cache = env
    img = tmp_path / "photo.png"
    Image.fromarray(_picture(BOXES)).save(img)
    (tmp_path / "photo.txt").write_text(_yolo_rows(BOXES))
    (tmp_path / "photo.xml").write_text(_voc_xml("photo.png", BOXES))
    yolo = svc.explore(ws, cache, image=img, labels=tmp_path / "photo.txt", checkpoint=CK)
    voc = svc.explore(ws, cache, image=img, labels=tmp_path / "photo.xml", checkpoint=CK)
    assert [r["class"] for r in voc.rows] == [NAMES[c] for c, _ in BOXES]
    np.testing.assert_allclose(voc.exploration.boxes, [b for _, b in BOXES], atol=1e-6)
    np.testing.assert_allclose(yolo.exploration.boxes, voc.exploration.boxes, atol=0.01)
    assert [r["class"] for r in yolo.rows] == [r["class"] for r in voc.rows]
    # each table is exactly what core.explore computes for the boxes read from its label file
    model = svc.load_model(ws, cache, CK).model
    for res in (yolo, voc):
        direct = explore_image(model, img, res.exploration.boxes, res.exploration.classes, img_size=IMG)
        for row, s in zip(res.rows, direct.box_summaries(), strict=True):
            assert (row["fine total"], row["coarse total"]) == (s["fine"]["positives"], s["coarse"]["positives"])
            assert (row["fine k"], row["coarse k"]) == (s["fine"]["dynamic_k"], s["coarse"]["dynamic_k"])
    # without a label file: maps only
    bare = svc.explore(ws, cache, image=img, checkpoint=CK)
    assert bare.rows == [] and bare.exploration.view is None and "no label file" in bare.summary


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("broken.txt", "0 0.5 nope 0.2 0.2\n", r"broken\.txt: malformed row"),
        ("classes.txt", "9 0.5 0.5 0.2 0.2\n", r"classes\.txt: unknown class"),
        ("other.xml", _voc_xml("photo.png", [(0, (10, 10, 60, 50))]).replace("red", "zebra"), r"other\.xml: .*'zebra'"),
        ("garbage.xml", "<annotation><object>", r"garbage\.xml: not a Pascal VOC annotation"),
        ("labels.csv", "0,1,2", r"labels\.csv: unsupported label file"),
    ],
)
def test_bad_label_file_names_it(env: tuple[Workspace, ModelCache], tmp_path: Path, name: str, content: str,
                                 expected: str) -> None:  # fmt: skip
    ws, cache = env
    img = tmp_path / "photo.png"
    Image.fromarray(_picture(BOXES)).save(img)
    (tmp_path / name).write_text(content)
    with pytest.raises(svc.AssignError, match=expected) as info:
        svc.explore(ws, cache, image=img, labels=tmp_path / name, checkpoint=CK)
    assert str(tmp_path) not in str(info.value), "the message shows the file's name, not the upload's temp path"


def test_corrupt_image_names_it(env: tuple[Workspace, ModelCache], tmp_path: Path) -> None:
    ws, cache = env
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(svc.AssignError, match=r"broken\.png"):
        svc.explore(ws, cache, image=bad, checkpoint=CK)


def test_dataset_stats_and_figures(env: tuple[Workspace, ModelCache]) -> None:
    ws, cache = env
    calls: list[tuple[float, str]] = []
    stats, figs = svc.dataset_stats(ws, cache, dataset=DS, split="val", checkpoint=CK,
                                    progress=lambda f, m="": calls.append((f, m)))  # fmt: skip
    assert stats.images == 2 and stats.boxes == 2 + 3 and stats.img_size == IMG
    assert list(figs) == list(STATS_FIGURES) and all(f.data for f in figs.values())
    assert calls and calls[-1][0] == pytest.approx(1.0)
    assert "2 images, 5 boxes" in svc.stats_summary(stats)


def test_convergence_over_snapshots(env: tuple[Workspace, ModelCache]) -> None:
    from core.explore import write_snapshot  # the trainer's writer (ObjectnessHook)

    ws, cache = env
    model = svc.load_model(ws, cache, CK).model
    folder = ws.runs_dir / "snaprun" / "objectness"
    folder.mkdir(parents=True)
    rec = svc.dataset_image(ws, cache, DS, "val", 0)
    for epoch in (0, 5, 10):
        exp = explore_image(model, rec.path, rec.boxes, rec.classes, img_size=IMG)
        write_snapshot(exp, folder / f"epoch_{epoch:03d}.npz", epoch)
    assert svc.snapshot_runs(ws) == ["snaprun"]
    fig, shown, epochs = svc.convergence(ws, "snaprun", 6)
    assert (shown, epochs) == (5, [0, 5, 10]) and "after epoch 5" in fig.layout.title.text
    assert not fig.layout.sliders, "the tab's own slider moves over epochs (gr.Plot does not play frames)"
    assert svc.convergence(ws, "snaprun")[1] == 10
    with pytest.raises(svc.AssignError, match="no objectness snapshots"):
        svc.convergence(ws, "other")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_assign_endpoint_of_a_launched_studio(tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    from app.studio.app import launch

    ws = _make_workspace(tmp_path)
    img = tmp_path / "photo.png"
    Image.fromarray(_picture([*BOXES, FLAT])).save(img)
    (tmp_path / "photo.txt").write_text(_yolo_rows([*BOXES, FLAT]))
    (tmp_path / "bad.txt").write_text("0 0.5\n")
    port = _free_port()
    demo = launch(ws.root, port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        fig, table, summary = client.predict(handle_file(str(img)), handle_file(str(tmp_path / "photo.txt")), CK,
                                             api_name="/assign")  # fmt: skip
        assert fig["type"] == "plotly" and '"heatmap"' in fig["plot"]
        rows = [dict(zip(table["headers"], r)) for r in table["data"]]
        assert [r["class"] for r in rows] == [NAMES[c] for c, _ in [*BOXES, FLAT]]
        assert [bool(r["no positive"]) for r in rows] == [False, False, False, True]
        assert "1 of 4 boxes got no positive" in summary
        # every input but the image has a default: the demo dataset's image when none is uploaded, and a bad
        # label file is an error naming it
        with pytest.raises(Exception, match=r"bad\.txt"):
            client.predict(handle_file(str(img)), handle_file(str(tmp_path / "bad.txt")), CK, api_name="/assign")
        _, table2, summary2 = client.predict(checkpoint=CK, dataset=DS, split="train", item="1", api_name="/assign")
        assert len(table2["data"]) == 3 and "train_1" in summary2
    finally:
        demo.close()


def test_the_demo_checkpoint_is_explored_at_its_training_size(tmp_path: Path) -> None:
    from app.workspace import DEMO_CHECKPOINT

    ws = Workspace(tmp_path / "ws")
    info = svc.load_model(ws, ModelCache(), "demo")
    assert info.path == DEMO_CHECKPOINT
    assert info.img_size == 256  # the stripped checkpoint keeps its training config (img 256), not the 640 fallback
