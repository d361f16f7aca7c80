"""Compare tab: checkpoints x forms on one dataset split -> per-class AP chart, tables, side-by-side predictions.

``/compare`` (inputs in this order, all with defaults): checkpoint ids (``["demo"]``), forms
(``["training", "deploy"]``), dataset id (``demo``), split (``test``), image (optional; default: an image of the
split), image index (0), latency runs (5). Outputs: summary line, plotly figure (per-class AP50-95 and AP50 per
model), summary table, per-class table, side-by-side predictions (gallery), the JSON document.
The work is done by :mod:`app.services.compare`.

``/open_study`` (input: a study id from the list, e.g. ``studies/abl``, or a study folder's path): summary markdown,
the paper-style table, plotly figure (AP/AP50 per condition with the spread over seeds and the paper's values; for
a scaling study parameters and GFLOPs), the objectness figure (none for a scaling study), the JSON document
(study.json with "id", "folder" and the live run states), and the status of every run.
Done by :mod:`app.services.study_view`.

``/open_in_fiftyone`` (checkpoint ids, dataset id, split): starts (or reuses) ``yolov7-studio fiftyone --launch``
for them and answers the App's URL; ``/stop_fiftyone`` ends it. Done by :mod:`app.services.fiftyone_launch`;
without the ``fiftyone`` extra the button is hidden and the endpoint answers how to install it.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from app.services import compare as svc
from app.services import fiftyone_launch as fol
from app.services import study_view as sv
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
            per_class = gr.Dataframe(headers=["class"], label="per-class AP", interactive=False)
            with gr.Accordion("JSON", open=False):
                record = gr.JSON(label="comparison")
    fiftyone_section(ctx, checkpoints_in, dataset_in, split_in)
    studies_section(ctx)

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


def fiftyone_section(ctx: StudioContext, checkpoints_in: Any, dataset_in: Any, split_in: Any) -> None:
    """ "Open in FiftyOne" for the picked dataset, split and checkpoints (hidden without the extra)."""
    ws = ctx.workspace
    installed = fol.available()
    with gr.Row(equal_height=True):
        open_fo = gr.Button("Open in FiftyOne", variant="secondary", visible=installed, scale=0, min_width=180)
        stop_fo = gr.Button("Stop FiftyOne", variant="stop", visible=installed, scale=0, min_width=170)
        fo_status = gr.HTML(
            "Browse this dataset split with every picked checkpoint's predictions, their evaluation and likely "
            "label errors in the FiftyOne App (first opening: a minute or more)."
            if installed
            else fol.INSTALL_HINT.replace("`", "<code>", 1).replace("`", "</code>", 1).replace("**", ""),
            elem_classes="ys-muted",
        )

    def on_open(
        checkpoints: list[str] | str | None = None,
        dataset: str | None = "demo",
        split: str | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ) -> str:
        if not fol.available():
            raise gr.Error(fol.INSTALL_HINT.replace("`", "").replace("**", ""))
        try:
            result = fol.open_from_workspace(
                ws, dataset or "demo", checkpoints or ["demo"], split or None,
                progress=lambda f, msg: progress(f, desc=msg),
            )  # fmt: skip
        except fol.LaunchError as exc:
            raise gr.Error(str(exc).replace("\n", "<br>"), duration=None) from None
        return fol.describe(result)

    def on_stop(dataset: str | None = "demo") -> str:
        try:
            name = fol.dataset_name(ws.dataset(dataset).id)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        stopped = fol.stop_app(ws, name)
        return f"FiftyOne App for <code>{name}</code> stopped." if stopped else f"No FiftyOne App running for {name}."

    open_fo.click(
        on_open,
        [checkpoints_in, dataset_in, split_in],
        fo_status,
        api_name="open_in_fiftyone",
        concurrency_limit=1,
        concurrency_id="fiftyone",
    )
    stop_fo.click(on_stop, dataset_in, fo_status, api_name="stop_fiftyone", concurrency_id="fiftyone")


def studies_section(ctx: StudioContext) -> None:
    """Study folders (``yolov7-studio study ...``): table, chart with error bars, objectness figure, run states."""
    ws = ctx.workspace
    choices = sv.study_choices(ws)
    with gr.Accordion("Studies (assignment strategies, model scaling)", open=True):
        with gr.Row(equal_height=True):
            study_in = gr.Dropdown(
                choices=choices,
                value=choices[0][1] if choices else None,
                allow_custom_value=True,
                label="study",
                info="found in the workspace's studies/ and runs/ folders",
                scale=2,
            )
            path_in = gr.Textbox(
                label="or a study folder",
                placeholder="path of a folder holding study.json (yolov7-studio study ... --out DIR)",
                scale=2,
            )
            open_btn = gr.Button("Open study", variant="primary", scale=0, min_width=130)
            refresh_btn = gr.Button("Refresh", scale=0, min_width=100)
        study_summary = gr.Markdown()
        study_plot = gr.Plot(label="AP per condition (scaling: parameters and GFLOPs)")
        with gr.Row():
            with gr.Column(scale=3, min_width=420):
                study_table = gr.Dataframe(label="paper-style table (mean ± spread over seeds, %)", interactive=False)
                runs_table = gr.Dataframe(headers=sv.RUN_HEADERS, label="runs of the study", interactive=False)
            with gr.Column(scale=2, min_width=300):
                study_image = gr.Image(label="objectness (lead / aux)", type="pil", height=760)
        with gr.Accordion("study.json", open=False):
            study_json = gr.JSON(label="study")

    def on_open_study(study: str | None = None, path: str | None = None) -> tuple[Any, ...]:
        ident = (path or "").strip() or (study or "").strip()
        try:
            view = sv.open_study(ws, ident)
        except sv.StudyError as exc:
            gr.Warning(str(exc))
            return (gr.update(),) * 6
        except Exception as exc:  # never a bare traceback in the page
            log.exception("opening study %s failed", ident)
            raise gr.Error(f"study {ident}: {type(exc).__name__}: {exc}") from None
        text = view.summary + "".join(f"\n\n- {note}" for note in view.notes)
        picture = None
        if view.image is not None:  # as pixels: a study folder may lie outside the folders Gradio serves files from
            try:
                with Image.open(view.image) as im:
                    picture = im.convert("RGB")
            except (OSError, ValueError) as exc:
                text += f"\n\n- {view.image}: not a readable image ({exc})"
        runs = pd.DataFrame(view.run_rows, columns=sv.RUN_HEADERS)
        return text, pd.DataFrame(view.rows, columns=view.headers), view.figure, picture, view.record, runs

    def on_refresh_list(current: str | None) -> Any:
        found = sv.study_choices(ws)
        return gr.update(choices=found, value=current or (found[0][1] if found else None))

    outputs = [study_summary, study_table, study_plot, study_image, study_json, runs_table]

    def on_kind(record: dict[str, Any] | None) -> tuple[Any, ...]:
        """An assignment study shows its runs and objectness figure; a scaling study has neither."""
        assignment = (record or {}).get("kind") != "scaling"
        label = "paper-style table (mean ± spread over seeds, %)" if assignment else "scaled variants"
        return gr.update(label=label), gr.update(visible=assignment), gr.update(visible=assignment)

    open_btn.click(
        on_open_study, [study_in, path_in], outputs, api_name="open_study", concurrency_id="study", queue=True
    ).then(on_kind, study_json, [study_table, study_image, runs_table], api_visibility="private", queue=False)
    study_in.focus(on_refresh_list, study_in, study_in, api_visibility="private", queue=False)
    refresh_btn.click(on_refresh_list, study_in, study_in, api_visibility="private", queue=False).then(
        on_open_study, [study_in, path_in], outputs, api_visibility="private", concurrency_id="study"
    ).then(on_kind, study_json, [study_table, study_image, runs_table], api_visibility="private", queue=False)
