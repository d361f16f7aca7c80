"""Fine-tune (no code): start, follow and stop trainings; download best.pt, the deploy checkpoint and ONNX.

Layout and wiring only: the work is done by :class:`app.jobs.JobRunner` (``ctx.jobs``) and
:mod:`app.services.training`. Endpoints: ``/start_training`` (form in, status JSON out), ``/training_status``
(run name in, status JSON out), ``/stop_training`` (run name in, status JSON out). A ``gr.Timer`` follows the
selected run every 2 s (status.json, results.csv, train.log). ``/start_training`` takes the label-assignment
options last (``assign``, ``assign_bound``, ``aux_wiring``, with defaults), so older callers still work. Before a
from-scratch run on a small dataset the form suggests a start checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from app.jobs import RECIPES, JobError
from app.services import training as T
from app.studio.context import StudioContext
from core.loss import DEFAULT_ASSIGN, DEFAULT_BOUND
from core.models import AUX_WIRINGS, list_models

DEFAULT_EPOCHS, DEFAULT_IMG, DEFAULT_BATCH = 30, 320, 16
LOG_LINES = 25


def _run_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    return [(f"{j['name']} ({j['state']})", j["name"]) for j in ctx.jobs.list_jobs()]


def build(ctx: StudioContext) -> None:
    jobs = ctx.jobs
    if jobs is None:  # pragma: no cover - make_context always gives one
        gr.Markdown("The job runner is not available in this studio.")
        return
    recipe_help = "  \n".join(f"**{k}**: {v}" for k, v in RECIPES.items())
    assign_help = "  \n".join(f"**{k}**: {v}" for k, v in T.ASSIGN_HELP.items())
    wiring_help = "  \n".join(f"**{k}**: {v}" for k, v in T.WIRING_HELP.items())

    # -- plain functions behind the endpoints ------------------------------------------------------------------
    def start_training(
        dataset: str, checkpoint: str, from_scratch: bool, variant: str, aux: bool, epochs: float, img: float,
        batch: float, recipe: str, name: str, assign: str = DEFAULT_ASSIGN, assign_bound: float | None = None,
        aux_wiring: str = AUX_WIRINGS[0],
    ) -> dict[str, Any]:  # fmt: skip
        try:
            req = T.request_from_form(
                dataset, checkpoint, from_scratch, variant, aux, epochs, img, batch, recipe, name, assign,
                assign_bound, aux_wiring,
            )  # fmt: skip
            return jobs.start(req)
        except (JobError, ValueError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def training_status(name: str) -> dict[str, Any]:
        try:
            return jobs.status(name, log_lines=LOG_LINES)
        except JobError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def stop_training(name: str) -> dict[str, Any]:
        try:
            return jobs.stop(name)
        except JobError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    # -- layout ----------------------------------------------------------------------------------------------------
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### New training")
            dataset = gr.Dropdown(
                ctx.dataset_choices(), value="demo", label="Dataset", allow_custom_value=True,
                info="the demo, an uploaded dataset (Data tab) or a linked folder",
            )  # fmt: skip
            checkpoint = gr.Dropdown(
                ctx.checkpoint_choices(), value="demo", label="Start checkpoint", allow_custom_value=True,
                info="demo, a run's best.pt, or an uploaded .pt (official YOLOv7 files too)",
            )  # fmt: skip
            from_scratch = gr.Checkbox(False, label="From scratch (ignore the start checkpoint)")
            suggestion = gr.Markdown("")
            variant = gr.Dropdown(
                list_models(), value="yolov7-tiny", label="Variant", interactive=False,
                info="for training from scratch; a start checkpoint brings its own architecture",
            )  # fmt: skip
            aux = gr.Checkbox(True, label="Auxiliary head (coarse positives, YOLOv7's lead-guided training)")
            with gr.Accordion("Advanced: label assignment", open=False):
                aux_note = gr.Markdown("*These options need the auxiliary head: turn it on above.*", visible=False)
                assign = gr.Radio(
                    [(T.choice_label(k), k) for k in T.ASSIGN_HELP], value=DEFAULT_ASSIGN,
                    label="How the auxiliary head is labelled",
                )  # fmt: skip
                assign_bound = gr.Number(
                    DEFAULT_BOUND, label="Bound (strength of the cap on coarse labels; 0 = no cap)", minimum=0,
                    visible=False,
                )  # fmt: skip
                gr.Markdown(assign_help, elem_classes="ys-muted")
                aux_wiring = gr.Radio(
                    [(T.choice_label(k), k) for k in T.WIRING_HELP], value=AUX_WIRINGS[0], label="Auxiliary head wiring"
                )
                gr.Markdown(
                    wiring_help + "  \nA start checkpoint keeps its own wiring unless you pick partial (then it is "
                    "rewired; the auxiliary layers whose shape changes start fresh).",
                    elem_classes="ys-muted",
                )  # fmt: skip
            with gr.Row():
                epochs = gr.Number(DEFAULT_EPOCHS, label="Epochs", precision=0, minimum=1, maximum=10000)
                img = gr.Number(DEFAULT_IMG, label="Image size", precision=0, minimum=32, step=32)
                batch = gr.Number(DEFAULT_BATCH, label="Batch", precision=0, minimum=1, maximum=1024)
            recipe = gr.Radio(list(RECIPES), value="small-data", label="Recipe preset")
            gr.Markdown(recipe_help, elem_classes="ys-muted")
            name = gr.Textbox("", label="Run name (optional)", placeholder="automatic: variant-dataset-time")
            start_btn = gr.Button("Start training", variant="primary")
        with gr.Column(scale=3):
            with gr.Row():
                run_pick = gr.Dropdown(
                    _run_choices(ctx), value=None, label="Run (re-attach to any run or queued request)",
                    allow_custom_value=True, scale=4,
                )  # fmt: skip
                refresh_btn = gr.Button("Refresh", scale=1)
                stop_btn = gr.Button("Stop", variant="stop", scale=1)
            progress = gr.Markdown("Pick a run, or start one.")
            queue_md = gr.Markdown(T.queue_markdown(jobs.list_jobs()))
            loss_plot = gr.Plot(label="Losses")
            with gr.Row():
                map_plot = gr.Plot(label="mAP")
                class_plot = gr.Plot(label="Per-class AP")
            log_box = gr.Textbox(label="train.log (last lines)", lines=10, max_lines=10, autoscroll=True)
            with gr.Accordion("Downloads", open=True):
                with gr.Row():
                    best_file = gr.File(label="best.pt (training form)", interactive=False, visible=False)
                    deploy_file = gr.File(
                        label="deploy checkpoint (re-parameterized)", interactive=False, visible=False
                    )
                    onnx_file = gr.File(label="ONNX (deploy form)", interactive=False, visible=False)
                export_btn = gr.Button("Make the deploy checkpoint and ONNX")
                check_box = gr.Textbox(label="Self-checks (deploy vs training form, ONNX Runtime vs PyTorch)", lines=4)
            with gr.Accordion("Status (JSON, as /training_status returns it)", open=False):
                status_json = gr.JSON(label="status")
    ended_marker = gr.Number(0, visible=False)  # changes when a followed run ends: the pickers refresh
    memo = gr.State({})  # what this page last drew: skip redrawing unchanged plots, spot runs that end
    timer = gr.Timer(2.0)

    # -- wiring ------------------------------------------------------------------------------------------------------
    def follow(name: str, seen: dict[str, Any]) -> dict[Any, Any]:
        """What changed about run ``name`` since this page's last tick (components left out stay as they are)."""
        all_jobs = jobs.list_jobs()
        names = [(j["name"], j["state"]) for j in all_jobs]  # the picker's labels show the states
        out: dict[Any, Any] = {queue_md: T.queue_markdown(all_jobs), memo: {"names": names}}
        if names != seen.get("names"):
            out[run_pick] = gr.update(choices=_run_choices(ctx))
        if not name:  # follow the running job, if any
            name = next((j["name"] for j in all_jobs if j["state"] in ("starting", "running")), "")
            if not name:
                return {**out, progress: "Pick a run, or start one."}
            out[run_pick] = gr.update(choices=_run_choices(ctx), value=name)
        try:
            st = jobs.status(name, log_lines=LOG_LINES)
        except JobError as exc:
            return {**out, progress: f"**{name}**: {exc}"}
        rows, files = st["results"], st["files"]
        key = [name, st["state"], len(rows), st["epoch"], st["step"]]
        out.update({progress: T.progress_text(st), log_box: st["log_tail"], status_json: st})
        out[memo] = {"names": names, "name": name, "state": st["state"], "key": key}
        active = ("starting", "running")
        if seen.get("name") == name and seen.get("state") in active and st["state"] not in active:
            out[ended_marker] = time.time()  # the run ended: its checkpoint joins the other tabs' pickers
        if seen.get("key") == key:
            return out  # nothing new to draw
        live = st["losses"] if st["state"] == "running" else None
        out.update({
            loss_plot: T.losses_figure(rows, live), map_plot: T.map_figure(rows),
            class_plot: T.per_class_figure(rows, st["metrics"]),
            best_file: gr.update(value=files.get("best"), visible="best" in files),
            deploy_file: gr.update(value=files.get("deploy"), visible="deploy" in files),
            onnx_file: gr.update(value=files.get("onnx"), visible="onnx" in files),
        })  # fmt: skip
        return out

    follow_outputs = [
        run_pick, progress, queue_md, loss_plot, map_plot, class_plot, best_file, log_box, status_json, deploy_file,
        onnx_file, ended_marker, memo,
    ]  # fmt: skip
    timer.tick(follow, [run_pick, memo], follow_outputs, api_visibility="private", show_progress="hidden")
    run_pick.change(lambda n: follow(n, {}), [run_pick], follow_outputs, api_visibility="private")

    from_scratch.change(lambda s: gr.update(interactive=bool(s)), [from_scratch], [variant], api_visibility="private")

    def suggest(dataset_id: str, checkpoint_id: str, scratch: bool) -> str:
        return T.suggestion_for_form(ctx.workspace, ctx.cache, dataset_id, checkpoint_id, scratch)

    for picker in (dataset, checkpoint, from_scratch):
        picker.change(
            suggest, [dataset, checkpoint, from_scratch], [suggestion], api_visibility="private", show_progress="hidden"
        )

    def aux_options(on: bool, strategy: str) -> tuple[Any, ...]:
        on = bool(on)
        shown = gr.update(interactive=on)
        bound = gr.update(interactive=on, visible=strategy == T.BOUNDED)
        return gr.update(visible=not on), shown, bound, gr.update(interactive=on)

    aux.change(aux_options, [aux, assign], [aux_note, assign, assign_bound, aux_wiring], api_visibility="private")
    assign.change(lambda s: gr.update(visible=s == T.BOUNDED), [assign], [assign_bound], api_visibility="private")
    # the API's parameter order: new parameters only at the end, with defaults
    form = [
        dataset, checkpoint, from_scratch, variant, aux, epochs, img, batch, recipe, name, assign, assign_bound,
        aux_wiring,
    ]  # fmt: skip
    start_event = start_btn.click(
        start_training,
        form,
        [status_json],
        api_name="start_training",
    )
    start_event.success(
        lambda st: gr.update(choices=_run_choices(ctx), value=st["name"]), [status_json], [run_pick],
        api_visibility="private",
    )  # fmt: skip
    refresh_btn.click(training_status, [run_pick], [status_json], api_name="training_status").then(
        lambda n: follow(n, {}), [run_pick], follow_outputs, api_visibility="private"
    )
    stop_btn.click(stop_training, [run_pick], [status_json], api_name="stop_training").then(
        lambda n: follow(n, {}), [run_pick], follow_outputs, api_visibility="private"
    )

    def make_downloads(name: str) -> tuple[Any, Any, str]:
        if not name:
            raise gr.Error("pick a run first", print_exception=False)
        paths, texts = [], []
        for form in T.FORMS:
            try:
                out = jobs.export(name, form)
            except (JobError, ValueError, RuntimeError, OSError) as exc:
                paths.append(None)
                texts.append(f"{form}: not made: {exc}")
                continue
            paths.append(out["path"])
            texts.append(f"{form}{' (cached)' if out['cached'] else ''}: {out['check']}")
        shown = [gr.update(value=p, visible=p is not None) for p in paths]
        return shown[0], shown[1], "\n\n".join(texts)

    export_btn.click(make_downloads, [run_pick], [deploy_file, onnx_file, check_box], api_visibility="private")

    ended = ended_marker.change(lambda: None, None, None, api_visibility="private", queue=False)
    ctx.dataset_pickers.append(dataset)
    ctx.checkpoint_pickers.append(checkpoint)
    ctx.change_events.append(ended)
