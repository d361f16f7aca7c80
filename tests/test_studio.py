"""The studio as a process: binds 127.0.0.1, prints its URL, serves every documented endpoint, keeps its workspace."""

from __future__ import annotations

import pytest
from gradio_client import Client

from app.workspace import DEMO_CHECKPOINT, Workspace
from tests.studio_server import ENDPOINTS, listening_addresses, studio_process


@pytest.mark.slow
def test_studio_binds_localhost_serves_every_endpoint_and_lists_the_workspace_after_a_restart(tmp_path):
    ws_root = tmp_path / "ws"
    with studio_process(ws_root) as (url, _proc):
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        assert url.startswith("http://127.0.0.1:")
        assert listening_addresses(port) == {"127.0.0.1"}  # this machine only, unless --host says otherwise
        api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        names = set(api["named_endpoints"])
        assert set(ENDPOINTS) <= names, f"missing endpoints: {set(ENDPOINTS) - names}"
        # /detect: the image is the first parameter and every other parameter has a default
        params = api["named_endpoints"]["/detect"]["parameters"]
        assert params[0]["component"] in ("Image", "Namedimage")  # an image input (gr.Image that names bad files)
        assert all(p["parameter_has_default"] for p in params[1:])
    ws = Workspace(ws_root)
    assert (ws.demo_dataset_dir / "data.yaml").is_file()  # the built-in demo was generated into the workspace
    # something added while the studio was down is listed after a restart: a run with a best.pt
    best = ws.runs_dir / "earlier_run" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(DEMO_CHECKPOINT.read_bytes())
    with studio_process(ws_root) as (url, _proc):
        client = Client(url, verbose=False)
        api = client.view_api(return_format="dict", print_info=False)
        detect_params = api["named_endpoints"]["/detect"]["parameters"]
        model_param = next(
            p for p in detect_params if "checkpoint" in p["parameter_name"] or "model" in p["parameter_name"]
        )
        assert model_param["parameter_default"] in ("demo", None) or "demo" in str(model_param["parameter_default"])
    assert [e.id for e in ws.list_checkpoints()][:2] == ["demo", "run:earlier_run"]


def test_studio_refuses_a_malformed_auth_option(capsys):
    from app.cli import main

    with pytest.raises(SystemExit):
        main(["studio", "--auth", "no-colon"])
    assert "USER:PASS" in capsys.readouterr().err
