"""The Gradio studio: one ``gr.Blocks`` with a tab per job (detect, assignments, data, fine-tune, compare).

Each tab module has ``build(ctx)``, which lays out its components and wires them to plain functions in
``app.services`` / ``app.jobs`` (tested without a browser). Every main action has a stable ``api_name``
(``/detect``, ``/assign``, ``/check_data``, ``/start_training``, ``/training_status``, ``/stop_training``,
``/compare``), documented in the README.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from app.studio import annotate, assign, compare, data, detect, finetune, review
from app.studio.context import StudioContext
from app.workspace import DEMO_CHECKPOINT, Workspace

log = logging.getLogger(__name__)

TITLE = "yolov7-studio"
MAX_FILE_SIZE = "512mb"  # uploads (images, checkpoints, dataset zips); zips are then limited by core.data.safezip
CSS = """
.ys-header {display: flex; align-items: baseline; gap: 1em;}
.ys-header h1 {margin: 0;}
.ys-muted {opacity: 0.75; font-size: 0.9em;}
"""

INTRO = f"""<div class="ys-header"><h1>{TITLE}</h1>
<span class="ys-muted">YOLOv7 from scratch: detect, see how labels are assigned (lead vs auxiliary head),
check data, fine-tune without code, compare models.</span></div>"""


def build_app(ctx: StudioContext) -> gr.Blocks:
    """The studio's Blocks for one workspace (not launched)."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.HTML(INTRO)
        with gr.Tabs():
            with gr.Tab("Detect", id="detect"):
                detect.build(ctx)
            with gr.Tab("Assignments", id="assign"):
                assign.build(ctx)
            with gr.Tab("Data", id="data"):
                data.build(ctx)
            with gr.Tab("Annotate", id="annotate"):
                annotate.build(ctx)
            with gr.Tab("Review", id="review"):
                review.build(ctx)
            with gr.Tab("Fine-tune", id="finetune"):
                finetune.build(ctx)
            with gr.Tab("Compare", id="compare"):
                compare.build(ctx)
        pickers = ctx.dataset_pickers + ctx.checkpoint_pickers
        if pickers:

            def refresh() -> list[Any]:
                ds, ck = ctx.dataset_choices(), ctx.checkpoint_choices()
                return [gr.update(choices=ds) for _ in ctx.dataset_pickers] + [
                    gr.update(choices=ck) for _ in ctx.checkpoint_pickers
                ]

            demo.load(refresh, None, pickers, api_visibility="private", queue=False)
            for dep in ctx.change_events:
                dep.then(refresh, None, pickers, api_visibility="private", queue=False)
    return demo


def make_context(workspace: str | Path, allowed_roots: list[str | Path] | None = None) -> StudioContext:
    """Workspace (with the demo dataset generated), model cache and job runner for one studio process."""
    ws = Workspace(workspace, allowed_roots=allowed_roots)
    ws.ensure_demo()
    if not DEMO_CHECKPOINT.is_file():
        log.warning("the demo checkpoint %s is missing: the tabs need an uploaded checkpoint or a run", DEMO_CHECKPOINT)
    ctx = StudioContext(workspace=ws)
    try:
        from app.jobs import JobRunner
    except ImportError:  # pragma: no cover - the job runner ships with the studio
        JobRunner = None  # noqa: N806
    if JobRunner is not None:
        ctx.jobs = JobRunner(ws)
    return ctx


def launch(
    workspace: str | Path = "runs/studio",
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    allowed_roots: list[str | Path] | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Build and serve the studio; binds 127.0.0.1 unless ``host`` says otherwise."""
    ctx = make_context(workspace, allowed_roots)
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(ctx.workspace.root)],
        prevent_thread_lock=not block,
        footer_links=["api", "settings"],
        css=CSS,
        theme=gr.themes.Soft(primary_hue="indigo"),
        quiet=True,
    )
    return demo
