"""Assignment explorer, one image: the maps are the model's sigmoid outputs, the view is the assigner's, and every
cell and heatmap drawn in the figures is exactly that (P5 with an aux head, and P6)."""

from __future__ import annotations

import functools
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from core.assign import explain_assignment
from core.explore import (
    exploration_figure,
    explore_image,
    level_figure,
    save_exploration,
    view_cells,
    write_pngs,
)
from core.explore.style import box_colour
from core.inference.sources import ImageReadError
from core.models import build_model, get_spec, scale_width

IMG = 128  # a multiple of 64 (P6) and 32 (P5)


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((100, 150, 3), 90, dtype=np.uint8)
    img[10:50, 20:70] = (220, 40, 40)
    img[40:95, 80:140] = (40, 200, 60)
    return np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


BOXES = np.array([[20, 10, 70, 50], [80, 40, 140, 95], [5, 70, 14, 80], [100, 5, 149, 30]], dtype=np.float64)
CLASSES = np.array([0, 1, 2, 1])


def _model(name: str, aux: bool | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(scale_width(get_spec(name), 0.125), 3, aux=aux, class_names=["red", "green", "speck"])


CASES = {"p5-aux": ("yolov7-tiny", True), "p6": ("yolov7-w6", None)}


@functools.cache
def _explored(case_id: str):
    name, aux = CASES[case_id]
    model = _model(name, aux)
    return model, explore_image(model, _image(), BOXES, CLASSES, img_size=IMG)


@functools.cache
def _figure(case_id: str):
    return exploration_figure(_explored(case_id)[1])


@pytest.fixture(params=list(CASES))
def case(request):
    return _explored(request.param)


@pytest.fixture(params=list(CASES))
def case_fig(request):
    model, exp = _explored(request.param)
    return model, exp, _figure(request.param)


def _raw(model, exp) -> list[torch.Tensor]:
    x = torch.from_numpy(exp.image.transpose(2, 0, 1).copy()).float().div(255).unsqueeze(0)
    model.eval()
    with torch.no_grad():
        return model.forward_levels(x, aux=True)


def test_maps_are_the_sigmoid_outputs_and_the_view_is_the_assigners(case):
    model, exp = case
    assert model.aux and exp.has_aux and not exp.notes
    raw = _raw(model, exp)
    nl = model.head.nl
    assert len(raw) == 2 * nl and len(exp.levels) == nl
    for lv, maps in enumerate(exp.levels):
        lead, aux = raw[lv][0], raw[nl + lv][0]
        assert maps.lead_obj.shape == (model.head.na, *lead.shape[1:3]) and maps.grid == tuple(lead.shape[1:3])
        np.testing.assert_allclose(maps.lead_obj, lead[..., 4].sigmoid().numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(maps.aux_obj, aux[..., 4].sigmoid().numpy(), rtol=0, atol=1e-6)
        assert sorted(maps.lead_cls) == [0, 1, 2]
        for c in (0, 1, 2):
            want = (lead[..., 4].sigmoid() * lead[..., 5 + c].sigmoid()).numpy()
            np.testing.assert_allclose(maps.lead_cls[c], want, rtol=0, atol=1e-6)
            want = (aux[..., 4].sigmoid() * aux[..., 5 + c].sigmoid()).numpy()
            np.testing.assert_allclose(maps.aux_cls[c], want, rtol=0, atol=1e-6)
    # the view is explain_assignment on the lead levels, lead-guided, top-k 20, fine and coarse
    ref = explain_assignment(raw, torch.from_numpy(exp.targets).float(), model.head.anchors, model.head.stride, IMG,
                             aux=True, topk=20)  # fmt: skip
    assert exp.view.to_dict() == ref.to_dict()
    assert exp.view.topk == 20 and all(b.coarse is not None for b in exp.view.boxes)
    json.dumps(exp.to_dict())  # JSON-ready


def test_pixel_mapping_and_targets(case):
    _, exp = case
    m = exp.mapping
    assert m.original_size == (150, 100) and m.input_size == IMG
    np.testing.assert_allclose(m.to_original(m.to_input(BOXES)), BOXES, atol=1e-9)
    np.testing.assert_allclose(exp.boxes_input, m.to_input(BOXES))
    assert exp.boxes_input[:, [0, 2]].max() <= IMG and exp.boxes_input.min() >= 0
    # targets: (image, class, xc, yc, w, h) normalized to the square input
    t = exp.targets
    np.testing.assert_allclose(t[:, 2] * IMG, (exp.boxes_input[:, 0] + exp.boxes_input[:, 2]) / 2)
    np.testing.assert_allclose(t[:, 5] * IMG, exp.boxes_input[:, 3] - exp.boxes_input[:, 1])
    assert t[:, 1].tolist() == CLASSES.tolist()


def _rect_cells(trace, stride: float) -> list[tuple[int, int]]:
    xs, ys = list(trace.x), list(trace.y)
    cells = []
    for i in range(0, len(xs), 6):  # x0 x1 x1 x0 x0 None
        cells.append((int(ys[i] // stride), int(xs[i] // stride)))
        assert xs[i + 5] is None and xs[i + 1] - xs[i] <= stride
    return cells


def _check_cells(fig, exp):
    """Every drawn cell (outlines, hover markers, candidates) equals the view's cells, per box, level, anchor."""
    seen = Counter()
    for tr in fig.data:
        meta = tr.meta or {}
        role = meta.get("role", "")
        if role.endswith("_cells"):
            kind = role[: -len("_cells")]
            lv, a, g, s = meta["level"], meta["anchor"], meta["box"], meta["stride"]
            want = sorted((c.gj, c.gi) for gg, c in view_cells(exp, kind, lv, a) if gg == g)
            assert sorted(_rect_cells(tr, s)) == want and want
            assert tr.line.color == box_colour(g) and tr.legendgroup == f"box{g}"
            assert (tr.fill == "toself") == (kind == "fine")  # fine filled, coarse outlined
            assert tr.xaxis == ("x2" if kind == "fine" else "x3")  # lead panel / aux panel
            seen[role] += 1
        elif role.endswith("_hover"):
            kind = role[: -len("_hover")]
            lv, a = meta["level"], meta["anchor"]
            pairs = view_cells(exp, kind, lv, a)
            k = {b.index: getattr(b, kind).dynamic_k for b in exp.view.boxes}
            want = [[g, lv, c.anchor, c.gj, c.gi, c.iou, c.cost, k[g], c.proposed_by, int(c.selected)]
                    for g, c in pairs]  # fmt: skip
            assert [list(r) for r in tr.customdata] == want
            assert list(tr.marker.color) == [box_colour(g) for g, _ in pairs]
            s = exp.levels[lv].stride
            assert list(tr.x) == [(c.gi + 0.5) * s for _, c in pairs]
            assert list(tr.y) == [(c.gj + 0.5) * s for _, c in pairs]
            seen[role] += 1
        elif role.endswith("_candidates"):
            kind = role[: -len("_candidates")]
            pairs = view_cells(exp, kind, meta["level"], meta["anchor"], "candidates")
            assert [r[:5] for r in tr.customdata] == [[g, meta["level"], c.anchor, c.gj, c.gi] for g, c in pairs]
            seen[role] += 1
    return seen


def test_interactive_figure_draws_exactly_the_assignment(case_fig):
    model, exp, fig = case_fig
    seen = _check_cells(fig, exp)
    # every (level, anchor) view with positives has its traces; totals match the view
    nl, na = len(exp.levels), model.head.na
    for kind in ("fine", "coarse"):
        n_views = sum(1 for lv in range(nl) for a in [-1, *range(na)] if view_cells(exp, kind, lv, a))
        assert seen[f"{kind}_hover"] == n_views > 0
        assert seen[f"{kind}_candidates"] > 0
    # heatmaps: per view and class, the lead and aux maps as given by the engine (max over anchors for -1)
    raw = _raw(model, exp)
    n_maps = 0
    for tr in fig.data:
        meta = tr.meta or {}
        if meta.get("role") not in ("lead_map", "aux_map"):
            continue
        lv, a, c = meta["level"], meta["anchor"], meta["class"]
        r = raw[lv if meta["role"] == "lead_map" else nl + lv][0]
        m = r[..., 4].sigmoid() if c is None else r[..., 4].sigmoid() * r[..., 5 + c].sigmoid()
        want = (m.max(0).values if a < 0 else m[a]).numpy()
        np.testing.assert_allclose(np.asarray(tr.z), want, rtol=0, atol=1e-6)
        assert tr.dx == tr.dy == exp.levels[lv].stride
        n_maps += 1
    assert n_maps == 2 * nl * (na + 1) * 4  # 2 heads x levels x (anchors + max) x (objectness + 3 classes)


def test_dropdowns_show_one_view_at_a_time(case_fig):
    _, exp, fig = case_fig
    views, kinds = fig.layout.updatemenus[0].buttons, fig.layout.updatemenus[1].buttons
    assert len(views) == len(exp.levels) * (len(exp.levels[0].anchors_px) + 1) and len(kinds) == 4

    def shown(visible) -> list[dict]:
        return [fig.data[i].meta for i, v in enumerate(visible) if v is True and
                (fig.data[i].meta or {}).get("role", "").endswith("_map")]  # fmt: skip

    for b in views:
        maps = shown(b.args[0]["visible"])
        assert len(maps) == 2 and {m["role"] for m in maps} == {"lead_map", "aux_map"}
        lv, a = maps[0]["level"], maps[0]["anchor"]
        assert all(m["level"] == lv and m["anchor"] == a and m["class"] is None for m in maps)
        assert exp.levels[lv].name in b.label
        # the map dropdown is rebuilt for this view: its buttons keep the level/anchor and switch the class
        for kb, c in zip(b.args[1]["updatemenus[1].buttons"], [None, 0, 1, 2]):
            ms = shown(kb["args"][0]["visible"])
            assert {(m["level"], m["anchor"], m["class"]) for m in ms} == {(lv, a, c)}
        cells = {fig.data[i].meta["level"] for i, v in enumerate(b.args[0]["visible"])
                 if v is True and (fig.data[i].meta or {}).get("role", "").endswith(("_cells", "_hover"))}  # fmt: skip
        assert cells <= {lv}
    initial = shown([t.visible for t in fig.data])
    assert len(initial) == 2
    few = exploration_figure(exp, classes=[1])  # only the maps asked for
    assert [b.label for b in few.layout.updatemenus[1].buttons] == ["objectness", "obj × P(green)"]
    assert {t.meta["class"] for t in few.data if (t.meta or {}).get("role") == "lead_map"} == {None, 1}


def test_level_pngs_are_written_and_not_empty(tmp_path):
    figs = []
    for case_id in CASES:  # one browser start for every PNG
        _, exp = _explored(case_id)
        for lv in range(len(exp.levels)):
            figs.append(level_figure(exp, lv))
            _check_cells(figs[-1], exp)
    paths = [tmp_path / f"level{i}.png" for i in range(len(figs))]
    note = write_pngs(figs, paths)
    if note and "no Chrome" in note:
        pytest.skip(note)
    assert note is None
    for p in paths:
        arr = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
        assert arr.shape[1] == figs[0].layout.width and arr.std() > 20  # a real picture, not a blank page
        assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 500


def test_model_without_aux_head_and_image_without_boxes(tmp_path):
    model = _model("yolov7-tiny", aux=False)
    model.train()
    exp = explore_image(model, _image(), BOXES, CLASSES, img_size=96)
    assert model.training  # mode restored
    assert not exp.has_aux and all(lv.aux_obj is None and lv.aux_cls is None for lv in exp.levels)
    assert "no auxiliary head" in exp.notes[0]
    assert exp.view.topk == 20 and all(b.coarse is not None for b in exp.view.boxes)  # both sets still computed
    fine_only = explore_image(model, _image(), BOXES, CLASSES, img_size=96, coarse=False)
    assert fine_only.view.topk == 10 and all(b.coarse is None for b in fine_only.view.boxes)
    fig = exploration_figure(exp)
    assert not [t for t in fig.data if (t.meta or {}).get("role") == "aux_map"]
    _check_cells(fig, exp)
    exploration_figure(fine_only)

    empty = explore_image(model, _image(), img_size=96, class_maps=[1])
    assert empty.view is None and empty.num_boxes == 0 and sorted(empty.levels[0].lead_cls) == [1]
    files = save_exploration(empty, tmp_path, name="empty", png=False)
    data = json.loads(files.json.read_text())
    assert data["assignment"] is None and data["boxes"] == []
    assert files.html.stat().st_size > 100_000  # plotly.js inlined: works offline
    npz = np.load(empty.save_npz(tmp_path / "maps.npz"))
    np.testing.assert_array_equal(npz["lead_obj_0"], empty.levels[0].lead_obj)


def test_input_errors(tmp_path):
    model = _model("yolov7-tiny", aux=True)
    with pytest.raises(ValueError, match="unknown class 5"):
        explore_image(model, _image(), BOXES[:1], [5], img_size=96)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        explore_image(model, _image(), [[1, 2, 3]], [0], img_size=96)
    with pytest.raises(ValueError, match="no area"):
        explore_image(model, _image(), [[200, 10, 300, 50]], [0], img_size=96)
    with pytest.raises(ValueError, match="2 boxes but 1 class"):
        explore_image(model, _image(), BOXES[:2], [0], img_size=96)
    with pytest.raises(ValueError, match="multiple of the largest stride"):
        explore_image(model, _image(), img_size=100)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        explore_image(model, bad, img_size=96)
    # boxes partly outside the image are clipped to it
    exp = explore_image(model, _image(), [[-10, -5, 40, 30]], [0], img_size=96)
    assert exp.boxes.tolist() == [[0, 0, 40, 30]]


def test_pil_images_and_rgb_arrays_are_accepted_like_the_predictors_inputs():
    """A PIL image (RGB, or another mode converted to RGB) gives exactly what its RGB array gives."""
    model = _model("yolov7-tiny", aux=True)
    rgb = _image()
    ref = explore_image(model, rgb, BOXES, CLASSES, img_size=96)
    for pil in (Image.fromarray(rgb), Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]))):
        exp = explore_image(model, pil, BOXES, CLASSES, img_size=96)
        assert exp.source == "PIL image" and exp.mapping == ref.mapping
        np.testing.assert_array_equal(exp.image, ref.image)
        for a, b in zip(exp.levels, ref.levels):
            np.testing.assert_array_equal(a.lead_obj, b.lead_obj)
            np.testing.assert_array_equal(a.aux_obj, b.aux_obj)
        assert exp.box_summaries() == ref.box_summaries()
    grey = explore_image(model, Image.fromarray(rgb[:, :, 1]), img_size=96)  # mode "L" -> three equal channels
    assert grey.image.shape == (96, 96, 3) and (grey.image[..., 0] == grey.image[..., 2]).all()
    with pytest.raises(ImageReadError, match="unsupported type list"):
        explore_image(model, [[1, 2, 3]], img_size=96)


def test_the_callers_model_keeps_its_mode_and_its_tensors():
    """The forward runs on an eval view: a model in training mode stays in training mode throughout, BatchNorm
    running statistics are not updated, and the maps are those of the model in eval mode."""
    model = _model("yolov7-tiny", aux=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    handle = model.model[0].register_forward_hook(lambda m, i, o: seen.append(model.training))
    try:
        exp = explore_image(model, _image(), BOXES, CLASSES, img_size=96)
    finally:
        handle.remove()
    assert all(m.training for m in model.modules()) and seen == [True]  # the model's hook ran on the view
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    ref_model = _model("yolov7-tiny", aux=True).eval()  # same seed: same weights
    ref = explore_image(ref_model, _image(), BOXES, CLASSES, img_size=96)
    for a, b in zip(exp.levels, ref.levels):
        np.testing.assert_array_equal(a.lead_obj, b.lead_obj)
