"""Runs: every run of the workspace (and --runs folders) in one table; the picked run's live page."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import cached
from app.dashboard.context import get_context
from app.jobs import ACTIVE_STATES, JobError
from app.services import dashboard_runs as R
from app.services import training as T
from core.train import RunDir

REFRESH_S = 2.0

ctx = get_context()
st.title("Training runs")
refs, summaries, problems = cached.runs(ctx)
for p in problems:
    st.warning(p)
if not refs:
    st.info(f"No runs yet in {ctx.workspace.runs_dir}. Start one on the Launch page (or `yolov7-studio train`).")
    st.stop()
live = cached.states(ctx, refs)
# live runs first, then the newest
summaries = sorted(summaries, key=lambda s: (live[s.key] in ACTIVE_STATES, s.started or 0.0), reverse=True)
table = pd.DataFrame([R.summary_row(s, live[s.key]) for s in summaries])
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "best mAP50": st.column_config.ProgressColumn(format="%.3f", min_value=0.0, max_value=1.0),
        "best mAP50-95": st.column_config.ProgressColumn(format="%.3f", min_value=0.0, max_value=1.0),
    },
    key="runs_table",
)

labels = [s.label for s in summaries]
by_label = {s.label: s for s in summaries}
ref_by_key = {r.key: r for r in refs}
wanted = st.query_params.get("run")
active = [s.label for s in summaries if live[s.key] in ACTIVE_STATES]
newest = max(summaries, key=lambda s: s.started or 0).label
default = wanted if wanted in by_label else (active[0] if active else newest)
pick = st.selectbox("Run", labels, index=labels.index(default), key="run_pick")
st.query_params["run"] = pick
summary = by_label[pick]
ref = ref_by_key[summary.key]
interval = REFRESH_S if live[summary.key] in ACTIVE_STATES else None


@st.fragment(run_every=interval)
def run_page() -> None:
    state = R.run_state(ref, ctx.jobs)
    if interval is not None and state not in ACTIVE_STATES:
        st.rerun()  # the run just ended: redraw the whole page (the table) and stop polling
    d = cached.detail(ref.key)
    for p in d.problems:
        st.warning(f"{ref.label}: {p}")
    latest = R.latest_values(d.rows)
    epochs = d.status.get("epochs") or summary.epochs
    c = st.columns([1, 1, 1, 1, 1])
    c[0].metric("state", state)
    c[1].metric("epoch", f"{int(latest['epoch'] or 0)}/{epochs or '?'}")
    c[2].metric("mAP50 (last evaluation)", "–" if latest["mAP50"] is None else f"{latest['mAP50']:.4f}")
    c[3].metric("mAP50-95 (last evaluation)", "–" if latest["mAP50-95"] is None else f"{latest['mAP50-95']:.4f}")
    with c[4]:
        if state in ACTIVE_STATES and st.button("Stop", type="primary", key="stop_run"):
            try:
                if ref.in_workspace:
                    out = ctx.jobs.stop(ref.name)
                else:  # a run outside the workspace: the run directory's own stop request
                    RunDir(ref.key).request_stop("stop requested from the dashboard")
                    out = {"message": "stop requested (STOP file written)"}
                st.toast(f"{ref.label}: {out.get('message') or 'stop requested'}")
            except JobError as exc:
                st.error(str(exc))
    if d.status.get("message") and state not in ("running",):
        st.caption(f"status: {d.status['message']}")
    curves, evals, config, log, conv = st.tabs(["Curves", "PR / confusion", "Config", "Log", "Objectness"])
    with curves:
        st.plotly_chart(T.losses_figure(d.rows, d.status.get("losses") if state == "running" else None), key="losses")
        left, right = st.columns(2)
        left.plotly_chart(T.map_figure(d.rows), key="map")
        right.plotly_chart(R.lr_figure(d.rows), key="lr")
        st.plotly_chart(T.per_class_figure(d.rows, d.status.get("metrics")), key="per_class")
    with evals:
        if not d.images:
            st.info("The PR curves and the confusion matrix are drawn at the end of the run (plots/*.png).")
        for k, path in d.images.items():
            st.image(str(path), caption=R.PLOT_IMAGES[k])
    with config:
        if not d.config:
            st.info("config.json is missing: the run has not started, or was not made by yolov7-studio.")
        else:
            st.markdown("**Hyperparameters**")
            st.json(d.config.get("hyp") or {}, expanded=False)
            st.markdown("**Resolved configuration**")
            st.json({k: v for k, v in d.config.items() if k != "hyp"}, expanded=False)
    with log:
        st.code(d.log_tail or "(no log yet)", language=None)
    with conv:
        if not d.snapshot_epochs:
            st.info("No objectness snapshots: train with `--objectness-every N` to watch objectness converge.")
        else:
            try:
                from core.explore import convergence_figure

                st.plotly_chart(convergence_figure(ref.key), key="convergence")
            except Exception as exc:  # noqa: BLE001 - torn snapshot files are a message
                st.warning(f"{ref.label}: cannot read the objectness snapshots ({exc})")


st.subheader(f"{pick}")
run_page()
