"""Annotate tab: draw and fix boxes, pre-label with a checkpoint, save back in the dataset's own format, fine-tune.

Layout and wiring only; the work is in :mod:`app.services.annotations`. The box editor is the
``gradio_image_annotation`` component (works with Gradio 6). Endpoints: ``/annotation_load`` (dataset id + image
key -> the image's label record: boxes, pending model boxes, classes, version token), ``/annotation_save`` (boxes
as ``[{xmin, ymin, xmax, ymax, label}]`` + the token; a stale token is refused), ``/prelabel`` (one image, a
checkpoint, a confidence threshold), plus ``/annotation_undo``, ``/annotation_dataset`` (unlabelled images -> a
dataset), ``/add_class``, ``/rename_class``, ``/prelabel_rest`` and ``/finetune_labelled``.

Other tabs open an image here through ``ctx.annotate`` (see :func:`build`).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app.services import annotations as svc
from app.studio.context import StudioContext

log = logging.getLogger(__name__)

try:  # the box editor (a Gradio custom component, in the ``studio`` extra)
    from gradio_image_annotation import image_annotator
except ImportError:  # pragma: no cover - installed with the studio extra
    image_annotator = None

INTRO = """### Annotate: label with a model's help, fix labels, save them back safely
Pick an image (or upload unlabelled images to start a dataset), draw/move/resize boxes and pick their class,
**Save**. Saves go back into the dataset **in its own format** (YOLO / VOC / COCO), atomically, every version is
kept (**Undo** goes back one), and a save over labels another tab changed meanwhile is refused. **Pre-label** fills
in a checkpoint's boxes (grey) — they stay apart from the labels until you save; delete the wrong ones first."""

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]  # fmt: skip
STATE_FILTERS = ["all", *svc.STATES]
RUN_COLUMNS = ["run", "state", "images", "boxes changed"]


def _fail(exc: Exception) -> gr.Error:
    if isinstance(exc, ValueError):
        return gr.Error(str(exc))
    log.exception("annotate failed")
    return gr.Error(f"{type(exc).__name__}: {exc}")


def _colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def editor_value(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The annotator's value for a label record: labels in their class colour, pending model boxes in grey."""
    if not record or not record.get("image"):
        return None
    names = list(record.get("classes") or [])
    boxes = []
    for b in record.get("boxes") or []:
        colour = _colour(names.index(b["label"])) if b["label"] in names else PALETTE[0]
        boxes.append({**{k: b[k] for k in ("xmin", "ymin", "xmax", "ymax", "label")}, "color": colour})
    for b in record.get("predictions") or []:
        boxes.append({**{k: b[k] for k in ("xmin", "ymin", "xmax", "ymax", "label")}, "color": svc.PREDICTION_COLOR})
    return {"image": record["image"], "boxes": boxes}


def editor_boxes(value: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The boxes of the annotator's value, as the save endpoint takes them."""
    if (value or {}).get("orientation"):
        raise gr.Error("the image is shown rotated: rotate it back before saving (labels are kept unrotated)")
    out = []
    for b in (value or {}).get("boxes") or []:
        out.append({k: b.get(k) for k in ("xmin", "ymin", "xmax", "ymax", "label")})
    return out


def record_markdown(record: dict[str, Any] | None) -> str:
    if not record:
        return ""
    pending = len(record.get("predictions") or [])
    versions = f"version {record['version']} of {record['versions']}" if record.get("versions") else "no edits yet"
    more = f", **{pending} model boxes pending** (grey)" if pending else ""
    return (
        f"**{record['key']}** ({record['split']}, {record['width']}x{record['height']}, {record['format']}): "
        f"{len(record['boxes'])} labelled boxes{more}; state **{record['state']}**; {versions}. "
        f"Label file: `{record['label_file']}`"
    )


def counts_markdown(c: dict[str, Any]) -> str:
    return (
        f"**{c['labelled']}** of {c['images']} images labelled, {c['pre-labelled']} pre-labelled, "
        f"{c['untouched']} untouched; **{c['changed_since_run']}** boxes changed since the last fine-tune."
    )


def build(ctx: StudioContext) -> None:
    ws, cache = ctx.workspace, ctx.cache
    gr.Markdown(INTRO)
    if image_annotator is None:
        gr.Markdown("The box editor is missing: `pip install 'yolov7-studio[studio]'` (gradio_image_annotation).")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            dataset = gr.Dropdown(ctx.dataset_choices(), value="demo", label="Dataset", allow_custom_value=True)
            ctx.dataset_pickers.append(dataset)
            state_filter = gr.Radio(STATE_FILTERS, value="all", label="show images")
            key = gr.Dropdown([], label="Image", allow_custom_value=True, elem_id="annotate_key")
            with gr.Row():
                prev_btn = gr.Button("◀ previous", size="sm")
                next_btn = gr.Button("next ▶", size="sm")
            counts_md = gr.Markdown()
            with gr.Accordion("start from unlabelled images", open=False):
                uploads = gr.File(
                    label="images or a .zip",
                    file_count="multiple",
                    file_types=["image", ".zip"],
                    elem_id="annotate_upload",
                )
                new_name = gr.Textbox(label="dataset name")
                new_classes = gr.Textbox(label="classes (comma-separated, more can be added later)")
                make_btn = gr.Button("Make dataset")
            with gr.Accordion("classes", open=False):
                class_name = gr.Textbox(label="new class")
                add_btn = gr.Button("Add class", size="sm")
                old_class = gr.Dropdown([], label="rename class", allow_custom_value=True)
                renamed = gr.Textbox(label="new name")
                rename_btn = gr.Button("Rename", size="sm")
            with gr.Accordion("model-assisted labelling and fine-tuning", open=True):
                checkpoint = gr.Dropdown(
                    ctx.checkpoint_choices(), value="demo", label="checkpoint", allow_custom_value=True
                )
                ctx.checkpoint_pickers.append(checkpoint)
                conf = gr.Slider(0.01, 0.99, value=0.25, step=0.01, label="confidence threshold")
                with gr.Row():
                    prelabel_btn = gr.Button("Pre-label this image")
                    rest_btn = gr.Button("Pre-label the rest")
                epochs = gr.Number(10, label="epochs", precision=0, minimum=1)
                finetune_btn = gr.Button("Fine-tune on what is labelled")
                runs = gr.Dataframe(headers=RUN_COLUMNS, label="runs from this tab", interactive=False)
                refresh_runs = gr.Button("refresh runs", size="sm")
        with gr.Column(scale=3, min_width=400):
            if image_annotator is not None:
                editor = image_annotator(
                    label="boxes (drag to draw; select a box to move, resize, relabel or delete)",
                    sources=[], image_type="filepath", show_clear_button=False, box_min_size=4,
                    use_default_label=True, elem_id="annotate_editor", height=560,
                )  # fmt: skip
            else:  # pragma: no cover
                editor = gr.JSON(label="boxes")
            with gr.Row():
                save_btn = gr.Button("Save", variant="primary", elem_id="annotate_save")
                undo_btn = gr.Button("Undo last save", elem_id="annotate_undo")
                reload_btn = gr.Button("Reload")
            info = gr.Markdown()
            with gr.Accordion("label record (what the API returns)", open=False):
                token = gr.Textbox(label="version token", interactive=False, elem_id="annotate_token")
                boxes_json = gr.JSON(label="boxes to save")
                record = gr.JSON(label="record")

    # -- plain functions behind the endpoints ------------------------------------------------------------------
    def load(dataset_id: str, image_key: str) -> dict[str, Any]:
        if not image_key:
            raise gr.Error("pick an image first")
        try:
            return svc.load_annotation(ws, dataset_id, image_key)
        except Exception as exc:
            raise _fail(exc) from None

    def save(dataset_id: str, image_key: str, boxes: Any, token: str) -> dict[str, Any]:
        if not image_key:
            raise gr.Error("pick an image first")
        try:
            return svc.save_annotation(ws, dataset_id, image_key, boxes or [], token or None)
        except Exception as exc:
            raise _fail(exc) from None

    def do_undo(dataset_id: str, image_key: str, token: str) -> dict[str, Any]:
        try:
            return svc.undo(ws, dataset_id, image_key, token or None)
        except Exception as exc:
            raise _fail(exc) from None

    def do_prelabel(dataset_id: str, image_key: str, checkpoint_id: str, conf: float) -> dict[str, Any]:
        if not image_key:
            raise gr.Error("pick an image first")
        try:
            return svc.prelabel(ws, cache, dataset_id, image_key, checkpoint_id, float(conf))
        except Exception as exc:
            raise _fail(exc) from None

    def show(rec: dict[str, Any] | None) -> tuple[Any, ...]:
        names = list((rec or {}).get("classes") or [])
        value = editor_value(rec)
        if image_annotator is not None:
            colours = [_colour(i) for i in range(len(names))]
            ed = image_annotator(value=value, label_list=names or None, label_colors=colours or None)
        else:  # pragma: no cover
            ed = value
        return ed, (rec or {}).get("token", ""), record_markdown(rec), gr.update(choices=names, value=None)

    shown = [editor, token, info, old_class]

    def image_choices(ds: str, flt: str, current: str | None = None) -> tuple[Any, str]:
        try:
            rows = svc.list_images(ws, ds, flt)
            md = counts_markdown(svc.counts(ws, ds))
        except Exception as exc:
            gr.Warning(str(exc))
            return gr.update(choices=[], value=None), ""
        choices = [(f"{r['key']}  [{r['state']}]", r["key"]) for r in rows]
        keys = [r["key"] for r in rows]
        value = current if current in keys else (keys[0] if keys else None)
        return gr.update(choices=choices, value=value), md

    def step(ds: str, flt: str, k: str, delta: int) -> Any:
        keys = [r["key"] for r in svc.list_images(ws, ds, flt)]
        if not keys:
            return gr.update()
        i = keys.index(k) + delta if k in keys else 0
        return gr.update(value=keys[max(0, min(len(keys) - 1, i))])

    def refresh_counts(ds: str) -> str:
        try:
            return counts_markdown(svc.counts(ws, ds))
        except Exception:
            return ""

    # -- wiring --------------------------------------------------------------------------------------------------
    for trigger in (dataset.change, state_filter.change):
        trigger(image_choices, [dataset, state_filter, key], [key, counts_md], api_visibility="private")
    prev_btn.click(lambda d, f, k: step(d, f, k, -1), [dataset, state_filter, key], key, api_visibility="private")
    next_btn.click(lambda d, f, k: step(d, f, k, +1), [dataset, state_filter, key], key, api_visibility="private")

    key.change(load, [dataset, key], record, api_name="annotation_load").success(
        show, record, shown, api_visibility="private"
    )
    reload_btn.click(load, [dataset, key], record, api_visibility="private").success(
        show, record, shown, api_visibility="private"
    )
    save_btn.click(editor_boxes, editor, boxes_json, api_visibility="private").success(
        save, [dataset, key, boxes_json, token], record, api_name="annotation_save"
    ).success(show, record, shown, api_visibility="private").then(
        refresh_counts, dataset, counts_md, api_visibility="private"
    )
    undo_btn.click(do_undo, [dataset, key, token], record, api_name="annotation_undo").success(
        show, record, shown, api_visibility="private"
    ).then(refresh_counts, dataset, counts_md, api_visibility="private")
    prelabel_btn.click(
        do_prelabel, [dataset, key, checkpoint, conf], record, api_name="prelabel",
        concurrency_limit=1, concurrency_id="inference",
    ).success(show, record, shown, api_visibility="private")  # fmt: skip

    def prelabel_rest(ds: str, ck: str, c: float, progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008
        try:
            out = svc.prelabel_rest(ws, cache, ds, ck, float(c), progress=lambda f, m: progress(f, desc=m))
        except Exception as exc:
            raise _fail(exc) from None
        return f"pre-labelled {out['prelabelled']} images with **{out['checkpoint']}**. " + refresh_counts(ds)

    rest_btn.click(
        prelabel_rest,
        [dataset, checkpoint, conf],
        counts_md,
        api_name="prelabel_rest",
        concurrency_limit=1,
        concurrency_id="inference",
    ).then(lambda d, f, k: image_choices(d, f, k)[0], [dataset, state_filter, key], key, api_visibility="private")

    def make_dataset(files: list[str] | None, name: str, classes: str) -> tuple[Any, str]:
        try:
            out = svc.create_dataset(ws, files or [], name, [c for c in (classes or "").split(",")])
        except Exception as exc:
            raise _fail(exc) from None
        skipped = f" (skipped: {'; '.join(out['skipped'][:5])})" if out["skipped"] else ""
        gr.Info(f"made {out['id']} with {out['images']} images{skipped}")
        return gr.update(choices=ctx.dataset_choices(), value=out["id"]), f"**{out['id']}**: {out['images']} images"

    dep = make_btn.click(
        make_dataset, [uploads, new_name, new_classes], [dataset, counts_md], api_name="annotation_dataset"
    )
    ctx.change_events.append(dep)

    def add(ds: str, name: str, k: str) -> dict[str, Any]:
        try:
            svc.add_class(ws, ds, name)
            return svc.load_annotation(ws, ds, k) if k else {}
        except Exception as exc:
            raise _fail(exc) from None

    def rename(ds: str, old: str, new: str, k: str) -> dict[str, Any]:
        try:
            svc.rename_class(ws, ds, old, new)
            return svc.load_annotation(ws, ds, k) if k else {}
        except Exception as exc:
            raise _fail(exc) from None

    add_btn.click(add, [dataset, class_name, key], record, api_name="add_class").success(
        show, record, shown, api_visibility="private"
    )
    rename_btn.click(rename, [dataset, old_class, renamed, key], record, api_name="rename_class").success(
        show, record, shown, api_visibility="private"
    )

    def finetune(ds: str, ck: str, n: float) -> tuple[str, Any]:
        try:
            st = svc.start_finetune(ws, ctx.jobs, ds, ck, epochs=int(n or 10))
        except Exception as exc:
            raise _fail(exc) from None
        msg = (
            f"started **{st.get('name')}** ({st.get('state')}) on {st['subset']['images']} labelled images "
            f"({st['subset']['id']}); follow it in the Fine-tune tab, then pick `run:{st.get('name')}` as the "
            "checkpoint and **Pre-label the rest**."
        )
        return msg, run_table(ds)

    def run_table(ds: str) -> Any:
        import pandas as pd

        try:
            rows = svc.run_metrics(ctx.jobs, svc.counts(ws, ds)["runs"])
        except Exception:
            rows = []
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=RUN_COLUMNS)

    dep = finetune_btn.click(finetune, [dataset, checkpoint, epochs], [counts_md, runs], api_name="finetune_labelled")
    ctx.change_events.append(dep)
    refresh_runs.click(run_table, dataset, runs, api_visibility="private")

    # other tabs (Review) open an image here: set the dataset, then the key (its change loads the image)
    def open_image(ds: str, k: str) -> tuple[Any, Any, Any]:
        choices, _ = image_choices(ds, "all", k)
        return gr.update(value=ds), gr.update(value="all"), choices

    ctx.annotate = SimpleNamespace(  # type: ignore[attr-defined]
        dataset=dataset, key=key, state_filter=state_filter, open_image=open_image
    )
    root = gr.context.Context.root_block
    if root is not None:  # the first image of the default dataset when the page opens
        root.load(image_choices, [dataset, state_filter, key], [key, counts_md], api_visibility="private")
