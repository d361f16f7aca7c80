"""Datasets: the check report, statistics figures, a sample grid with ground truth, the labels lost to augmentation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.dashboard.context import get_context
from app.services import dashboard_datasets as DD
from app.services.data import DataError

WIDE = {"box_sizes"}  # three panels, one per model group
GRID = 12


@st.cache_data(max_entries=16, show_spinner="checking the dataset")
def checked(root: str, dataset: str, stamp: float) -> DD.CheckResult:
    return DD.check(get_context().workspace, dataset, preview=True)


@st.cache_data(max_entries=8, show_spinner=False)
def images(root: str, dataset: str, stamp: float) -> tuple[list[str], list[str], list]:
    ds = DD.load(get_context().workspace, dataset)
    return list(ds.class_names), list(ds.split_names), list(ds.images)


def stamp(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


ctx = get_context()
ws = ctx.workspace
st.title("Datasets")
entries = ws.list_datasets()
choices = {e.label: e.id for e in entries}
left, right = st.columns([2, 3])
label = left.selectbox("Dataset of the workspace", list(choices), key="dataset_pick")
path = right.text_input("…or a dataset on disk (folder, data.yaml or COCO json)", key="dataset_path")
if path.strip():
    dataset, source_path = f"path:{path.strip()}", path.strip()
else:
    dataset = choices.get(label, "demo")
    source_path = str(next((e.path for e in entries if e.id == dataset), ""))
try:
    result = checked(str(ws.root), dataset, stamp(Path(source_path)))
except DataError as exc:
    st.error(str(exc))
    st.stop()

st.markdown(result.summary)
tab_stats, tab_samples, tab_report, tab_aug = st.tabs(["Statistics", "Samples", "Check report", "Augmentation"])
with tab_report:
    if not result.rows:
        st.success("No problems found: every image and label was used as it is.")
    else:
        df = pd.DataFrame(result.rows)
        kinds = sorted(df["kind"].unique())
        pick = st.multiselect("Problem type", kinds, default=kinds, key="report_kinds")
        text = st.text_input("File contains", key="report_text")
        shown = df[df["kind"].isin(pick) & df["file"].str.contains(text, regex=False)]
        st.caption(f"{len(shown)} of {len(df)} report rows")
        st.dataframe(shown, hide_index=True, width="stretch", key="report_table")
with tab_stats:
    if result.anchors:
        st.markdown("**Best possible recall (BPR) per model group** — the share of boxes an anchor can match")
        st.dataframe(pd.DataFrame(result.anchors), hide_index=True, width="stretch", key="anchor_table")
    narrow = [(k, f) for k, f in result.figures.items() if k not in WIDE]
    for start in range(0, len(narrow), 2):  # two to a row
        for col, (key, fig) in zip(st.columns(2), narrow[start : start + 2], strict=False):
            col.plotly_chart(fig, key=f"fig_{key}")
    for key, fig in result.figures.items():
        if key in WIDE:  # a row of its own
            st.plotly_chart(fig, key=f"fig_{key}")
with tab_samples:
    try:
        names, splits, records = images(str(ws.root), dataset, stamp(Path(source_path)))
    except DataError as exc:
        st.error(str(exc))
    else:
        c1, c2, c3 = st.columns(3)
        classes = c1.multiselect("Classes", names, key="grid_classes")
        split = c2.selectbox("Split", ["all", *splits], key="grid_split")
        kinds = sorted({r["kind"] for r in result.rows})
        problem = c3.selectbox("Problem type", ["any (or none)", *kinds], key="grid_problem")
        files = None if problem.startswith("any") else DD.problem_files(result.rows, problem)
        split_name = None if split == "all" else split
        picked = DD.filter_images(records, names, classes=classes or None, split=split_name, files=files)
        st.caption(f"{len(picked)} images match; the first {min(GRID, len(picked))} with their ground-truth boxes")
        grid = st.columns(4)
        for i, rec in enumerate(picked[:GRID]):
            grid[i % 4].image(DD.draw_sample(rec, names), caption=f"{rec.key} · {len(rec.boxes)} boxes")
with tab_aug:
    if result.preview is not None:
        st.image(str(result.preview), caption="training augmentation (mosaic, perspective, HSV, flips) of a few images")
    if result.labels:
        lab = result.labels
        c = st.columns(4)
        c[0].metric("labels in", lab.get("input"))
        c[1].metric("labels out", lab.get("kept"))
        c[2].metric("lost", f"{100 * float(lab.get('lost_share', 0)):.1f} %")
        c[3].metric("cropped / filtered", f"{lab.get('cropped')} / {lab.get('filtered')}")
    for n in result.notes:
        st.warning(n)
