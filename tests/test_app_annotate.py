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


@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
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
    assert not list(Path(back0["label_file"]).parent.glob("*.tmp"))  # atomic writes leave no temp files


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


# -- against a launched studio ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    """The studio served in this process on a free port, with a small linked YOLO dataset ``folder:small``."""
    from app.studio.app import launch
    from tests.studio_server import free_port

    tmp = tmp_path_factory.mktemp("annotate_studio")
    root = tmp / "ws"
    make_demo_dataset(tmp / "small", n_images=4, img_size=160, seed=4)
    Workspace(root, allowed_roots=[tmp]).link_folder(tmp / "small" / "data.yaml", "small")
    demo = launch(root, port=free_port(), block=False, allowed_roots=[tmp])
    try:
        yield demo.local_url, Workspace(root, allowed_roots=[tmp])
    finally:
        demo.close()


@pytest.mark.slow
def test_annotation_endpoints_with_gradio_client(studio) -> None:
    from gradio_client import Client

    url, ws = studio
    client = Client(url, verbose=False)
    key = ann.list_images(ws, "folder:small")[0]["key"]
    rec = client.predict("folder:small", key, api_name="/annotation_load")
    assert rec["key"] == key and rec["format"] == "yolo" and rec["token"]
    box = {"xmin": 5, "ymin": 6, "xmax": 40, "ymax": 50, "label": "triangle"}
    saved = client.predict("folder:small", key, rec["boxes"] + [box], rec["token"], api_name="/annotation_save")
    assert len(saved["boxes"]) == len(rec["boxes"]) + 1 and saved["token"] != rec["token"]
    assert Path(saved["label_file"]).read_text().count("\n") == len(saved["boxes"])
    with pytest.raises(Exception, match="changed in another tab"):
        client.predict("folder:small", key, [], rec["token"], api_name="/annotation_save")
    pre = client.predict("folder:small", key, "demo", 0.01, api_name="/prelabel")
    assert isinstance(pre["predictions"], list) and pre["boxes"] == saved["boxes"]
    table, gallery, summary, first = client.predict(
        "folder:small", "demo", "all", 0.5, 4, False, api_name="/review_queue"
    )
    assert summary["images"] == 4 and set(summary["by_kind"]) == set(review_kinds())
    assert table["headers"][:3] == ["rank", "score", "kind"]


def review_kinds() -> tuple[str, ...]:
    from app.services.review import KINDS

    return KINDS


@pytest.mark.slow
@pytest.mark.browser
def test_a_box_drawn_in_the_browser_lands_in_the_label_file(studio) -> None:
    """Debian Chromium draws a box on the first image with the editor's Create-box tool and presses Save."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no Chromium on this machine (./scripts/test.sh installs Debian's chromium when run as root)")
    url, ws = studio
    key = ann.list_images(ws, "demo")[0]["key"]  # what the tab opens first
    before = ann.load_annotation(ws, "demo", key)
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]  # fmt: skip
    shots = Path(__file__).resolve().parents[1] / "runs" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Annotate").click()
        page.wait_for_function(
            "k => document.body.innerText.includes(k + ' (train')", arg=key, timeout=60_000
        )  # the record line under the editor
        canvas = page.locator("#annotate_editor canvas").first
        canvas.scroll_into_view_if_needed()
        page.locator("#annotate_editor button[aria-label='Create box']").click()
        bb = canvas.bounding_box()
        assert bb is not None
        scale = bb["height"] / before["height"]  # the image is fitted to the canvas height, centred
        left = bb["x"] + (bb["width"] - before["width"] * scale) / 2
        x0, y0 = left + 4 * scale, bb["y"] + 100 * scale
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 15 * scale, y0 + 15 * scale, steps=6)
        page.mouse.move(x0 + 30 * scale, y0 + 40 * scale, steps=6)
        page.mouse.up()
        page.screenshot(path=str(shots / "annotate_drawn.png"))
        page.locator("#annotate_save").click()
        page.wait_for_function("() => document.body.innerText.includes('version 1 of 2')", timeout=30_000)
        page.screenshot(path=str(shots / "annotate_saved.png"))
        browser.close()
    after = ann.load_annotation(ws, "demo", key)
    assert len(after["boxes"]) == len(before["boxes"]) + 1

    def coords(b: dict) -> np.ndarray:
        return np.array([b[k] for k in ("xmin", "ymin", "xmax", "ymax")])

    # the editor sends whole pixels: the boxes already there come back within 0.5 px, with their classes
    new = [b for b in after["boxes"] if not any(np.abs(coords(b) - coords(o)).max() <= 0.5 for o in before["boxes"])]
    assert len(new) == 1
    kept = sorted((b["label"], *np.round(coords(b))) for b in after["boxes"] if b is not new[0])
    assert kept == sorted((b["label"], *np.round(coords(b))) for b in before["boxes"])
    got = coords(new[0])
    assert np.abs(got - [4, 100, 34, 140]).max() <= 3  # where the mouse went, in image pixels


class _FakeJobs:
    """Records what the Annotate tab asks the job runner for (the real runner starts a training process)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def start(self, request: dict) -> dict:
        self.requests.append(request)
        return {"name": "ft1", "state": "queued"}

    def status(self, name: str) -> dict:
        return {"name": name, "state": "finished", "metrics": {"mAP50-95": 0.5, "precision": 0.9}}


def test_finetune_on_what_is_labelled(ws: Workspace, tmp_path: Path) -> None:
    src = make_demo_dataset(tmp_path / "raw", n_images=6, img_size=64, seed=2).parent
    ds = ann.create_dataset(ws, sorted(src.glob("images/*/*.jpg")), "loop", ["circle"])["id"]
    with pytest.raises(ann.AnnotationError, match="no labelled images"):
        ann.start_finetune(ws, _FakeJobs(), ds, "demo")
    for row in ann.list_images(ws, ds)[:3]:
        v = ann.load_annotation(ws, ds, row["key"])
        ann.save_annotation(
            ws, ds, row["key"], [{"xmin": 2, "ymin": 2, "xmax": 30, "ymax": 30, "label": "circle"}], v["token"]
        )
    jobs = _FakeJobs()
    out = ann.start_finetune(ws, jobs, ds, "demo", epochs=3)
    assert jobs.requests == [{"dataset": out["subset"]["id"], "checkpoint": "demo", "epochs": 3}]
    subset = load_dataset(ws.dataset(out["subset"]["id"]).path)
    assert len(subset.images) == 3 and subset.num_boxes == 3 and "val" in subset.split_names
    c = ann.counts(ws, ds)
    assert c["changed_since_run"] == 0 and c["runs"][0]["boxes_changed"] == 3
    rows = ann.run_metrics(jobs, c["runs"])
    assert rows[0]["run"] == "ft1" and rows[0]["mAP50-95"] == 0.5 and "precision" not in rows[0]
