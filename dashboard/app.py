"""mmgenre dashboard: ``streamlit run dashboard/app.py`` (or ``python -m dashboard.serve``).

Pages: Dataset, Compare, Movie (explanations and error browsing), Predict (the Gradio app).
Settings (data and checkpoints folders) live in the sidebar; defaults come from
``$MMGENRE_DATA`` and ``$MMGENRE_CHECKPOINTS``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts only this folder on sys.path; the pages import `dashboard` and `mmgenre`.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from dashboard import loaders  # noqa: E402

PAGES = Path(__file__).resolve().parent / "app_pages"

st.set_page_config(page_title="mmgenre", layout="wide")
page = st.navigation([
    st.Page(PAGES / "dataset.py", title="Dataset", url_path="dataset", default=True),
    st.Page(PAGES / "compare.py", title="Compare models", url_path="compare"),
    st.Page(PAGES / "movie.py", title="Movie explorer", url_path="movie"),
    st.Page(PAGES / "predict.py", title="Predict", url_path="predict"),
])
loaders.sidebar()
page.run()
