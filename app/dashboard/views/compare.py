"""Compare: overlaid curves of the picked runs, accuracy vs latency vs size, per-class AP, best epochs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.dashboard import cached
from app.dashboard.context import get_context
from app.services import dashboard_runs as R

ctx = get_context()
st.title("Compare runs")
refs, summaries, problems = cached.runs(ctx)
for p in problems:
    st.warning(p)
with_results = [s for s in summaries if s.epoch or s.best_map is not None]
if not with_results:
    st.info("No run has finished an epoch yet: nothing to compare.")
    st.stop()
labels = [s.label for s in with_results]
ranked = sorted(with_results, key=lambda s: (s.best_map is not None, s.best_map or 0.0), reverse=True)
picked = st.multiselect("Runs", labels, default=[s.label for s in ranked[:4]], key="compare_runs")
if not picked:
    st.info("Pick one or more runs.")
    st.stop()
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
