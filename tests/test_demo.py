"""The README's first command runs `yolov7-studio demo`: an end-to-end run on generated data."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    args = [
        "demo",
        "--out",
        str(out),
        "--data",
        str(tmp_path / "data"),
        "--epochs",
        "1",
        "--images",
        "24",
        "--img",
        "96",
        "--batch",
        "8",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    for step in (
        "1. the built-in demo dataset",
        "2. training",
        "3. evaluation",
        "4. re-parameterization",
        "5. detection",
        "6. how YOLOv7 assigned",
    ):
        assert step in text
    assert "check PASSED" in text
    assert (out / "train" / "weights" / "best.pt").is_file()
    assert (out / "predictions_test.json").is_file()
    assert len(list((out / "detections").glob("*.png"))) == 2  # the test split of 24 images has 2
    assert list((out / "assignment").glob("*_assignment.html"))
    # a second run reuses the finished training
    assert main(args) == 0
    assert "reusing the finished run" in capsys.readouterr().out
