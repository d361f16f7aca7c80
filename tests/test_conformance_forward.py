"""`yolov7-studio conformance forward` on the official reference outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.cli import main


def test_forward_conformance_passes_on_shared_reference(conformance_dir: Path, capsys) -> None:
    code = main(["conformance", "forward", str(conformance_dir / "tiny_forward_kaiming.npz"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"]
    names = [c["name"] for c in report["checks"]]
    assert "decoded output" in names and any(n.startswith("NMS") for n in names)
    assert sum(n.startswith("NMS") for n in names) == 6  # 3 settings x (unfused, fused)
    decoded = next(c for c in report["checks"] if c["name"] == "decoded output")["details"]
    assert decoded["max_box_px"] <= 1e-2 and decoded["max_prob"] <= 1e-5


def test_forward_conformance_fails_on_a_perturbed_reference(conformance_dir: Path, tmp_path: Path) -> None:
    data = dict(np.load(conformance_dir / "tiny_forward_kaiming.npz"))
    data["output"] = data["output"].copy()
    data["output"][0, 100, 0] += 0.5  # half a pixel off in one box
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)
    proc = subprocess.run(
        [sys.executable, "-m", "core", "conformance", "forward", str(bad)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1
    assert "[FAIL] decoded output" in proc.stdout and "FAILED" in proc.stdout


def test_forward_conformance_reports_unusable_input(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "empty.npz"
    np.savez(bad, nothing=np.zeros(1))
    assert main(["conformance", "forward", str(bad)]) == 2
    assert "empty.npz" in capsys.readouterr().out


def test_models_command_json(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["yolov7"]["params_deploy"] == 36_905_341
    assert rows["yolov7-e6e"]["params_deploy"] == 151_687_420
    assert rows["yolov7-w6"]["strides"] == [8, 16, 32, 64]
    assert rows["yolov7"]["head_train"] == "IDetect" and rows["yolov7-e6"]["head_train"] == "IAuxDetect"
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "yolov7-tiny" in text and "36,905,341" in text
