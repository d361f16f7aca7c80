"""The Streamlit dashboard: datasets, training runs (live), comparisons and assignment statistics.

``yolov7-studio dashboard`` runs ``streamlit run app/dashboard/app.py``; the pages live in ``app/dashboard/views``
(not ``pages/``, which Streamlit would list by itself)
and draw what :mod:`app.services.dashboard_runs` and the studio's services compute.
"""
