"""Entry script of the Streamlit dashboard: ``streamlit run app/dashboard/app.py -- --workspace DIR --runs DIR``.

(``yolov7-studio dashboard`` runs this.) Only the navigation lives here; each page is a small script in
``views/`` and the work is done by plain functions in ``app.services``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# streamlit puts this script's folder first on sys.path, where this very file would shadow the ``app`` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if not hasattr(sys.modules.get("app"), "__path__"):  # this file, imported as ``app`` through the old sys.path
    sys.modules.pop("app", None)

import streamlit as st  # noqa: E402

from app.dashboard.context import get_context  # noqa: E402

st.set_page_config(page_title="YOLOv7 studio dashboard", page_icon=":material/monitoring:", layout="wide")
PAGES = [
    st.Page(str(HERE / "views" / "runs.py"), title="Runs", icon=":material/monitoring:", default=True),
    st.Page(str(HERE / "views" / "compare.py"), title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page(str(HERE / "views" / "datasets.py"), title="Datasets", icon=":material/dataset:", url_path="datasets"),
    st.Page(
        str(HERE / "views" / "assignments.py"), title="Assignments", icon=":material/target:", url_path="assignments"
    ),
    st.Page(str(HERE / "views" / "launch.py"), title="Launch", icon=":material/rocket_launch:", url_path="launch"),
]
page = st.navigation(PAGES)
ctx = get_context()
st.sidebar.caption(f"workspace `{ctx.workspace.root}`")
for note in ctx.notes:
    st.sidebar.warning(note)
page.run()
