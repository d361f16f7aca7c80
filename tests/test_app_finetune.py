"""The Fine-tune tab: its form helpers, and /start_training, /training_status, /stop_training through gradio_client
against a launched studio (a real training process: full-width yolov7-tiny at 64 px on a 12-image dataset)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from app.jobs import JobRunner
from app.services import training as T
from app.workspace import Workspace
from core.data.demo import make_demo_dataset


def test_form_values_become_a_request() -> None:
    req = T.request_from_form("upload:x", "run:a", False, "yolov7", True, 5.0, 320.0, 8.0, "official", "  my-run ")
    assert req == {
        "dataset": "upload:x", "checkpoint": "run:a", "variant": "yolov7", "aux": True, "epochs": 5, "img": 320,
        "batch": 8, "recipe": "official", "name": "my-run",
    }  # fmt: skip
    assert T.request_from_form("demo", "run:a", True, "yolov7-tiny", False, 1, 64, 4, "", "")["checkpoint"] is None
    scratch = T.request_from_form(None, "scratch", False, None, False, 1, 64, 4, None, None)
    assert scratch["checkpoint"] is None and scratch["dataset"] == "demo" and scratch["recipe"] == "small-data"
    assert scratch["name"] is None
    with pytest.raises(ValueError, match="epochs must be a whole number"):
        T.request_from_form("demo", "demo", False, "yolov7-tiny", True, 2.5, 320, 8, "official", "")
    with pytest.raises(ValueError, match="batch must be a number"):
        T.request_from_form("demo", "demo", False, "yolov7-tiny", True, 2, 320, "many", "official", "")


def test_queue_markdown_lists_positions() -> None:
    md = T.queue_markdown(
        [
            {"name": "b", "state": "queued", "queue_position": 2},
            {"name": "r", "state": "running", "queue_position": None},
            {"name": "a", "state": "queued", "queue_position": 1},
            {"name": "old", "state": "finished", "queue_position": None},
        ]
    )
    assert "**training now:** r" in md and "**queue:** 1. a, 2. b" in md
    assert T.queue_markdown([]) == "**training now:** nothing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_training_endpoints_through_gradio_client(tmp_path: Path) -> None:
    from gradio_client import Client

    from app.studio.app import launch

    root = tmp_path / "ws"
    make_demo_dataset(Workspace(root).datasets_dir / "tiny", n_images=12, img_size=96)
    demo = launch(root, port=_free_port(), block=False)
    cleanup = JobRunner(Workspace(root), poll_interval=None)
    try:
        client = Client(demo.local_url, verbose=False)
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert {"/start_training", "/training_status", "/stop_training"} <= set(api)
        form = {
            "dataset": "upload:tiny", "checkpoint": "scratch", "from_scratch": False, "variant": "yolov7-tiny",
            "aux": True, "epochs": 30, "img": 64, "batch": 4, "recipe": "small-data",
        }  # fmt: skip
        first = client.predict(**form, name="api-first", api_name="/start_training")
        assert first["name"] == "api-first" and first["state"] in ("starting", "running")
        second = client.predict(**form, name="api-second", api_name="/start_training")
        assert second["state"] == "queued" and second["queue_position"] == 1
        with pytest.raises(Exception, match="exists already"):
            client.predict(**form, name="api-first", api_name="/start_training")
        assert client.predict("api-second", api_name="/training_status")["queue_position"] == 1
        assert client.predict("api-second", api_name="/stop_training")["state"] == "cancelled"
        with pytest.raises(Exception, match="no run or queued request"):
            client.predict("api-second", api_name="/training_status")

        t0 = time.time()
        while (st := client.predict("api-first", api_name="/training_status"))["state"] != "running":
            assert st["state"] == "starting", st["log_tail"]
            assert time.time() - t0 < 300, "the training did not start"
            time.sleep(1)
        assert client.predict("api-first", api_name="/stop_training")["state"] == "running"
        while (st := client.predict("api-first", api_name="/training_status"))["state"] == "running":
            assert time.time() - t0 < 420, "the training did not stop"
            time.sleep(1)
        assert st["state"] == "stopped" and st["files"]["last"].endswith("weights/last.pt")
        assert st["epoch"] < 30 and "stop requested" in st["message"]
    finally:
        for job in cleanup.list_jobs():
            if job["state"] in ("starting", "running"):
                cleanup.kill(job["name"])
        demo.close()
