"""The "Open in FiftyOne" launcher (app.services.fiftyone_launch) with a real ``yolov7-studio fiftyone --launch``
process, its real MongoDB and App (no mock).

The launched command gets a database folder of this test module only (``FIFTYONE_DATABASE_DIR`` under pytest's tmp,
passed in its environment), so it never shares state with a user's datasets or with another test session. This file
runs in the suite's FiftyOne pytest process (scripts/test.sh).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.services import fiftyone_launch as fol
from app.workspace import Workspace
from core.data import make_demo_dataset

REPO = Path(__file__).resolve().parents[1]
DEMO_CKPT = REPO / "assets" / "demo_yolov7-tiny_aux.pt"

pytestmark = pytest.mark.skipif(not fol.available(), reason="FiftyOne is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("fo_launch")
    (root / "ws").mkdir()
    (root / "ws" / ".demo_run_seeded").touch()
    ws = Workspace(root / "ws")
    data = make_demo_dataset(root / "demo", n_images=8, img_size=128)
    env = {
        "FIFTYONE_DATABASE_DIR": str(root / "db"),
        "FIFTYONE_DEFAULT_DATASET_DIR": str(root / "media"),
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
    }
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    return ws, Path(data), env


def _status(url: str) -> int | None:
    for _ in range(60):
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return int(r.status)
        except OSError:
            time.sleep(1)
    return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_open_reuse_and_stop(setup: tuple[Workspace, Path, dict[str, str]]) -> None:
    """Open on the demo data with the demo checkpoint: the URL answers HTTP 200; a second open reuses the process;
    stop ends it (the process is gone, the App no longer answers, nothing is tracked)."""
    ws, data, env = setup
    steps: list[tuple[float, str]] = []
    first = fol.open_app(
        ws, data, [DEMO_CKPT], name="launch-demo", split="val", env=env, progress=lambda f, m: steps.append((f, m))
    )
    try:
        url = first["url"]
        assert url.startswith(f"http://127.0.0.1:{first['port']}/datasets/launch-demo"), first
        assert first["reused"] is False and steps and steps[-1] == (1.0, f"FiftyOne App: {url}")
        assert _status(url) == 200
        log = Path(first["log"])
        assert log.parent == ws.tmp_dir / "fiftyone" and "--launch" in log.read_text().splitlines()[0]
        tracked = json.loads((ws.tmp_dir / "fiftyone" / "apps.json").read_text())["launch-demo"]
        assert tracked["pid"] == first["pid"] and tracked["url"] == url
        assert tracked["inputs"]["weights"] == [str(DEMO_CKPT.resolve())] and tracked["inputs"]["split"] == "val"

        second = fol.open_app(ws, data, [DEMO_CKPT], name="launch-demo", split="val", env=env)
        assert second["reused"] is True and second["pid"] == first["pid"] and second["url"] == url
        assert [a["alive"] for a in fol.status(ws, "launch-demo")] == [True]
    finally:
        stopped = fol.stop_app(ws, "launch-demo")
    assert stopped == ["launch-demo"]
    assert not Path(f"/proc/{first['pid']}").exists() or "Z" in Path(f"/proc/{first['pid']}/stat").read_text()
    deadline = time.monotonic() + 30
    while _answers(url) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _answers(url)
    assert fol.status(ws) == []


def test_failing_command_reports_the_log_tail(setup: tuple[Workspace, Path, dict[str, str]], tmp_path: Path) -> None:
    """A checkpoint that is not one: the command ends before the App opens; the message has its last log lines."""
    ws, data, env = setup
    bad = tmp_path / "holiday.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(fol.LaunchError) as err:
        fol.open_app(ws, data, [bad], name="launch-bad", split="val", env=env, timeout=300)
    text = str(err.value)
    assert "ended with exit code 2 before the App opened" in text
    assert "holiday.pt: cannot be loaded" in text and "Last lines of" in text
    assert "launch-bad" not in json.loads((ws.tmp_dir / "fiftyone" / "apps.json").read_text())


def test_studio_ids_and_bad_input(setup: tuple[Workspace, Path, dict[str, str]], tmp_path: Path) -> None:
    ws, _, _ = setup
    assert fol.dataset_name("demo") == "studio-demo" and fol.dataset_name("upload:my set") == "studio-upload-my_set"
    with pytest.raises(fol.LaunchError, match="no checkpoint"):
        fol.open_from_workspace(ws, "demo", [])
    with pytest.raises(fol.LaunchError, match="unknown dataset 'upload:nope'"):
        fol.open_from_workspace(ws, "upload:nope", ["demo"])
    cmd = fol.command(tmp_path / "d", [tmp_path / "a.pt", tmp_path / "b.pt"], "test", "studio-demo", 5151)
    assert cmd[cmd.index("fiftyone") :] == [
        "fiftyone", "--data", str(tmp_path / "d"), "--weights", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
        "--name", "studio-demo", "--split", "test", "--launch", "--port", "5151",
    ]  # fmt: skip
    assert Path(cmd[0]).name == "yolov7-studio" or cmd[:3] == [sys.executable, "-m", "app.cli"]
    assert "--split" not in fol.command(tmp_path, [tmp_path / "a.pt"], "all", "n", 1)
