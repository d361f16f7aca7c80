"""Assignments tab: how YOLOv7's lead-guided assigner labels an image (fine vs coarse positives, lead vs aux maps).

Layout and wiring only; the work is in :mod:`app.services.assign`. Endpoints: ``/assign`` (image [+ label file] in,
figure + per-box table + summary out; every other input has a default: the demo checkpoint and the demo dataset),
``/assign_stats`` (a split's assignment statistics) and ``/assign_convergence`` (a run's objectness maps after an
epoch).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.services import assign as svc
from app.studio.context import StudioContext

INTRO = """### Label assignment: lead vs auxiliary head
YOLOv7 trains its **lead** head on *fine* positives (the box's centre cell and 2 neighbours, SimOTA dynamic k) and its
**auxiliary** head on *coarse* positives (centre and 4 neighbours, larger k), both chosen from the lead head's own
predictions. Pick a dataset image (or upload an image with a YOLO `.txt` / VOC `.xml` label file) and see both
label sets next to what each head predicts. In the figure, one dropdown picks the level and anchor, the other the
map; hover a cell for its box, IoU, cost and dynamic k."""

SPLITS = ["val", "train", "test", "all"]


def _fail(exc: Exception) -> gr.Error:
    if isinstance(exc, ValueError):
        return gr.Error(str(exc))
    return gr.Error(f"{type(exc).__name__}: {exc}")


def build(ctx: StudioContext) -> None:
    ws, cache = ctx.workspace, ctx.cache
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            checkpoint = gr.Dropdown(
                ctx.checkpoint_choices(),
                value="demo",
                label="Model (training checkpoint, ideally with aux head)",
                allow_custom_value=True,
            )
            with gr.Group():
                gr.Markdown("**Dataset image**")
                dataset = gr.Dropdown(ctx.dataset_choices(), value="demo", label="Dataset", allow_custom_value=True)
                with gr.Row():
                    split = gr.Dropdown(SPLITS, value="val", label="Split", allow_custom_value=True, min_width=90)
                    item = gr.Textbox(value="0", label="Image (index or name)", min_width=120)
                with gr.Row():
                    prev_btn = gr.Button("◀ previous", size="sm")
                    next_btn = gr.Button("next ▶", size="sm")
            with gr.Group():
                gr.Markdown("**…or upload** (takes precedence over the dataset image; clear it to go back)")
                image = gr.Image(type="filepath", label="Image", sources=["upload"], height=200, elem_id="assign_image")
                labels = gr.File(
                    label="Label file (YOLO .txt or VOC .xml)", file_types=[".txt", ".xml"], elem_id="assign_labels"
                )
            img_size = gr.Number(value=0, precision=0, label="Input size (0: the checkpoint's training size)")
            run = gr.Button("Explore assignment", variant="primary")
        with gr.Column(scale=3):
            summary = gr.Markdown("Press **Explore assignment** (the demo image is ready).", label="Summary")
            plot = gr.Plot(label="Lead vs auxiliary: objectness and positives", show_label=False)
            table = gr.DataFrame(
                headers=["box", "class", "size", "fine total", "coarse total", "no positive"],
                label="Per box (red: got no positive)",
                interactive=False,
                wrap=True,
            )

    with gr.Accordion("Dataset-level assignment statistics", open=False):
        with gr.Row():
            stats_split = gr.Dropdown(SPLITS, value="val", label="Split", allow_custom_value=True)
            stats_max = gr.Number(value=200, precision=0, label="At most this many images (0: all)")
            stats_btn = gr.Button("Compute statistics", variant="secondary")
        stats_md = gr.Markdown(label="Statistics summary")
        stats_plots = [gr.Plot(show_label=False, label=key) for key in svc.STATS_FIGURES]

    with gr.Accordion("Training convergence (runs trained with objectness snapshots)", open=False):
        gr.Markdown(
            "Runs started with `--objectness-every N` save the lead and aux objectness maps of a fixed validation "
            "image every N epochs; move the slider to watch them converge."
        )
        with gr.Row():
            run_pick = gr.Dropdown(svc.snapshot_runs(ws), value=None, label="Run", allow_custom_value=True, scale=3)
            refresh_runs = gr.Button("↻ runs", size="sm", scale=0, min_width=80)
            epoch = gr.Slider(0, 1, value=0, step=1, label="After epoch", scale=4)
            epoch_value = gr.Number(visible=False, precision=0, label="epoch")  # the API's input (no slider range)
        conv_plot = gr.Plot(show_label=False, label="Objectness after the epoch")

    # -- handlers ----------------------------------------------------------------------------------------------------
    def do_assign(
        image: str | None = None,
        labels: str | None = None,
        checkpoint: str = "demo",
        dataset: str = "demo",
        split: str = "val",
        item: str = "0",
        img_size: float | None = 0,
    ) -> Any:
        try:
            res = svc.explore(
                ws,
                cache,
                image=image or None,
                labels=labels or None,
                dataset=dataset or "demo",
                split=split or "val",
                item=item,
                checkpoint=checkpoint or "demo",
                img_size=int(img_size) if img_size else None,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is a message in the page
            raise _fail(exc) from None
        if res.no_positive:
            gr.Warning(f"{len(res.no_positive)} box(es) got no positive: {res.no_positive}")
        res.figure.layout.width = None  # fill the page's column (the panels keep their aspect)
        return res.figure, svc.table_frame(res.rows), res.summary

    inputs = [image, labels, checkpoint, dataset, split, item, img_size]
    outputs = [plot, table, summary]
    run.click(do_assign, inputs, outputs, api_name="assign", concurrency_limit=2)

    def step(it: str, delta: int) -> str:
        text = str(it or "0").strip()
        return str(max(0, int(text) + delta)) if text.lstrip("-").isdigit() else "0"

    for btn, delta in ((prev_btn, -1), (next_btn, 1)):
        btn.click(lambda it, d=delta: step(it, d), item, item, api_visibility="private", queue=False).then(
            do_assign, inputs, outputs, api_visibility="private"
        )

    def do_stats(
        checkpoint: str = "demo",
        dataset: str = "demo",
        split: str = "val",
        max_images: float | None = 200,
        img_size: float | None = 0,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> list[Any]:
        def report(fraction: float, message: str = "") -> None:
            progress(float(fraction), desc=message or "assigning")

        try:
            stats, figs = svc.dataset_stats(
                ws,
                cache,
                dataset=dataset or "demo",
                split=split or "val",
                checkpoint=checkpoint or "demo",
                img_size=int(img_size) if img_size else None,
                max_images=int(max_images) if max_images else None,
                progress=report,
            )
        except Exception as exc:  # noqa: BLE001
            raise _fail(exc) from None
        return [svc.stats_summary(stats), *figs.values()]

    stats_btn.click(
        do_stats,
        [checkpoint, dataset, stats_split, stats_max, img_size],
        [stats_md, *stats_plots],
        api_name="assign_stats",
        concurrency_limit=1,
    )

    def pick_run(name: str | None) -> Any:
        if not name:
            return gr.update(), None
        try:
            fig, shown, epochs = svc.convergence(ws, name)
        except Exception as exc:  # noqa: BLE001
            raise _fail(exc) from None
        lo, hi = epochs[0], epochs[-1]
        steps = [b - a for a, b in zip(epochs, epochs[1:])]
        return gr.update(minimum=lo, maximum=max(hi, lo + 1), value=shown, step=min(steps) if steps else 1), fig

    def show_epoch(run: str | None, epoch: float | None = None) -> Any:
        if not run:
            raise gr.Error("pick a run trained with objectness snapshots first")
        try:
            fig, _, _ = svc.convergence(ws, run, int(epoch) if epoch is not None else None)
        except Exception as exc:  # noqa: BLE001
            raise _fail(exc) from None
        return fig

    refresh_runs.click(lambda: gr.update(choices=svc.snapshot_runs(ws)), None, run_pick, api_visibility="private")
    run_pick.input(pick_run, run_pick, [epoch, conv_plot], api_visibility="private")
    epoch.release(lambda v: v, epoch, epoch_value, api_visibility="private", queue=False).then(
        show_epoch, [run_pick, epoch_value], conv_plot, api_name="assign_convergence"
    )

    def splits_of(ds: str | None, current: str | None, current_stats: str | None) -> list[Any]:
        try:
            names = [*svc.split_names(ws, cache, ds or "demo"), "all"]
        except Exception:  # noqa: BLE001 - an unreadable dataset says so when it is explored
            return [gr.update(), gr.update()]
        pick = [c if c in names else ("val" if "val" in names else names[0]) for c in (current, current_stats)]
        return [gr.update(choices=names, value=pick[0]), gr.update(choices=names, value=pick[1])]

    dataset.change(splits_of, [dataset, split, stats_split], [split, stats_split], api_visibility="private")
    ctx.checkpoint_pickers.append(checkpoint)
    ctx.dataset_pickers.append(dataset)
