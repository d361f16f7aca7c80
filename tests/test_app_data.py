"""Data tab, service level (app.services.data) and the /check_data endpoint of a launched studio.

Small YOLO, Roboflow-style YOLO, Pascal VOC and COCO zips are written into tmp_path (64x48 PNGs), uploaded into a
temporary workspace and checked; hostile and broken archives are refused by name with nothing written.
"""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.services import data as svc
from app.workspace import Workspace

NAMES = ["cat", "dog"]
W, H = 64, 48
# per image: (class, pixel xyxy) boxes
LABELS = [[(0, (4, 4, 30, 30))], [(1, (10, 8, 60, 40)), (0, (2, 2, 12, 12))], [(1, (20, 10, 50, 44))],
          [(0, (5, 5, 25, 25)), (1, (30, 10, 62, 46))], [], [(0, (8, 6, 40, 40))]]  # fmt: skip


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _yolo_txt(boxes: list) -> str:
    return "".join(
        f"{c} {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}\n"
        for c, (x1, y1, x2, y2) in boxes
    )


def _yaml(lines: dict[str, str]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in lines.items()) + "names:\n" + "".join(f"  - {n}\n" for n in NAMES)


def _zip(path: Path, files: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _split(i: int) -> str:
    return "train" if i < 4 else "val"


def yolo_zip(path: Path, top: str = "shapes", corrupt: bool = False) -> Path:
    files: dict[str, bytes | str] = {f"{top}/data.yaml": _yaml({"path": ".", "train": "images/train",
                                                                 "val": "images/val", "nc": "2"})}  # fmt: skip
    for i, boxes in enumerate(LABELS):
        files[f"{top}/images/{_split(i)}/im{i}.png"] = _png(i)
        files[f"{top}/labels/{_split(i)}/im{i}.txt"] = _yolo_txt(boxes)
    if corrupt:
        files[f"{top}/images/train/broken.png"] = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
        files[f"{top}/labels/train/broken.txt"] = _yolo_txt([(0, (1, 1, 20, 20))])
    return _zip(path, files)


def roboflow_zip(path: Path) -> Path:
    """A Roboflow YOLO export: data.yaml at the root pointing at ../train/images, ../valid/images."""
    files: dict[str, bytes | str] = {
        "data.yaml": _yaml({"train": "../train/images", "val": "../valid/images", "nc": "2"}),
        "README.roboflow.txt": "exported from roboflow",
    }
    for i, boxes in enumerate(LABELS):
        split = "train" if i < 4 else "valid"
        files[f"{split}/images/im{i}_jpg.rf.abc{i}.png"] = _png(i)
        files[f"{split}/labels/im{i}_jpg.rf.abc{i}.txt"] = _yolo_txt(boxes)
    return _zip(path, files)


def voc_zip(path: Path) -> Path:
    files: dict[str, bytes | str] = {}
    for i, boxes in enumerate(LABELS):
        objs = "".join(
            f"<object><name>{NAMES[c]}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object>"
            for c, (x1, y1, x2, y2) in boxes
        )
        files[f"VOC/Annotations/im{i}.xml"] = (
            f"<annotation><filename>im{i}.png</filename><size><width>{W}</width><height>{H}</height>"
            f"<depth>3</depth></size>{objs}</annotation>"
        )
        files[f"VOC/JPEGImages/im{i}.png"] = _png(i)
    files["VOC/ImageSets/Main/train.txt"] = "".join(f"im{i}\n" for i in range(4))
    files["VOC/ImageSets/Main/val.txt"] = "".join(f"im{i}\n" for i in range(4, len(LABELS)))
    return _zip(path, files)


def coco_zip(path: Path) -> Path:
    files: dict[str, bytes | str] = {}
    for split in ("train", "val"):
        ids = [i for i in range(len(LABELS)) if _split(i) == split]
        images = [{"id": i + 1, "file_name": f"im{i}.png", "width": W, "height": H} for i in ids]
        anns = [
            {"id": 100 * i + k + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            for i in ids for k, (c, (x1, y1, x2, y2)) in enumerate(LABELS[i])
        ]  # fmt: skip
        cats = [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)]
        files[f"coco/annotations/instances_{split}.json"] = json.dumps(
            {"images": images, "annotations": anns, "categories": cats}
        )
        for i in ids:
            files[f"coco/{split}/im{i}.png"] = _png(i)
    return _zip(path, files)


N_IMAGES = len(LABELS)
N_BOXES = sum(len(b) for b in LABELS)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws", allowed_roots=[tmp_path / "allowed"])


def _datasets(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.datasets_dir.iterdir())


@pytest.mark.parametrize(
    ("maker", "fmt"), [(yolo_zip, "yolo"), (roboflow_zip, "yolo"), (voc_zip, "voc"), (coco_zip, "coco")]
)
def test_zip_upload_lands_as_a_dataset_with_the_right_counts(ws: Workspace, tmp_path: Path, maker, fmt: str) -> None:
    upload = maker(tmp_path / f"{maker.__name__}.zip")
    progress: list[float] = []
    res = svc.import_and_check(ws, upload, progress=lambda f, m="": progress.append(f), preview_n=4, preview_size=64)
    assert res.dataset_id == f"upload:{maker.__name__}"
    assert res.format == fmt and res.classes == NAMES
    assert (res.images, res.boxes) == (N_IMAGES, N_BOXES)
    assert res.splits == {"train": 4, "val": 2}
    assert [r for r in res.rows if r["what was done"].startswith("left out")] == []
    # listed by the workspace (so every tab's picker shows it), and checking it again by id gives the same counts
    assert res.dataset_id in [e.id for e in ws.list_datasets()]
    again = svc.check(ws, res.dataset_id, preview=False)
    assert (again.images, again.boxes, again.splits) == (res.images, res.boxes, res.splits)
    assert set(res.figures) >= {"class_counts", "box_sizes", "anchor_levels"}
    assert [a["BPR"] for a in res.anchors] and all(0 <= a["BPR"] <= 1 for a in res.anchors)
    assert progress and progress[-1] == pytest.approx(1.0) and progress == sorted(progress)
    # the augmented preview and the labels it lost
    assert res.preview is not None and res.preview.is_file() and ws.inside(res.preview)
    assert res.labels["input"] > 0 and res.labels["input"] == res.labels["kept"] + res.labels["lost"]
    assert 0.0 <= res.labels["lost_share"] <= 1.0 and "lost" in res.summary
    assert list((ws.tmp_dir).glob("extract_*")) == [], "the staging folder is removed"


def test_same_zip_twice_gets_a_second_name(ws: Workspace, tmp_path: Path) -> None:
    upload = yolo_zip(tmp_path / "shapes.zip")
    first, second = svc.import_zip(ws, upload), svc.import_zip(ws, upload)
    assert (first.id, second.id) == ("upload:shapes", "upload:shapes_2")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [("../evil.txt", "path traversal"), ("/abs/evil.txt", "absolute path"), ("a\\..\\evil.txt", "backslash")],
)
def test_hostile_zip_is_refused_naming_the_entry(ws: Workspace, tmp_path: Path, entry: str, problem: str) -> None:
    upload = tmp_path / "hostile.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("ok/data.yaml", "names: [a]\n")
        zf.writestr(zipfile.ZipInfo(entry), b"pwned")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(svc.DataError, match="hostile.zip: refused: entry") as info:
        svc.import_and_check(ws, upload)
    assert repr(entry) in str(info.value) and problem in str(info.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before, "nothing written anywhere"
    assert _datasets(ws) == []


def test_broken_or_empty_zip_is_a_message(ws: Workspace, tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(svc.DataError, match="broken.zip: refused: archive: not a readable zip file"):
        svc.import_zip(ws, broken)
    notes = _zip(tmp_path / "notes.zip", {"notes/readme.txt": "hello"})
    with pytest.raises(svc.DataError, match="notes.zip: not a dataset"):
        svc.import_zip(ws, notes)
    assert _datasets(ws) == [] and list(ws.tmp_dir.iterdir()) == []


def test_corrupt_image_is_reported_by_its_name_in_the_zip(ws: Workspace, tmp_path: Path) -> None:
    res = svc.import_and_check(ws, yolo_zip(tmp_path / "withbad.zip", corrupt=True), preview=False)
    bad = [r for r in res.rows if r["kind"] in ("corrupt_image", "unreadable_image")]
    assert [r["file"] for r in bad] == ["shapes/images/train/broken.png"]
    assert bad[0]["what was done"] == "left out (image)"
    assert (res.images, res.boxes) == (N_IMAGES, N_BOXES), "the corrupt image and its box are left out"
    assert res.input_images == N_IMAGES + 1
    assert all(str(ws.root) not in r["file"] + r["problem"] for r in res.rows), "no extraction paths shown"


def test_link_folder_under_an_allowed_root_only(ws: Workspace, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    with zipfile.ZipFile(yolo_zip(tmp_path / "d.zip")) as zf:
        zf.extractall(allowed)
    entry = svc.link_folder(ws, str(allowed / "shapes"), "mine")
    assert entry.id == "folder:mine"
    res = svc.check(ws, "folder:mine", preview=False)
    assert (res.images, res.boxes) == (N_IMAGES, N_BOXES)
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(svc.DataError, match="outside the folders the studio may read"):
        svc.link_folder(ws, str(outside))
    with pytest.raises(svc.DataError, match="unknown dataset 'upload:nothing'"):
        svc.check(ws, "upload:nothing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_check_data_endpoint_of_a_launched_studio(tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    from app.studio.app import launch

    upload = roboflow_zip(tmp_path / "export.zip")
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(hostile, "w") as zf:
        zf.writestr("../evil.txt", b"pwned")
    port = _free_port()
    demo = launch(tmp_path / "ws", port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        out = client.predict(upload=handle_file(str(upload)), api_name="/check_data")
        dataset_id, summary, report, anchors, *figs, preview = out
        assert dataset_id == "upload:export" and f"{N_IMAGES} images, {N_BOXES} boxes used" in summary
        assert report["headers"][:3] == ["file", "problem", "kind"]
        assert anchors["data"] and all(f["type"] == "plotly" for f in figs) and Path(preview).is_file()
        # by id: the new dataset, and the demo (the default)
        assert client.predict(dataset=dataset_id, api_name="/check_data")[0] == dataset_id
        assert client.predict(api_name="/check_data")[0] == "demo"
        with pytest.raises(Exception, match=r"'\.\./evil\.txt'"):
            client.predict(upload=handle_file(str(hostile)), api_name="/check_data")
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "ws" / "evil.txt").exists()
    finally:
        demo.close()
