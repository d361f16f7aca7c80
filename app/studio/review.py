"""Review tab: the labels most likely to be wrong, ranked, with one click to fix each in the Annotate tab.

Layout and wiring only; the work is in :mod:`app.services.review`. Endpoint: ``/review_queue`` (dataset id,
checkpoint id, split, confidence, max images, lead assignment on/off -> the ranked cases table, the worst images
and a summary).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from app.services import review as svc
from app.studio.context import StudioContext

log = logging.getLogger(__name__)

INTRO = """### Review: find the labels most likely to be wrong
A checkpoint's predictions are compared with the labels and YOLOv7's lead-guided assignment is run on them. Each
suspicious label is scored: **duplicate** boxes, boxes with **no positive** in the assignment (they cannot be
learned), **class** disagreements, confident predictions with no label (**missing**), boxes the model places
elsewhere (**mislocated**), boxes with no prediction near them (**unmatched**, weighted by how much the model finds
at all). The model-based kinds need a trained checkpoint. Select a row, then **Open in annotator**."""

COLUMNS = ["rank", "score", "kind", "image", "label", "model says", "message"]
CASE_COLOURS = {"label": (230, 25, 75), "model": (0, 130, 200)}


def _tabs() -> Any:
    """The studio's ``gr.Tabs`` this tab sits in (to switch to the annotator), or ``None``."""
    block = gr.context.get_render_context()
    while block is not None and not isinstance(block, gr.Tabs):
        block = block.parent
    return block


def case_image(case: dict[str, Any]) -> Image.Image:
    """The image of a case with the label (red) and the model's box (blue) drawn, cropped around them."""
    im = Image.open(case["image"]).convert("RGB")
    draw = ImageDraw.Draw(im)
    boxes = [b for b in (case.get("box"), case.get("pred_box")) if b]
    for b, which in (
        (case.get("box") if case.get("gt") is not None else None, "label"),
        (case.get("pred_box"), "model"),
    ):
        if b:
            draw.rectangle([float(v) for v in b], outline=CASE_COLOURS[which], width=2)
    if boxes:
        arr = np.array(boxes, dtype=float)
        x1, y1 = arr[:, :2].min(0)
        x2, y2 = arr[:, 2:].max(0)
        pad = max(x2 - x1, y2 - y1, 32)
        im = im.crop((max(0, x1 - pad), max(0, y1 - pad), min(im.width, x2 + pad), min(im.height, y2 + pad)))
    return im


def case_rows(cases: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for i, c in enumerate(cases, start=1):
        said = f"{c['pred_label']} ({c['pred_score']:.2f})" if c.get("pred_label") is not None else ""
        rows.append([i, c["score"], c["kind"], c["key"], c.get("label") or "", said, c["message"]])
    return rows


def build(ctx: StudioContext) -> None:
    ws, cache = ctx.workspace, ctx.cache
    tabs = _tabs()
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            dataset = gr.Dropdown(ctx.dataset_choices(), value="demo", label="Dataset", allow_custom_value=True)
            ctx.dataset_pickers.append(dataset)
            checkpoint = gr.Dropdown(
                ctx.checkpoint_choices(), value="demo", label="checkpoint", allow_custom_value=True
            )
            ctx.checkpoint_pickers.append(checkpoint)
            split = gr.Dropdown(["all", "train", "val", "test"], value="val", label="split", allow_custom_value=True)
            conf = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="confident prediction above")
            max_images = gr.Slider(1, 500, value=30, step=1, label="max images")
            assignment = gr.Checkbox(True, label="run the lead-guided assignment (slower; finds unlearnable boxes)")
            run_btn = gr.Button("Build the queue", variant="primary", elem_id="review_run")
            summary = gr.JSON(label="summary")
        with gr.Column(scale=3, min_width=400):
            table = gr.Dataframe(
                headers=COLUMNS, label="cases, most suspicious first (select a row)", interactive=False,
                max_height=360, elem_id="review_table",
            )  # fmt: skip
            with gr.Row():
                selected = gr.Textbox(label="selected image", interactive=False, scale=3)
                open_btn = gr.Button("Open in annotator", variant="primary", scale=1, elem_id="review_open")
            gallery = gr.Gallery(
                label="top cases (red: label, blue: model)", columns=6, height=300, interactive=False,
                preview=False, object_fit="contain", elem_id="review_gallery",
            )  # fmt: skip
            cases_state = gr.State([])

    def run(
        dataset_id: str, checkpoint_id: str, split: str, conf: float, max_images: float, assignment: bool,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Any:  # fmt: skip
        import pandas as pd

        try:
            out = svc.review_queue(
                ws, cache, dataset_id, checkpoint_id, split=split or "all", conf=float(conf),
                max_images=int(max_images), assignment=bool(assignment),
                progress=lambda f, m: progress(f, desc=m),
            )  # fmt: skip
        except svc.ReviewError as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:
            log.exception("review failed")
            raise gr.Error(f"review failed: {type(exc).__name__}: {exc}") from None
        cases = out["cases"]
        if not cases:
            gr.Info("no suspicious labels found in these images")
        pictures = []
        for i, case in enumerate(cases[:24], start=1):
            try:
                pictures.append((case_image(case), f"{i}. {case['kind']} {case['score']:.2f} {case['key']}"))
            except OSError:
                continue
        frame = pd.DataFrame(case_rows(cases), columns=COLUMNS)
        first = cases[0]["key"] if cases else ""
        return frame, pictures, out["summary"], cases, first

    run_btn.click(
        run, [dataset, checkpoint, split, conf, max_images, assignment],
        [table, gallery, summary, cases_state, selected],
        api_name="review_queue", concurrency_limit=1, concurrency_id="inference",
    )  # fmt: skip

    def pick_row(cases: list[dict[str, Any]], evt: gr.SelectData) -> str:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return cases[row]["key"] if isinstance(row, int) and 0 <= row < len(cases) else ""

    def pick_picture(cases: list[dict[str, Any]], evt: gr.SelectData) -> str:
        caption = str((evt.value or {}).get("caption") or "") if isinstance(evt.value, dict) else ""
        rank = caption.split(".", 1)[0]  # captions start with the case's rank (unreadable images are skipped)
        if rank.isdigit() and 0 < int(rank) <= len(cases):
            return cases[int(rank) - 1]["key"]
        return pick_row(cases, evt)

    table.select(pick_row, cases_state, selected, api_visibility="private")
    gallery.select(pick_picture, cases_state, selected, api_visibility="private")

    target = getattr(ctx, "annotate", None)
    if target is not None:
        outputs = [target.dataset, target.state_filter, target.key] + ([tabs] if tabs is not None else [])

        def open_in_annotator(ds: str, key: str) -> tuple[Any, ...]:
            if not key:
                raise gr.Error("build the queue and select a case first")
            out = target.open_image(ds, key)
            return (*out, gr.Tabs(selected="annotate")) if tabs is not None else out

        open_btn.click(open_in_annotator, [dataset, selected], outputs, api_visibility="private")
    else:  # pragma: no cover - the Annotate tab is built before this one
        open_btn.visible = False
