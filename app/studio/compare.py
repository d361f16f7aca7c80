"""Compare tab: checkpoints x forms on one dataset split -> per-class AP chart, tables, side-by-side predictions.

``/compare`` (inputs in this order, all with defaults): checkpoint ids (``["demo"]``), forms
(``["training", "deploy"]``), dataset id (``demo``), split (``test``), image (optional; default: an image of the
split), image index (0), latency runs (5). Outputs: summary line, plotly figure (per-class AP50-95 and AP50 per
model), summary table, per-class table, side-by-side predictions (gallery), the JSON document.
The work is done by :mod:`app.services.compare`.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import pandas as pd

from app.services import compare as svc
from app.studio.context import StudioContext
from app.studio.detect import NamedImage

log = logging.getLogger(__name__)


def build(ctx: StudioContext) -> None:
    ws, cache = ctx.workspace, ctx.cache
    try:
        splits = svc.split_choices(ws, cache, "demo")
    except svc.CompareError:
        splits = ["test"]
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            checkpoints_in = gr.Dropdown(
                choices=ctx.checkpoint_choices(),
                value=["demo"],
                multiselect=True,
                allow_custom_value=True,
                label="checkpoints",
                info="two or more, or one in both forms",
            )
            ctx.checkpoint_pickers.append(checkpoints_in)
            forms_in = gr.CheckboxGroup(
                choices=[(label, key) for key, label in svc.COMPARE_FORMS.items()],
                value=["training", "deploy"],
                label="forms (each checkpoint is compared in every form ticked)",
            )
            with gr.Row():
                dataset_in = gr.Dropdown(
                    choices=ctx.dataset_choices(), value="demo", label="dataset", allow_custom_value=True
                )
                ctx.dataset_pickers.append(dataset_in)
                split_in = gr.Dropdown(choices=splits, value=splits[0] if splits else "test", label="split")
            with gr.Accordion("image for latency and side-by-side predictions", open=False):
                image_in = NamedImage(type="filepath", label="image (empty: an image of the split)", height=200)
                with gr.Row():
                    index_in = gr.Number(value=0, precision=0, minimum=0, label="image index in the split")
                    runs_in = gr.Slider(1, 20, value=svc.DEFAULT_LATENCY_RUNS, step=1, label="latency runs (median)")
            run = gr.Button("Compare", variant="primary")
            gr.Markdown(
                "mAP from pycocotools (conf 0.001, IoU 0.65, multi-label: the official test.py settings). "
                "Results are cached per checkpoint file, form, dataset and split.",
                elem_classes="ys-muted",
            )
        with gr.Column(scale=3, min_width=360):
            summary = gr.Markdown()
            plot = gr.Plot(label="per-class AP")
            table = gr.Dataframe(headers=svc.SUMMARY_HEADERS, label="models", interactive=False)
            gallery = gr.Gallery(label="predictions on the same image", columns=2, interactive=False, height=420)
            per_class = gr.Dataframe(label="per-class AP", interactive=False)
            with gr.Accordion("JSON", open=False):
                record = gr.JSON(label="comparison")

    def on_dataset(ident: str | None) -> Any:
        try:
            names = svc.split_choices(ws, cache, ident)
        except svc.CompareError as exc:
            gr.Warning(str(exc))
            return gr.update()
        return gr.update(choices=names, value=names[0] if names else None)

    dataset_in.change(on_dataset, dataset_in, split_in, api_visibility="private", concurrency_id="compare")

    def on_compare(
        checkpoints: list[str] | str | None = None,
        forms: list[str] | None = None,
        dataset: str | None = "demo",
        split: str | None = None,
        image: str | None = None,
        image_index: float | None = 0,
        runs: float = svc.DEFAULT_LATENCY_RUNS,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way of asking for a progress bar
    ) -> tuple[Any, ...]:
        try:
            out = svc.compare(
                ws,
                cache,
                checkpoints or ["demo"],
                forms=forms or ["training", "deploy"],
                dataset=dataset or "demo",
                split=split,
                image=image or None,
                image_index=int(image_index or 0),
                runs=int(runs or svc.DEFAULT_LATENCY_RUNS),
                progress=lambda f, msg: progress(f, desc=msg),
            )
        except (svc.CompareError, svc.det_svc.DetectError) as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:  # never a bare traceback in the page
            log.exception("compare failed")
            raise gr.Error(f"comparison failed: {type(exc).__name__}: {exc}") from None
        text = out.summary + "".join(f"\n\n- {note}" for note in out.notes)
        return (
            text,
            out.figure,
            pd.DataFrame(out.summary_rows, columns=svc.SUMMARY_HEADERS),
            out.images,
            pd.DataFrame(out.class_rows, columns=out.class_headers),
            out.record,
        )

    run.click(
        on_compare,
        inputs=[checkpoints_in, forms_in, dataset_in, split_in, image_in, index_in, runs_in],
        outputs=[summary, plot, table, gallery, per_class, record],
        api_name="compare",
        concurrency_limit=1,
        concurrency_id="compare",
    )
