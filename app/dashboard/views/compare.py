"""Compare: overlaid curves of the picked runs, accuracy vs latency vs size, per-class AP, best epochs; study folders
(assignment strategies with the paper's numbers and the objectness figure, model scaling); "Open in FiftyOne"."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.dashboard import cached
from app.dashboard.context import get_context
from app.services import dashboard_runs as R
from app.services import fiftyone_launch as fol
from app.services import study_view as sv

ctx = get_context()
st.title("Compare runs")


def runs_section() -> None:
    refs, summaries, problems = cached.runs(ctx)
    for p in problems:
        st.warning(p)
    with_results = [s for s in summaries if s.epoch or s.best_map is not None]
    if not with_results:
        st.info("No run has finished an epoch yet: nothing to compare.")
        return
    labels = [s.label for s in with_results]
    ranked = sorted(with_results, key=lambda s: (s.best_map is not None, s.best_map or 0.0), reverse=True)
    picked = st.multiselect("Runs", labels, default=[s.label for s in ranked[:4]], key="compare_runs")
    if not picked:
        st.info("Pick one or more runs.")
        return
    by_label = {s.label: s for s in with_results}
    runs: dict[str, list] = {}
    for label in picked:
        rows, bad = cached.results(by_label[label].key)
        for p in bad:
            st.warning(f"{label}: {p}")
        runs[label] = rows
    best = {label: by_label[label].best_epoch for label in picked}

    key = st.selectbox("Curve", list(R.CURVES), format_func=lambda k: R.CURVES[k], key="compare_curve")
    st.plotly_chart(R.compare_curves(runs, key, best), key="curves")
    st.caption("★ marks each run's best epoch (fitness 0.1·mAP50 + 0.9·mAP50-95, the epoch best.pt was saved at).")

    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(R.tradeoff_figure([by_label[lb] for lb in picked]), key="tradeoff")
        missing = [lb for lb in picked if by_label[lb].latency_ms is None or by_label[lb].best_map is None]
        if missing:
            st.caption(f"Not in the scatter (no final evaluation with a latency yet): {', '.join(missing)}")
    with right:
        st.markdown("**Best epochs**")
        st.dataframe(pd.DataFrame(R.best_epochs(runs)), hide_index=True, width="stretch", key="best_epochs")

    metric = st.radio("Per-class AP at each run's best epoch", ["AP50-95", "AP50"], horizontal=True, key="pc_metric")
    table = R.per_class_table(runs, metric)
    if not table:
        st.info("No per-class AP in these runs' results.csv yet.")
    else:
        df = pd.DataFrame(table).set_index("class")
        numeric = [c for c in df.columns if c != "best run"]
        df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
        styled = df.style.highlight_max(subset=numeric, axis=1, color="#b2f2bb").format(precision=3, na_rep="–")
        st.dataframe(styled, width="stretch", key="per_class_table")


def _study_signature(folder: str) -> tuple[int, ...]:
    """study.json's mtime and its runs' status.json mtimes: what a study's view depends on."""
    root = Path(folder)
    sig = []
    for path in [root / sv.STUDY_FILE, *sorted(root.glob("runs/*/status.json"))]:
        try:
            sig.append(path.stat().st_mtime_ns)
        except OSError:
            sig.append(0)
    return tuple(sig)


@st.cache_data(max_entries=32, show_spinner="reading the study")
def _open_study(folder: str, sig: tuple[int, ...]) -> sv.StudyView:
    return sv.open_study(ctx.workspace, folder)


def studies_section() -> None:
    found = sv.study_choices(ctx.workspace, ctx.extra_runs)
    labels = {ident: label for label, ident in found}
    left, right = st.columns([2, 3])
    with left:
        picked = st.selectbox(
            "Study", list(labels), format_func=labels.get, index=0 if labels else None, key="study_pick",
            placeholder="no study found", help="study folders under the workspace's studies/ and runs/ folders",
        )  # fmt: skip
    with right:
        typed = st.text_input(
            "or a study folder", key="study_path", placeholder="folder holding study.json (yolov7-studio study ...)"
        )
    st.button("Refresh", key="study_refresh", help="read the study again (runs in progress move on)")
    ident = typed.strip() or picked
    if not ident:
        st.info(
            "No study yet. Run `yolov7-studio study assignment --data PATH --out DIR` (or `study scaling`) with DIR "
            f"under {ctx.workspace.root / 'studies'} or a runs folder, or type the folder's path."
        )
        return
    try:
        folder = sv.resolve(ctx.workspace, ident)
        view = _open_study(str(folder), _study_signature(str(folder)))
    except sv.StudyError as exc:
        st.warning(str(exc))
        return
    st.markdown(view.summary)
    for note in view.notes:
        st.caption(note)
    st.plotly_chart(view.figure, key="study_chart")
    tables, picture = st.columns([3, 2]) if view.image is not None else (st.container(), None)
    with tables:
        st.dataframe(pd.DataFrame(view.rows, columns=view.headers), hide_index=True, width="stretch", key="study_table")
        if view.run_rows:
            st.markdown("**Runs**")
            st.dataframe(
                pd.DataFrame(view.run_rows, columns=sv.RUN_HEADERS), hide_index=True, width="stretch", key="study_runs"
            )
    if picture is not None:
        with picture:
            st.image(str(view.image), caption="lead and auxiliary objectness per condition (same image)")


def fiftyone_section() -> None:
    if not fol.available():
        st.info(fol.INSTALL_HINT)
        return
    ws = ctx.workspace
    datasets = {e.id: e.label for e in ws.list_datasets()}
    checkpoints = {e.id: e.label for e in ws.list_checkpoints()}
    c1, c2, c3 = st.columns([2, 1, 3])
    with c1:
        dataset = st.selectbox("Dataset", list(datasets), format_func=datasets.get, key="fo_dataset")
    with c2:
        split = st.selectbox("Split", ["test", "val", "train", "all"], key="fo_split")
    with c3:
        picked = st.multiselect(
            "Checkpoints", list(checkpoints), default=[k for k in ("demo",) if k in checkpoints],
            format_func=checkpoints.get, key="fo_checkpoints",
        )  # fmt: skip
    name = fol.dataset_name(dataset or "demo")
    running = [a for a in fol.status(ws, name) if a["alive"] and a.get("url")]
    b1, b2, _ = st.columns([1, 1, 4])
    if b1.button("Open in FiftyOne", type="primary", key="fo_open", disabled=not picked):
        bar = st.progress(0.0, text="starting yolov7-studio fiftyone")
        try:
            result = fol.open_from_workspace(
                ws, dataset, picked, split, progress=lambda f, msg: bar.progress(min(1.0, f), text=msg[-150:])
            )
        except fol.LaunchError as exc:
            bar.empty()
            st.error(str(exc).replace("\n", "  \n"))
            return
        bar.empty()
        running = [result]
        st.success(f"FiftyOne App: {result['url']}" + (" (already running)" if result.get("reused") else ""))
    if running and b2.button("Stop FiftyOne", key="fo_stop"):
        fol.stop_app(ws, name)
        st.info(f"FiftyOne App for {name} stopped.")
        return
    if running:
        st.link_button(f"Open the App ({running[0]['url']})", running[0]["url"])
    st.caption(
        "Every image of the split with its ground truth, each checkpoint's predictions, their COCO evaluation, "
        "likely label errors and YOLOv7's assignment view, in the FiftyOne App (127.0.0.1; first opening: a minute "
        "or more)."
    )


runs_tab, studies_tab, fiftyone_tab = st.tabs(["Runs", "Studies", "Open in FiftyOne"])
with runs_tab:
    runs_section()
with studies_tab:
    studies_section()
with fiftyone_tab:
    fiftyone_section()
