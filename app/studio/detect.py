"""Detect tab: an image (upload or a demo example), a model and its settings -> annotated image, table, JSON.

``/detect`` (inputs in this order; all but the image have defaults): image, checkpoint id (``demo``), form
(``deploy``: the fastest backend here, ``auto``; ``training``, ``onnx``, and ``openvino`` where installed), conf
(0.25), IoU (0.45), max detections (300), classes (``[]`` = all), more images (``[]``).
Outputs: annotated image, annotated further images (gallery), detections table, summary line (latency, form,
the backend that ran), the JSON document (its ``backend``, e.g. ``onnxruntime (CPU, auto)``), the JSON file.
``/upload_checkpoint`` adds a ``.pt`` through the safe loader.
The work is done by :mod:`app.services.detect`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.services import detect as svc
from app.studio.context import StudioContext

log = logging.getLogger(__name__)

INFERENCE_CONCURRENCY = 2  # the machines have 2 cores; further requests wait in the queue


class NamedImage(gr.Image):
    """A ``gr.Image`` (same front end) that passes an upload it cannot decode on to the handler as a path.

    Gradio opens every uploaded image with PIL before the handler runs and answers a corrupt file with a generic
    error; passed on, the file reaches :func:`app.services.detect.detect`, whose message names it.
    """

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except Exception:
            path = getattr(payload, "path", None)
            if path:
                return str(path)
            raise


def build(ctx: StudioContext) -> None:
    ws, cache = ctx.workspace, ctx.cache
    try:
        demo_classes = svc.checkpoint_classes(ws, cache, "demo")
    except svc.DetectError:
        demo_classes = []
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            image_in = NamedImage(type="filepath", label="image", sources=["upload", "clipboard"], height=320)
            examples = svc.example_images(ws, n=6)
            if examples:
                gr.Examples(
                    examples=[[str(p)] for p in examples],
                    inputs=[image_in],
                    label="demo test images",
                    examples_per_page=6,
                    cache_examples=False,
                )
            checkpoint_in = gr.Dropdown(
                choices=ctx.checkpoint_choices(),
                value="demo",
                label="model",
                allow_custom_value=True,
                info="the demo checkpoint, every run's best.pt, uploaded .pt files",
            )
            ctx.checkpoint_pickers.append(checkpoint_in)
            with gr.Accordion("add a checkpoint (.pt: ours or an official YOLOv7 file)", open=False):
                upload = gr.File(label="checkpoint", file_types=[".pt", ".pth"], type="filepath")
                upload_msg = gr.Markdown()
            form_in = gr.Radio(
                choices=[(label, key) for key, label in svc.FORMS.items()],
                value="deploy",
                label="form",
                info="auto runs the deploy form on the fastest backend installed; the summary says which ran",
            )
            with gr.Row():
                conf_in = gr.Slider(0.0, 1.0, value=svc.DEFAULT_CONF, step=0.01, label="confidence threshold")
                iou_in = gr.Slider(0.0, 1.0, value=svc.DEFAULT_IOU, step=0.01, label="NMS IoU threshold")
            with gr.Row():
                max_det_in = gr.Slider(1, 1000, value=svc.DEFAULT_MAX_DET, step=1, label="max detections")
                classes_in = gr.Dropdown(
                    choices=demo_classes,
                    value=[],
                    multiselect=True,
                    allow_custom_value=True,
                    label="classes (empty: all)",
                )
            run = gr.Button("Detect", variant="primary")
            with gr.Accordion("more images (detected together with the image above)", open=False):
                more_in = gr.File(label="more images", file_count="multiple", file_types=["image"])
        with gr.Column(scale=3, min_width=360):
            annotated = gr.Image(type="pil", label="detections", format="png", interactive=False, height=480)
            summary = gr.Markdown()
            gallery = gr.Gallery(label="more images", columns=3, visible=False, interactive=False)
            table = gr.Dataframe(headers=svc.TABLE_HEADERS, label="detections", interactive=False, max_height=320)
            json_file = gr.File(label="detections (JSON)", interactive=False)
            with gr.Accordion("JSON", open=False):
                json_view = gr.JSON(label="detections")

    def on_detect(
        image: str | None,
        checkpoint: str | None = "demo",
        form: str | None = "deploy",
        conf: float = svc.DEFAULT_CONF,
        iou: float = svc.DEFAULT_IOU,
        max_det: float = svc.DEFAULT_MAX_DET,
        classes: list[str] | None = None,
        more_images: list[str] | None = None,
    ) -> tuple[Any, ...]:
        sources: list[Any] = [p for p in [image, *(more_images or [])] if p]
        try:
            out = svc.detect(
                ws,
                cache,
                sources,
                checkpoint=checkpoint or "demo",
                form=form or "deploy",
                conf=conf,
                iou=iou,
                max_det=int(max_det),
                classes=classes or None,
            )
        except svc.DetectError as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:  # never a bare traceback in the page
            log.exception("detect failed")
            raise gr.Error(f"detection failed: {type(exc).__name__}: {exc}") from None
        rest = [(im, name) for im, name in zip(out.annotated[1:], out.names[1:])]
        return (
            out.annotated[0],
            gr.update(value=rest or None, visible=bool(rest)),
            pd.DataFrame(out.rows, columns=svc.TABLE_HEADERS),
            out.summary,
            out.record,
            str(out.json_path) if out.json_path else None,
        )

    run.click(
        on_detect,
        inputs=[image_in, checkpoint_in, form_in, conf_in, iou_in, max_det_in, classes_in, more_in],
        outputs=[annotated, gallery, table, summary, json_view, json_file],
        api_name="detect",
        concurrency_limit=INFERENCE_CONCURRENCY,
        concurrency_id="inference",
    )

    def on_checkpoint(ckpt: str | None) -> Any:
        try:
            names = svc.checkpoint_classes(ws, cache, ckpt)
        except svc.DetectError as exc:
            gr.Warning(str(exc))
            return gr.update()
        return gr.update(choices=names, value=[])

    checkpoint_in.change(on_checkpoint, checkpoint_in, classes_in, api_visibility="private", concurrency_id="inference")

    def on_upload(path: str | None) -> tuple[Any, str, Any]:
        if not path:
            return gr.update(), "", None
        name = Path(path).name
        try:
            entry = svc.add_checkpoint(ws, path, name=name)
        except svc.DetectError as exc:
            gr.Warning(str(exc))
            return gr.update(), f"**refused**: {exc}", None
        return (
            gr.update(choices=ctx.checkpoint_choices(), value=entry.id),
            f"added **{entry.id}**: {entry.label}",
            None,
        )

    dep = upload.upload(
        on_upload, upload, [checkpoint_in, upload_msg, upload], api_name="upload_checkpoint", concurrency_limit=1
    )
    ctx.change_events.append(dep)
