"""Review queue: injected label errors (removed boxes, flipped classes, shifted boxes, duplicates) rank above clean
labels; the queue runs end to end on a workspace dataset with a checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.modelcache import ModelCache
from app.services import annotations as ann
from app.services import review
from app.workspace import DEMO_CHECKPOINT, Workspace
from core.data import load_dataset, make_demo_dataset


def test_find_cases_on_one_image() -> None:
    gt = np.array([[10, 10, 50, 50], [10, 10, 50, 50], [60, 60, 90, 90], [100, 10, 130, 40]], dtype=float)
    cls = np.array([0, 0, 1, 2])
    pred = np.array([[10, 10, 50, 50], [60, 60, 90, 90], [100, 10, 130, 40], [5, 100, 40, 140]], dtype=float)
    scores = np.array([0.9, 0.8, 0.85, 0.7])
    pcls = np.array([0, 2, 2, 1])
    cases = review.find_cases(gt, cls, pred, scores, pcls, conf=0.5, no_positive=[1, 3])
    kinds = {(c["kind"], c["gt"]) for c in cases}
    assert ("duplicate", 1) in kinds  # the copy, reported once (not also as "no positive")
    assert ("class", 2) in kinds  # the model says 2 where the label says 1
    assert ("no_positive", 3) in kinds
    assert ("missing", None) in kinds  # the confident box at (5, 100) has no label
    assert not any(c["gt"] == 0 for c in cases)  # the clean box
    assert review.find_cases(np.zeros((0, 4)), [], np.zeros((0, 4)), [], []) == []


def _demo_labels(tmp_path: Path, n: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    ds = load_dataset(make_demo_dataset(tmp_path / "demo", n_images=n, img_size=160, seed=11))
    return [(r.boxes.copy(), r.classes.copy()) for r in ds.images], ds.num_classes


def test_injected_errors_rank_above_clean_labels_with_a_good_model(tmp_path: Path) -> None:
    """A stand-in for a good model (the clean labels as predictions, score 0.9) scores the corrupted labels: every
    injected error is in the top K (K = number of errors), far above a random order."""
    clean, nc = _demo_labels(tmp_path, 40)
    noisy, errors = review.inject_errors(clean, nc, rate=0.05, kinds=("removed", "flipped", "shifted", "duplicate"))
    assert {e["kind"] for e in errors} == {"removed", "flipped", "shifted", "duplicate"}
    ranked = []
    for i, ((gb, gc), (pb, pc)) in enumerate(zip(noisy, clean)):
        for c in review.find_cases(gb, gc, pb, np.full(len(pb), 0.9), pc, conf=0.5):
            ranked.append({**c, "image": i})
    ranked.sort(key=lambda c: -c["score"])
    k = len(errors)
    recall = review.recall_at_k(ranked, errors, k)
    assert recall["all"] >= 0.9, recall
    for kind in ("removed", "flipped", "duplicate"):
        assert recall[kind] == 1.0, recall
    # random order of all labels: the expected share of errors in the top K is K / (labels + removed)
    n_labels = sum(len(b) for b, _ in noisy) + sum(e["kind"] == "removed" for e in errors)
    assert recall["all"] > 3 * k / n_labels


@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="the demo checkpoint is not in this checkout")
def test_review_queue_end_to_end_ranks_duplicates_first(tmp_path: Path) -> None:
    """With any checkpoint (the placeholder detects nothing useful): duplicated labels lead the queue through the
    signals that need no trained model (duplicate boxes, boxes without a lead positive)."""
    ws = Workspace(tmp_path / "ws", allowed_roots=[tmp_path])
    ds = ws.link_folder(make_demo_dataset(tmp_path / "d", n_images=5, img_size=96, seed=2), "d").id
    rows = ann.list_images(ws, ds)
    dup_keys = []
    for row in rows[:2]:
        v = ann.load_annotation(ws, ds, row["key"])
        if v["boxes"]:
            ann.save_annotation(ws, ds, row["key"], v["boxes"] + [dict(v["boxes"][0])], v["token"])
            dup_keys.append(row["key"])
    assert dup_keys
    seen: list[float] = []
    out = review.review_queue(ws, ModelCache(), ds, "demo", conf=0.5, progress=lambda f, m: seen.append(f))
    top = out["cases"][: len(dup_keys)]
    assert {c["key"] for c in top} == set(dup_keys) and {c["kind"] for c in top} == {"duplicate"}
    assert all(
        Path(c["image"]).is_file() and c["label"] in ann.load_annotation(ws, ds, c["key"])["classes"] for c in top
    )
    assert out["images"][0]["key"] in dup_keys and out["summary"]["images"] == 5
    assert seen and seen[-1] == 1.0
    scores = [c["score"] for c in out["cases"]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(review.ReviewError, match="unknown checkpoint"):
        review.review_queue(ws, ModelCache(), ds, "upload:none.pt")
