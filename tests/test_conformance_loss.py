"""``core.conformance.loss.main`` on the official reference files: passes, reports, and catches mismatches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.conformance.loss import load_cases, main, run_case


@pytest.mark.shared
@pytest.mark.parametrize("name", ["loss_ota.npz", "loss_aux_ota.npz"])
def test_shared_reference_files_pass(conformance_dir, name, capsys):
    assert main(str(conformance_dir / name), as_json=False) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out
    assert main(str(conformance_dir / name), as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and [c["case"] for c in report["cases"]] == ["caseA"]
    names = {c["name"] for c in report["cases"][0]["checks"]}
    assert {"loss", "loss_items.lbox", "grad_p0", "lead.positives.level0", "lead.image0"} <= names
    if name == "loss_aux_ota.npz":
        assert {"aux.positives.level3", "aux.image3", "grad_p7"} <= names


@pytest.mark.shared
def test_aux_file_numbers(conformance_dir):
    report = run_case("caseA", load_cases(conformance_dir / "loss_aux_ota.npz")["caseA"])
    details = {c.name: c.detail for c in report.checks}
    assert report.passed
    assert details["lead.positives.level0"].startswith("23 ours / 23 official, 0 missing, 0 extra")
    assert details["aux.positives.level0"].startswith("40 ours / 40 official")


def _corrupt(src, dst, key, change):
    with np.load(src) as data:
        arrays = {k: data[k].copy() for k in data.files}
    arrays[key] = change(arrays[key])
    np.savez(dst, **arrays)


@pytest.mark.shared
@pytest.mark.parametrize(
    "key,change,failing",
    [
        ("caseA/loss", lambda a: a * 1.001, "loss"),
        ("caseA/lead/level1/gt", lambda a: np.roll(a, 1), "lead.positives.level1"),
        ("caseA/grad_p2", lambda a: a + 1e-3, "grad_p2"),
        ("caseA/lead/image2/dynamic_k", lambda a: a + 1, "lead.image2"),
    ],
    ids=["loss", "positives", "gradient", "dynamic_k"],
)
def test_mismatches_fail(conformance_dir, tmp_path, capsys, key, change, failing):
    bad = tmp_path / "bad.npz"
    _corrupt(conformance_dir / "loss_ota.npz", bad, key, change)
    assert main(str(bad), as_json=True) == 1
    report = json.loads(capsys.readouterr().out)
    failed = {c["name"] for c in report["cases"][0]["checks"] if not c["passed"]}
    assert failing in failed


def test_unreadable_file(tmp_path, capsys):
    assert main(str(tmp_path / "missing.npz")) == 2
    assert "cannot read" in capsys.readouterr().out
