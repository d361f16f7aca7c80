"""Data tab: upload a dataset zip (COCO / YOLO / VOC, Roboflow exports too) or link a folder, check it, look at it.

Layout and wiring only; the work is in :mod:`app.services.data`. Endpoints: ``/check_data`` (a dataset id, or an
uploaded zip that becomes a new dataset; the report, statistics figures and augmented preview out) and
``/link_data`` (a folder under an allowed root becomes a dataset). New datasets appear in every tab's pickers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from app.services import data as svc
from app.studio.context import StudioContext

INTRO = """### Data: bring a dataset in and check it
Upload a **zip** of a COCO, YOLO (also a Roboflow export with `../train/images` paths) or Pascal VOC dataset, or
name a dataset folder on this machine. The zip is checked entry by entry before anything is written (path
traversal, links, sizes, zip bombs). The check lists every problem with its file and what was done about it,
draws the statistics (classes, box sizes against each model's anchors, best possible recall) and shows augmented
training samples with the share of labels the augmentation loses."""

FIGURE_TABS = {
    "class_counts": "Classes",
    "box_sizes": "Box sizes vs anchors",
    "anchor_levels": "Best anchor level",
    "boxes_per_image": "Boxes per image",
    "image_sizes": "Image sizes",
}
REPORT_COLUMNS = ["file", "problem", "kind", "what was done", "count"]


def _fail(exc: Exception) -> gr.Error:
    if isinstance(exc, ValueError):
        return gr.Error(str(exc))
    return gr.Error(f"{type(exc).__name__}: {exc}")


def _frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns) if columns else pd.DataFrame(rows)


def build(ctx: StudioContext) -> None:
    ws = ctx.workspace
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            with gr.Tab("Check"):
                dataset = gr.Dropdown(ctx.dataset_choices(), value="demo", label="Dataset", allow_custom_value=True)
                check_btn = gr.Button("Check", variant="primary")
            with gr.Tab("Upload zip"):
                upload = gr.File(label="Dataset .zip", file_types=[".zip"], elem_id="data_zip")
                name = gr.Textbox(label="Name (optional; default: the zip's name)")
                upload_btn = gr.Button("Upload and check", variant="primary")
            with gr.Tab("Folder"):
                folder = gr.Textbox(label="Folder (or data.yaml / COCO .json) under an allowed root")
                gr.Markdown(f"Allowed roots: {', '.join(f'`{r}`' for r in ws.allowed_roots)}")
                folder_name = gr.Textbox(label="Name (optional)")
                link_btn = gr.Button("Link and check", variant="primary")
        with gr.Column(scale=3):
            summary = gr.Markdown("Upload a zip, link a folder, or check the demo dataset.", label="Summary")
            report = gr.DataFrame(
                headers=REPORT_COLUMNS,
                label="Check report (file as named in the zip or folder)",
                interactive=False,
                wrap=True,
                max_height=360,
            )
            anchors = gr.DataFrame(
                label="Anchor fit per model (best possible recall, official autoanchor metric)", interactive=False
            )
            plots = {}
            with gr.Tabs():
                for key, title in FIGURE_TABS.items():
                    with gr.Tab(title):
                        plots[key] = gr.Plot(show_label=False, label=key)
            preview = gr.Image(
                label="Augmented training samples (mosaic, MixUp, perspective, HSV, flips)",
                type="filepath",
                interactive=False,
                height=520,
            )

    outputs = [dataset, summary, report, anchors, *plots.values(), preview]

    def render(result: svc.CheckResult) -> list[Any]:
        figs = [result.figures.get(key) for key in plots]
        return [
            result.dataset_id,
            result.summary,
            _frame(result.rows, REPORT_COLUMNS),
            _frame(result.anchors),
            *figs,
            str(result.preview) if result.preview else None,
        ]

    def check_data(
        dataset: str | None = "demo",
        upload: str | None = None,
        name: str | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> list[Any]:
        def report_progress(fraction: float, message: str = "") -> None:
            progress(float(fraction), desc=message or "checking")

        try:
            if upload:
                shown = (name or "").strip() or None
                result = svc.import_and_check(ws, upload, name=shown or Path(upload).name, progress=report_progress)
            else:
                result = svc.check(ws, dataset or "demo", progress=report_progress)
        except Exception as exc:  # noqa: BLE001 - every failure is a message in the page
            raise _fail(exc) from None
        left_out = sum(1 for r in result.rows if r["what was done"].startswith("left out"))
        if left_out:
            gr.Warning(f"{result.dataset_id}: {left_out} report row(s) with data left out; see the check report")
        return render(result)

    def link(folder: str, name: str | None = None, progress: gr.Progress = gr.Progress()) -> list[Any]:  # noqa: B008
        try:
            entry = svc.link_folder(ws, folder, (name or "").strip() or None)
        except Exception as exc:  # noqa: BLE001
            raise _fail(exc) from None
        return check_data(entry.id, None, None, progress)

    up = upload_btn.click(check_data, [dataset, upload, name], outputs, api_name="check_data", concurrency_limit=1)
    up.success(lambda: None, None, upload, api_visibility="private", queue=False)
    linked = link_btn.click(link, [folder, folder_name], outputs, api_name="link_data", concurrency_limit=1)
    check_btn.click(
        lambda ds, progress=gr.Progress(): check_data(ds, None, None, progress),  # noqa: B008
        dataset,
        outputs,
        api_visibility="private",
        concurrency_limit=1,
    )
    ctx.change_events += [up, linked]
    ctx.dataset_pickers.append(dataset)
