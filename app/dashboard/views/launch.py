"""Launch: start a training with the studio's job runner (the Fine-tune tab's options); the queue and positions.

No ``st.form``: the start-checkpoint suggestion and the label-assignment options follow the choices as they change.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard.context import get_context
from app.jobs import DEFAULT_RECIPE, RECIPES, JobError
from app.services import training as T
from core.loss import DEFAULT_ASSIGN, DEFAULT_BOUND
from core.models import AUX_WIRINGS, list_models

ctx = get_context()
ws, jobs = ctx.workspace, ctx.jobs
st.title("Launch a training")

datasets = {e.label: e.id for e in ws.list_datasets()}
checkpoints = {e.label: e.id for e in ws.list_checkpoints()}
c1, c2 = st.columns(2)
ds_label = c1.selectbox("Dataset", list(datasets), key="ln_dataset")
ck_label = c2.selectbox("Start checkpoint", list(checkpoints), key="ln_checkpoint")
scratch = st.checkbox("From scratch (ignore the start checkpoint; train the variant below)", key="ln_scratch")
dataset_id, checkpoint_id = datasets.get(ds_label, "demo"), checkpoints.get(ck_label)
suggestion = T.suggestion_for_form(ws, ctx.cache, dataset_id, checkpoint_id or "", scratch)
if suggestion:
    st.warning(suggestion)
models = list_models()
variant = st.selectbox("Variant (from scratch)", models, index=models.index("yolov7-tiny"), key="ln_variant")
aux = st.checkbox("Auxiliary head (coarse positives, lead-guided training)", value=True, key="ln_aux")
with st.expander("Advanced: label assignment"):
    if not aux:
        st.caption("These options need the auxiliary head: turn it on above.")
    strategies = list(T.ASSIGN_HELP)
    assign = st.radio(
        "How the auxiliary head is labelled", strategies, index=strategies.index(DEFAULT_ASSIGN), disabled=not aux,
        format_func=T.choice_label, captions=list(T.ASSIGN_HELP.values()), key="ln_assign",
    )  # fmt: skip
    bound = None
    if assign == T.BOUNDED:
        bound = st.number_input(
            "Bound (strength of the cap on coarse labels; 0 = no cap)", 0.0, 100.0, float(DEFAULT_BOUND), step=0.5,
            disabled=not aux, key="ln_assign_bound",
        )  # fmt: skip
    wirings = list(T.WIRING_HELP)
    wiring = st.radio(
        "Auxiliary head wiring", wirings, index=wirings.index(AUX_WIRINGS[0]), disabled=not aux,
        format_func=T.choice_label, captions=list(T.WIRING_HELP.values()), key="ln_aux_wiring",
    )  # fmt: skip
    st.caption(
        "A start checkpoint keeps its own wiring unless you pick partial (then it is rewired; the auxiliary layers "
        "whose shape changes start fresh)."
    )
c3, c4, c5 = st.columns(3)
epochs = c3.number_input("Epochs", 1, 10000, 30, key="ln_epochs")
img = c4.number_input("Image size", 32, 4096, 320, step=32, key="ln_img")
batch = c5.number_input("Batch", 1, 1024, 16, key="ln_batch")
recipe = st.radio("Recipe", list(RECIPES), index=list(RECIPES).index(DEFAULT_RECIPE), key="ln_recipe")
st.caption("  \n".join(f"**{k}**: {v}" for k, v in RECIPES.items()))
name = st.text_input("Run name (optional)", placeholder="automatic: variant-dataset-time", key="ln_name")
if st.button("Start training", type="primary", key="ln_start"):
    try:
        req = T.request_from_form(
            dataset_id, checkpoint_id, scratch, variant, aux, epochs, img, batch, recipe, name, assign, bound, wiring
        )
        out = jobs.start(req)
    except (JobError, ValueError) as exc:
        st.error(str(exc))
    else:
        where = "started" if out["state"] != "queued" else f"queued at position {out.get('queue_position')}"
        st.success(f"{out['name']}: {where}. Follow it on the Runs page.")


@st.fragment(run_every=3.0)
def queue() -> None:
    st.subheader("Now training and the queue")
    rows = [j for j in jobs.list_jobs() if j["state"] in ("queued", "starting", "running")]
    if not rows:
        st.info("Nothing is training and the queue is empty.")
        return
    rows.sort(key=lambda j: j["queue_position"] or 0)
    st.dataframe(
        pd.DataFrame(
            [{"position": j["queue_position"] or "now", "run": j["name"], "state": j["state"]} for j in rows]
        ).astype({"position": str}),
        hide_index=True,
        width="stretch",
        key="queue_table",
    )
    target = st.selectbox("Stop a run or take a request out of the queue", [j["name"] for j in rows], key="ln_stop")
    if st.button("Stop / cancel", key="ln_stop_btn"):
        try:
            st.toast(f"{target}: {jobs.stop(target).get('message')}")
        except JobError as exc:
            st.error(str(exc))
        st.rerun(scope="fragment")


queue()
