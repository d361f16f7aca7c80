"""The studio workspace: ids, the demo, confinement, uploads through the safe loader, restarts."""

from __future__ import annotations

import pickle

import pytest

from app.workspace import DEMO_CHECKPOINT, DEMO_RUN, Workspace, WorkspaceError, safe_name


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("ws") / "root", allowed_roots=[tmp_path_factory.getbasetemp()])
    ws.ensure_demo()
    return ws


def test_demo_dataset_checkpoint_and_run_are_there_on_first_start(ws):
    assert ws.dataset("demo").path == ws.demo_dataset_dir / "data.yaml"
    assert ws.dataset(None).id == "demo" and ws.checkpoint(None).path == DEMO_CHECKPOINT
    assert (ws.runs_dir / "demo" / "results.csv").read_bytes() == (DEMO_RUN / "results.csv").read_bytes()
    assert sorted(p.name for p in (ws.runs_dir / "demo" / "objectness").glob("*.npz")) == sorted(
        p.name for p in (DEMO_RUN / "objectness").glob("*.npz")
    )
    # the shipped run has no weights, so it is no second "demo" checkpoint
    assert [e.id for e in ws.list_checkpoints()] == ["demo"]


def test_a_deleted_demo_run_is_not_brought_back(tmp_path):
    ws = Workspace(tmp_path / "w")
    ws.ensure_demo()
    import shutil

    shutil.rmtree(ws.runs_dir / "demo")
    Workspace(tmp_path / "w").ensure_demo()
    assert not (ws.runs_dir / "demo").exists()


def test_runs_and_uploads_are_listed_by_stable_ids_after_a_restart(ws, tmp_path):
    best = ws.runs_dir / "r1" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(DEMO_CHECKPOINT.read_bytes())
    entry = ws.add_checkpoint(DEMO_CHECKPOINT, name="my model.pt")
    assert entry.id == "upload:my_model.pt"
    again = Workspace(ws.root)  # a restart
    ids = [e.id for e in again.list_checkpoints()]
    assert ids[:2] == ["demo", "run:r1"] and "upload:my_model.pt" in ids
    assert again.checkpoint("run:r1").path == best
    second = again.add_checkpoint(DEMO_CHECKPOINT, name="my model.pt")
    assert second.id == "upload:my_model_2.pt"  # never overwrites


def test_a_hostile_upload_is_refused_named_and_not_kept(ws, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": Evil()}))
    before = sorted(ws.checkpoints_dir.iterdir())
    with pytest.raises(WorkspaceError, match="evil.pt"):
        ws.add_checkpoint(bad)
    assert not marker.exists()
    assert sorted(ws.checkpoints_dir.iterdir()) == before


def test_nothing_outside_the_workspace_or_the_allowed_roots(ws, tmp_path_factory):
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.inside("../../etc/passwd")
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.inside("/etc/passwd")
    assert ws.inside("datasets/demo") == ws.demo_dataset_dir.resolve()
    with pytest.raises(WorkspaceError, match="outside the folders"):
        ws.link_folder("/etc")
    with pytest.raises(WorkspaceError, match="invalid run name"):
        ws.run_dir("../escape")
    with pytest.raises(WorkspaceError, match="unknown dataset"):
        ws.dataset("upload:../../etc")
    linked = ws.link_folder(ws.demo_dataset_dir, name="shapes")
    assert linked.id == "folder:shapes" and ws.dataset("folder:shapes").path == ws.demo_dataset_dir.resolve()
    assert safe_name("../../a b/c?.zip") == "c_.zip" and safe_name("...") == "item"
