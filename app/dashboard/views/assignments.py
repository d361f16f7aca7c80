"""Assignments: dataset-level assignment statistics of a checkpoint on a split, and one image's explorer figure."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard.context import get_context
from app.modelcache import file_key
from app.services import assign as A
from app.services import dashboard_assign as DA

ctx = get_context()
ws = ctx.workspace
st.title("Label assignment")
st.caption(
    "How YOLOv7's assigner hands out positives: fine (lead head) and coarse (auxiliary head) candidates per "
    "ground-truth box, by class, box size and pyramid level; boxes without any positive are never learned."
)
checkpoints = {e.label: e.id for e in ws.list_checkpoints()}
datasets = {e.label: e.id for e in ws.list_datasets()}
if not checkpoints:
    st.error("No checkpoint in the workspace (and the shipped demo checkpoint is missing).")
    st.stop()
c1, c2, c3, c4 = st.columns([3, 3, 1, 1])
ck_label = c1.selectbox("Checkpoint", list(checkpoints), key="as_checkpoint")
ds_label = c2.selectbox("Dataset", list(datasets), key="as_dataset")
checkpoint, dataset = checkpoints[ck_label], datasets.get(ds_label, "demo")
try:
    splits = A.split_names(ws, ctx.cache, dataset)
    info = A.load_model(ws, ctx.cache, checkpoint)
except A.AssignError as exc:
    st.error(str(exc))
    st.stop()
split = c3.selectbox("Split", splits, index=splits.index("val") if "val" in splits else 0, key="as_split")
max_images = int(c4.number_input("Images", 10, 5000, 100, step=10, key="as_max_images"))


@st.cache_data(max_entries=16, show_spinner="assigning every box of the split")
def stats(ck: tuple, ck_id: str, ds_id: str, split: str, n: int) -> dict:
    return DA.split_stats(ws, ctx.cache, checkpoint=ck_id, dataset=ds_id, split=split, max_images=n)


tab_stats, tab_image = st.tabs(["Dataset statistics", "One image"])
with tab_stats:
    if st.button("Compute the statistics", type="primary", key="as_run") or st.session_state.get("as_done") == (
        checkpoint,
        dataset,
        split,
        max_images,
    ):
        try:
            out = stats(file_key(info.path), checkpoint, dataset, split, max_images)
        except A.AssignError as exc:
            st.error(str(exc))
        else:
            st.session_state["as_done"] = (checkpoint, dataset, split, max_images)
            st.markdown(out["summary"])
            for key, fig in out["figures"].items():  # wide figures (two panels each): one per row
                st.plotly_chart(fig, key=f"as_fig_{key}")
            st.dataframe(
                pd.DataFrame(out["rows"]).style.format(precision=2, na_rep="–"),
                hide_index=True, width="stretch", key="as_groups",
            )  # fmt: skip
    else:
        st.info(f"Runs the model and the assigner over up to {max_images} images of `{split}` (a minute on a CPU).")
with tab_image:
    names = A.image_names(ws, ctx.cache, dataset, split)
    if not names:
        st.info(f"Split {split!r} has no images.")
    else:
        item = st.selectbox("Image", names, key="as_image")
        if st.button("Explore this image", key="as_explore") or st.session_state.get("as_img") == (checkpoint, item):
            try:
                res = A.explore(ws, ctx.cache, dataset=dataset, split=split, item=item, checkpoint=checkpoint)
            except A.AssignError as exc:
                st.error(str(exc))
            else:
                st.session_state["as_img"] = (checkpoint, item)
                st.markdown(res.summary)
                st.plotly_chart(res.figure, key="as_explorer")
                st.dataframe(pd.DataFrame(res.rows), hide_index=True, width="stretch", key="as_boxes")
